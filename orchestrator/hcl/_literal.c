/* The line reader for plain-literal tfvars (orchestrator/hcl/literal_lines.py), compiled.
 *
 * Reading 3,600 realistic files takes the Python line reader ~8 s on a slow 2-core host; this takes a
 * fraction of that. It accepts a subset of what the Python line reader accepts and returns exactly what
 * it returns: (name, start, end, value, []) per attribute, offsets in characters, plus the set of every
 * name and key it read (the caller decides whether one names a file). Anything else (an invalid escape,
 * a template, a repeated or keyword key, a lone carriage return, a character outside ASCII where syntax
 * is expected, nesting deeper than MAX_DEPTH, ...) makes it return None and the Python readers decide, so
 * every refusal keeps its words and its line. tests/unit/test_literal_c.py checks that it agrees with
 * the full reader or steps aside.
 *
 * The input is untrusted: every read goes through CH(), which is bounds-checked, and every write goes to
 * a buffer sized from the span being decoded.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MAX_DEPTH 64

typedef struct {
    PyObject *text;
    int kind;
    const void *data;
    Py_ssize_t n;
    PyObject *number; /* callable(text) -> value, for numbers that are not plain digits */
    PyObject *keys;   /* set of every name and object key read */
    int fallback;     /* outside the subset: return None */
    int depth;
} R;

static inline Py_UCS4 CH(const R *r, Py_ssize_t i) {
    return (i >= 0 && i < r->n) ? PyUnicode_READ(r->kind, r->data, i) : 0;
}

static inline int is_alpha(Py_UCS4 c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
static inline int is_digit(Py_UCS4 c) { return c >= '0' && c <= '9'; }
static inline int is_ident(Py_UCS4 c) { return is_alpha(c) || is_digit(c) || c == '-'; }
static inline int is_ws(Py_UCS4 c) { return c == ' ' || c == '\t'; }

static PyObject *fallback(R *r) {
    r->fallback = 1;
    return NULL;
}

static Py_ssize_t skip_ws(const R *r, Py_ssize_t i, Py_ssize_t end) {
    while (i < end && is_ws(CH(r, i))) i++;
    return i;
}

/* `[ \t]*(,)?[ \t]*(#...|//...)?` from i reaching `end`: 1 (comma set when there is one), else 0. */
static int tail(const R *r, Py_ssize_t i, Py_ssize_t end, int *comma) {
    *comma = 0;
    i = skip_ws(r, i, end);
    if (i < end && CH(r, i) == ',') {
        *comma = 1;
        i = skip_ws(r, i + 1, end);
    }
    if (i >= end || CH(r, i) == '#') return 1;
    return i + 1 < end && CH(r, i) == '/' && CH(r, i + 1) == '/';
}

/* `[A-Za-z_][A-Za-z0-9_-]*` at i: its end, or i when there is none. */
static Py_ssize_t ident_end(const R *r, Py_ssize_t i, Py_ssize_t end) {
    if (i >= end || !is_alpha(CH(r, i))) return i;
    i++;
    while (i < end && is_ident(CH(r, i))) i++;
    return i;
}

static int ident_is(const R *r, Py_ssize_t i, Py_ssize_t j, const char *word) {
    Py_ssize_t k = 0;
    for (; i + k < j; k++) {
        if (word[k] == '\0' || CH(r, i + k) != (Py_UCS4)(unsigned char)word[k]) return 0;
    }
    return word[k] == '\0';
}

static int hex(Py_UCS4 c) {
    if (c >= '0' && c <= '9') return (int)(c - '0');
    if (c >= 'a' && c <= 'f') return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return (int)(c - 'A' + 10);
    return -1;
}

/* `ss{` -> `s{` throughout buf[0:len] (left to right, as str.replace), in place: the new length. */
static Py_ssize_t unescape_templates(Py_UCS4 *buf, Py_ssize_t len, Py_UCS4 sigil) {
    Py_ssize_t w = 0;
    for (Py_ssize_t k = 0; k < len;) {
        if (buf[k] == sigil && k + 2 < len && buf[k + 1] == sigil && buf[k + 2] == '{') {
            buf[w++] = sigil;
            buf[w++] = '{';
            k += 3;
        } else {
            buf[w++] = buf[k++];
        }
    }
    return w;
}

/* The value of the quoted string (no template) whose opening quote is at i, on one line ending at
 * `line_end`; *end is past its closing quote. NULL with r->fallback for anything else. */
static PyObject *string_at(R *r, Py_ssize_t i, Py_ssize_t line_end, Py_ssize_t *end) {
    Py_ssize_t j = i + 1;
    int plain = 1;
    for (;;) {
        if (j >= line_end) return fallback(r);
        Py_UCS4 c = CH(r, j);
        if (c == '"') break;
        if (c == '\\') {
            Py_UCS4 e = CH(r, j + 1);
            int width = e == 'u' ? 4 : e == 'U' ? 8 : 0;
            if (width) {
                Py_UCS4 code = 0;
                for (int h = 0; h < width; h++) {
                    int d = hex(CH(r, j + 2 + h));
                    if (j + 2 + h >= line_end || d < 0) return fallback(r);
                    code = code * 16 + (Py_UCS4)d;
                }
                if (code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return fallback(r); /* Python words it */
                plain = 0;
                j += 2 + width;
                continue;
            }
            if (j + 1 >= line_end || !(e == '"' || e == '\\' || e == 'n' || e == 'r' || e == 't')) return fallback(r);
            plain = 0;
            j += 2;
            continue;
        }
        if (c == '\r' || c == '\n') return fallback(r);
        if (c == '$' || c == '%') {
            Py_UCS4 d = CH(r, j + 1);
            if (j + 1 < line_end && d == '{') return fallback(r); /* a template */
            if (j + 1 < line_end && d == c) {
                if (!(j + 2 < line_end && CH(r, j + 2) == '{')) return fallback(r); /* `$$x`: Python decides */
                plain = 0;
                j += 3;
                continue;
            }
        }
        j++;
    }
    *end = j + 1;
    if (plain) return PyUnicode_Substring(r->text, i + 1, j);
    /* As the Python reader: escapes first, then `$${` and `%%{` (each pass left to right) in what they
     * gave. The decoded text is never longer than the raw. */
    Py_ssize_t cap = j - (i + 1);
    Py_UCS4 *buf = PyMem_New(Py_UCS4, cap > 0 ? cap : 1);
    if (buf == NULL) return PyErr_NoMemory();
    Py_ssize_t o = 0;
    for (Py_ssize_t k = i + 1; k < j;) {
        Py_UCS4 c = CH(r, k);
        if (c == '\\') {
            Py_UCS4 e = CH(r, k + 1);
            int width = e == 'u' ? 4 : e == 'U' ? 8 : 0;
            if (width) {
                Py_UCS4 code = 0;
                for (int h = 0; h < width; h++) code = code * 16 + (Py_UCS4)hex(CH(r, k + 2 + h));
                buf[o++] = code;
                k += 2 + width;
                continue;
            }
            buf[o++] = e == 'n' ? '\n' : e == 'r' ? '\r' : e == 't' ? '\t' : e;
            k += 2;
        } else {
            buf[o++] = c;
            k++;
        }
    }
    o = unescape_templates(buf, o, '$');
    o = unescape_templates(buf, o, '%');
    PyObject *s = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, buf, o);
    PyMem_Free(buf);
    return s;
}

/* A name or key: an identifier or a quoted string. `quoted` tells which. */
static PyObject *key_at(R *r, Py_ssize_t i, Py_ssize_t line_end, Py_ssize_t *end, int *quoted) {
    if (CH(r, i) == '"') {
        *quoted = 1;
        return string_at(r, i, line_end, end);
    }
    *quoted = 0;
    Py_ssize_t j = ident_end(r, i, line_end);
    if (j == i) return fallback(r);
    *end = j;
    return PyUnicode_Substring(r->text, i, j);
}

/* `-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?` not followed by a word character or a dot. */
static PyObject *number_at(R *r, Py_ssize_t i, Py_ssize_t line_end, Py_ssize_t *end) {
    Py_ssize_t j = i;
    int digits_only = 1; /* an optional minus and digits: int() of the text, as Decimal's would be */
    if (CH(r, j) == '-') j++;
    if (j >= line_end || !is_digit(CH(r, j))) return fallback(r);
    while (j < line_end && is_digit(CH(r, j))) j++;
    if (j + 1 < line_end && CH(r, j) == '.' && is_digit(CH(r, j + 1))) {
        digits_only = 0;
        j++;
        while (j < line_end && is_digit(CH(r, j))) j++;
    }
    if (j < line_end && (CH(r, j) == 'e' || CH(r, j) == 'E')) {
        Py_ssize_t k = j + 1;
        if (k < line_end && (CH(r, k) == '+' || CH(r, k) == '-')) k++;
        if (k < line_end && is_digit(CH(r, k))) {
            digits_only = 0;
            while (k < line_end && is_digit(CH(r, k))) k++;
            j = k;
        }
    }
    if (j < line_end) {
        Py_UCS4 c = CH(r, j);
        if (is_ident(c) && c != '-') return fallback(r);
        if (c == '.' || c >= 0x80) return fallback(r);
    }
    *end = j;
    PyObject *s = PyUnicode_Substring(r->text, i, j);
    if (s == NULL) return NULL;
    /* int() of a short integer; anything else (fractions, exponents, thousands of digits) as the Python
     * readers convert it, through `number`. */
    PyObject *v = digits_only && j - i <= 4000 ? PyLong_FromUnicodeObject(s, 10) : PyObject_CallOneArg(r->number, s);
    Py_DECREF(s);
    if (v == NULL && (PyErr_ExceptionMatches(PyExc_ValueError) || PyErr_ExceptionMatches(PyExc_ArithmeticError))) {
        PyErr_Clear(); /* the Python reader says what happens */
        return fallback(r);
    }
    return v;
}

/* A scalar at i: string, number, true, false or null. */
static PyObject *scalar_at(R *r, Py_ssize_t i, Py_ssize_t line_end, Py_ssize_t *end) {
    Py_UCS4 c = CH(r, i);
    if (c == '"') return string_at(r, i, line_end, end);
    if (c == '-' || is_digit(c)) return number_at(r, i, line_end, end);
    Py_ssize_t j = ident_end(r, i, line_end);
    if (j == i || (j < line_end && CH(r, j) >= 0x80)) return fallback(r);
    *end = j;
    if (ident_is(r, i, j, "true")) Py_RETURN_TRUE;
    if (ident_is(r, i, j, "false")) Py_RETURN_FALSE;
    if (ident_is(r, i, j, "null")) Py_RETURN_NONE;
    return fallback(r);
}

/* `for` opens a for-expression; true, false and null are values: as names, the Python readers decide. */
static int keyword(PyObject *key) {
    static const char *const words[] = {"for", "true", "false", "null"};
    for (int w = 0; w < 4; w++) {
        if (PyUnicode_CompareWithASCIIString(key, words[w]) == 0) return 1;
    }
    return 0;
}

/* Store `value` (a new reference, consumed) under `key` in a dict, refusing a repeated or keyword key. */
static int put(R *r, PyObject *dict, PyObject *key, int quoted, PyObject *value) {
    if (!quoted && keyword(key)) {
        Py_DECREF(value);
        r->fallback = 1;
        return -1;
    }
    int has = PyDict_Contains(dict, key);
    if (has != 0) {
        Py_DECREF(value);
        if (has > 0) r->fallback = 1;
        return -1;
    }
    if (PySet_Add(r->keys, key) < 0 || PyDict_SetItem(dict, key, value) < 0) {
        Py_DECREF(value);
        return -1;
    }
    Py_DECREF(value);
    return 0;
}

static PyObject *inline_value(R *r, Py_ssize_t *i, Py_ssize_t line_end);

/* `{ k = v, ... }` or `[ v, ... ]` on one line, its opener at *i; *i is left past its closer. */
static PyObject *inline_container(R *r, Py_ssize_t *i, Py_ssize_t line_end) {
    if (++r->depth > MAX_DEPTH) return fallback(r);
    int object = CH(r, *i) == '{';
    Py_UCS4 closer = object ? '}' : ']';
    PyObject *out = object ? PyDict_New() : PyList_New(0);
    if (out == NULL) return NULL;
    Py_ssize_t j = *i + 1;
    for (;;) {
        j = skip_ws(r, j, line_end);
        if (j >= line_end) goto fail_fallback;
        if (CH(r, j) == closer) {
            j++;
            break;
        }
        if (object) {
            Py_ssize_t kend;
            int quoted;
            PyObject *key = key_at(r, j, line_end, &kend, &quoted);
            if (key == NULL) goto fail;
            j = skip_ws(r, kend, line_end);
            if (!(j < line_end && (CH(r, j) == '=' || CH(r, j) == ':'))) {
                Py_DECREF(key);
                goto fail_fallback;
            }
            j = skip_ws(r, j + 1, line_end);
            PyObject *v = inline_value(r, &j, line_end);
            if (v == NULL) {
                Py_DECREF(key);
                goto fail;
            }
            int bad = put(r, out, key, quoted, v);
            Py_DECREF(key);
            if (bad) goto fail;
        } else {
            PyObject *v = inline_value(r, &j, line_end);
            if (v == NULL) goto fail;
            int bad = PyList_Append(out, v);
            Py_DECREF(v);
            if (bad) goto fail;
        }
        j = skip_ws(r, j, line_end);
        if (j < line_end && CH(r, j) == closer) {
            j++;
            break;
        }
        if (!(j < line_end && CH(r, j) == ',')) goto fail_fallback;
        j++;
    }
    *i = j;
    r->depth--;
    return out;
fail_fallback:
    r->fallback = 1;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyObject *inline_value(R *r, Py_ssize_t *i, Py_ssize_t line_end) {
    Py_UCS4 c = CH(r, *i);
    if (*i < line_end && (c == '{' || c == '[')) return inline_container(r, i, line_end);
    Py_ssize_t end;
    PyObject *v = scalar_at(r, *i, line_end, &end);
    if (v != NULL) *i = end;
    return v;
}

/* The heredoc whose `<<` is at i: its value; *end is the newline that ends its closing line. */
static PyObject *heredoc_at(R *r, Py_ssize_t i, Py_ssize_t *end) {
    Py_ssize_t j = i + 2;
    int flush = CH(r, j) == '-';
    if (flush) j++;
    Py_ssize_t m0 = j, m1 = ident_end(r, j, r->n);
    if (m1 == m0) return fallback(r);
    Py_ssize_t body = m1;
    if (CH(r, body) == '\r') body++;
    if (CH(r, body) != '\n' || body >= r->n) return fallback(r);
    body++;
    Py_ssize_t mlen = m1 - m0;
    /* The closing line: the marker with only whitespace around it (Terraform trims Unicode spaces). */
    Py_ssize_t close = -1, close_nl = -1;
    for (Py_ssize_t line = body; line < r->n;) {
        Py_ssize_t k = line;
        while (k < r->n && CH(r, k) != '\n' && Py_UNICODE_ISSPACE(CH(r, k))) k++;
        int same = k + mlen <= r->n;
        for (Py_ssize_t q = 0; same && q < mlen; q++) same = CH(r, k + q) == CH(r, m0 + q);
        if (same) {
            Py_ssize_t e = k + mlen;
            while (e < r->n && CH(r, e) != '\n' && Py_UNICODE_ISSPACE(CH(r, e))) e++;
            if (e < r->n && CH(r, e) == '\n') {
                close = line;
                close_nl = e;
                break;
            }
        }
        while (k < r->n && CH(r, k) != '\n') k++;
        line = k + 1;
    }
    if (close < 0) return fallback(r); /* unterminated: the Python reader reports it */
    /* The body with `$${` and `%%{` as `${` and `%{`; a template makes it the Python reader's. */
    Py_ssize_t cap = close - body;
    Py_UCS4 *buf = PyMem_New(Py_UCS4, cap > 0 ? cap : 1);
    if (buf == NULL) return PyErr_NoMemory();
    Py_ssize_t o = 0;
    for (Py_ssize_t k = body; k < close;) {
        Py_UCS4 c = CH(r, k);
        if ((c == '$' || c == '%') && k + 1 < close) {
            if (CH(r, k + 1) == c && k + 2 < close && CH(r, k + 2) == '{') {
                buf[o++] = c;
                buf[o++] = '{';
                k += 3;
                continue;
            }
            if (CH(r, k + 1) == '{') {
                PyMem_Free(buf);
                return fallback(r);
            }
        }
        buf[o++] = c;
        k++;
    }
    Py_ssize_t len = o;
    if (flush) {
        /* Remove from every line the smallest indentation of the lines that are not blank. */
        Py_ssize_t smallest = -1;
        for (Py_ssize_t s = 0; s < len;) {
            Py_ssize_t e = s, ind;
            while (e < len && buf[e] != '\n') e++;
            Py_ssize_t stop = e < len ? e + 1 : e; /* the line with its newline */
            for (ind = s; ind < stop && Py_UNICODE_ISSPACE(buf[ind]); ind++) {
            }
            int blank = ind == stop && stop > s && buf[stop - 1] == '\n';
            if (!blank && (smallest < 0 || ind - s < smallest)) smallest = ind - s;
            s = stop;
        }
        if (smallest > 0) {
            Py_ssize_t w = 0;
            for (Py_ssize_t s = 0; s < len;) {
                Py_ssize_t e = s, ind;
                while (e < len && buf[e] != '\n') e++;
                Py_ssize_t stop = e < len ? e + 1 : e;
                for (ind = s; ind < stop && Py_UNICODE_ISSPACE(buf[ind]); ind++) {
                }
                int blank = ind == stop && stop > s && buf[stop - 1] == '\n';
                Py_ssize_t from = blank ? s : s + smallest;
                for (Py_ssize_t q = from; q < stop; q++) buf[w++] = buf[q];
                s = stop;
            }
            len = w;
        }
    }
    PyObject *v = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, buf, len);
    PyMem_Free(buf);
    *end = close_nl;
    return v;
}

typedef struct {
    PyObject *container; /* borrowed: its parent (or the attribute being read) owns it */
    Py_UCS4 closer;
    int needs_close;
} Frame;

/* Read the whole file: a list of (name, start, end, value, []), or NULL (r->fallback: outside the subset). */
static PyObject *read_file(R *r) {
    Frame stack[MAX_DEPTH];
    int depth = 0;
    PyObject *out = PyList_New(0), *names = PySet_New(NULL);
    PyObject *top_name = NULL, *top_value = NULL;
    Py_ssize_t top_start = 0;
    if (out == NULL || names == NULL) goto fail;
    for (Py_ssize_t k = 0; k < r->n; k++) {
        if (CH(r, k) == '\r' && CH(r, k + 1) != '\n') goto fail_fallback; /* a carriage return not ending a line */
    }
    Py_ssize_t pos = 0;
    while (pos < r->n) {
        Py_ssize_t eol = pos;
        while (eol < r->n && CH(r, eol) != '\n') eol++;
        Py_ssize_t line_end = (eol > pos && CH(r, eol - 1) == '\r') ? eol - 1 : eol;
        Py_ssize_t next = eol + 1;
        Py_ssize_t i = skip_ws(r, pos, line_end);
        Frame *frame = depth ? &stack[depth - 1] : NULL;
        int in_list = frame != NULL && frame->closer == ']';
        int comma;
        if (i == line_end || CH(r, i) == '#' || (CH(r, i) == '/' && CH(r, i + 1) == '/' && i + 1 < line_end)) {
            pos = next; /* blank, or a comment */
            continue;
        }
        Py_UCS4 c = CH(r, i);
        if (c == '}' || c == ']') {
            if (frame == NULL || c != frame->closer || !tail(r, i + 1, line_end, &comma)) goto fail_fallback;
            depth--;
            r->depth--;
            if (depth == 0) {
                if (comma) goto fail_fallback;
                PyObject *t = Py_BuildValue("(OnnO[])", top_name, top_start, i + 1, top_value);
                if (t == NULL || PyList_Append(out, t) < 0) {
                    Py_XDECREF(t);
                    goto fail;
                }
                Py_DECREF(t);
                Py_CLEAR(top_name);
                Py_CLEAR(top_value);
            } else if (stack[depth - 1].closer == ']' && !comma) {
                stack[depth - 1].needs_close = 1;
            }
            pos = next;
            continue;
        }
        /* A name (at the top, in an object) or none (in a list). */
        PyObject *key = NULL;
        int quoted = 0;
        if (!in_list) {
            Py_ssize_t kend;
            key = key_at(r, i, line_end, &kend, &quoted);
            if (key == NULL) goto fail;
            Py_ssize_t s = skip_ws(r, kend, line_end);
            Py_UCS4 sep = CH(r, s);
            if (!(s < line_end && (sep == '=' || (sep == ':' && frame != NULL)))) {
                Py_DECREF(key);
                goto fail_fallback;
            }
            if (frame == NULL) {
                int seen = quoted || keyword(key) ? 1 : PySet_Contains(names, key);
                if (seen != 0 || PySet_Add(names, key) < 0 || PySet_Add(r->keys, key) < 0) {
                    Py_DECREF(key);
                    if (seen >= 0) r->fallback = 1; /* quoted or repeated: Terraform's words */
                    goto fail;
                }
                top_start = i;
            }
            i = skip_ws(r, s + 1, line_end);
        } else {
            /* `"a": 1` in a list: a name where none belongs. */
            if (c == '"') {
                Py_ssize_t send;
                PyObject *probe = string_at(r, i, line_end, &send);
                if (probe == NULL) goto fail;
                Py_DECREF(probe);
                Py_ssize_t s = skip_ws(r, send, line_end);
                if (s < line_end && (CH(r, s) == '=' || CH(r, s) == ':')) goto fail_fallback;
            } else if (is_alpha(c)) {
                Py_ssize_t s = skip_ws(r, ident_end(r, i, line_end), line_end);
                if (s < line_end && (CH(r, s) == '=' || CH(r, s) == ':')) goto fail_fallback;
            }
        }
        if (frame != NULL && frame->needs_close) {
            Py_XDECREF(key);
            goto fail_fallback; /* Terraform: "Missing item separator" */
        }
        c = CH(r, i);
        PyObject *value = NULL;
        Py_ssize_t vend = i;
        int opens = 0;
        if (i < line_end && (c == '{' || c == '[')) {
            if (tail(r, i + 1, line_end, &comma)) {
                if (comma || depth >= MAX_DEPTH) {
                    Py_XDECREF(key);
                    goto fail_fallback;
                }
                value = c == '{' ? PyDict_New() : PyList_New(0);
                opens = 1;
                vend = line_end;
            } else {
                vend = i;
                value = inline_container(r, &vend, line_end);
                if (value != NULL && !tail(r, vend, line_end, &comma)) {
                    Py_DECREF(value);
                    value = NULL;
                    r->fallback = 1;
                }
            }
        } else if (c == '<' && CH(r, i + 1) == '<' && i + 1 < line_end) {
            if (in_list) {
                Py_XDECREF(key);
                goto fail_fallback;
            }
            value = heredoc_at(r, i, &vend);
            comma = 0;
            if (value != NULL) next = vend + 1;
        } else {
            value = scalar_at(r, i, line_end, &vend);
            if (value != NULL && !tail(r, vend, line_end, &comma)) {
                Py_DECREF(value);
                value = NULL;
                r->fallback = 1;
            }
        }
        if (value == NULL) {
            Py_XDECREF(key);
            goto fail;
        }
        PyObject *container = value; /* borrowed once stored */
        if (frame == NULL) {
            if (comma) {
                Py_DECREF(key);
                Py_DECREF(value);
                goto fail_fallback; /* Terraform: "Unexpected comma after argument" */
            }
            if (opens) {
                top_name = key;
                top_value = value;
            } else {
                PyObject *t = Py_BuildValue("(NnnN[])", key, top_start, vend, value);
                if (t == NULL || PyList_Append(out, t) < 0) {
                    Py_XDECREF(t);
                    goto fail;
                }
                Py_DECREF(t);
            }
        } else if (key != NULL) {
            int bad = put(r, frame->container, key, quoted, value);
            Py_DECREF(key);
            if (bad) goto fail;
        } else {
            int bad = PyList_Append(frame->container, value);
            Py_DECREF(value);
            if (bad) goto fail;
            if (!opens && !comma) frame->needs_close = 1;
        }
        if (opens) {
            stack[depth].container = container;
            stack[depth].closer = c == '{' ? '}' : ']';
            stack[depth].needs_close = 0;
            depth++;
            r->depth++;
        }
        pos = next;
    }
    if (depth) goto fail_fallback; /* unclosed: the Python reader reports where */
    Py_DECREF(names);
    return out;
fail_fallback:
    r->fallback = 1;
fail:
    Py_XDECREF(out);
    Py_XDECREF(names);
    Py_XDECREF(top_name);
    Py_XDECREF(top_value);
    return NULL;
}

static PyObject *read_text(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *text, *number;
    if (!PyArg_ParseTuple(args, "UO:read", &text, &number)) return NULL;
    R r = {text, PyUnicode_KIND(text), PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text), number, NULL, 0, 0};
    r.keys = PySet_New(NULL);
    if (r.keys == NULL) return NULL;
    PyObject *attributes = read_file(&r);
    if (attributes == NULL) {
        Py_DECREF(r.keys);
        if (r.fallback && !PyErr_Occurred()) Py_RETURN_NONE;
        if (r.fallback) PyErr_Clear();
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(NN)", attributes, r.keys);
}

static PyMethodDef methods[] = {
    {"read", read_text, METH_VARARGS,
     "read(text, number) -> ([(name, start, end, value, [])...], keys) or None outside the literal subset"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_literal", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__literal(void) { return PyModule_Create(&module); }
