"""Variable definition files (`.tfvars`, `.tfvars.json`): what they set, where, and what Terraform will see.

tfo never converts a file's values for Terraform: a deployment's var file is cut from the original
text, attribute by attribute (`var_file`), so Terraform reads exactly what it would read from the
file itself. The values tfo evaluates here are for its own decisions (services, region, referenced
files, redaction). A file is refused where Terraform refuses it (a repeated name, variables or
function calls, bad escapes, blocks, ...) with the line of the problem.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import os
import re
import time
import types
from collections.abc import Collection, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import __version__
from orchestrator.config import FILE_KEYS
from orchestrator.errors import Problem
from orchestrator.hcl import HclError, Lines, parse_file
from orchestrator.hcl.json_syntax import JsonValue, parse_json_object
from orchestrator.hcl.literal_lines import read_literal_lines
from orchestrator.hcl.syntax import Expr, Literal, ObjectCons, TupleCons, number
from orchestrator.hcl.values import Unsupported, evaluate, plain, string_literals

compiled_reader: types.ModuleType | None
try:
    from orchestrator.hcl import _literal as compiled_reader
except ImportError:  # built without a C compiler (setup.py): the Python readers read everything
    compiled_reader = None

MAX_TFVARS_BYTES = 5 * 1024 * 1024
BOM = "\ufeff"


@dataclass(frozen=True)
class FileRef:
    """A string naming a local file, found under a key that says so (`*_file`, `*_files`)."""

    where: str  # e.g. "iam_roles.deployer.policy_file"
    value: str
    start: int  # the string literal's offsets in the source (quotes included)
    end: int


@dataclass(frozen=True)
class TfvarsAttribute:
    name: str
    line: int
    start: int  # HCL: `name = value` as written; JSON: the value
    end: int
    value: Any  # what tfo knows: the value, or (not `known`) the strings written in it
    known: bool = True
    file_refs: tuple[FileRef, ...] = ()


@dataclass(frozen=True)
class ParsedTfvars:
    path: str
    text: str  # the file's text without a byte-order mark
    syntax: str = "hcl"  # hcl | json
    attributes: tuple[TfvarsAttribute, ...] = ()
    problems: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = field(default=())

    @property
    def variables(self) -> dict[str, Any]:
        return {a.name: a.value for a in self.attributes}

    def var_file(self, names: Collection[str], paths: Mapping[str, str] | None = None) -> str:
        """The chosen variables as written, in file order, each file reference replaced by `paths[value]`."""
        chosen = [a for a in self.attributes if a.name in names]
        if self.syntax == "json":
            members = [f"  {json.dumps(a.name)}: {_rewritten(self.text, a, paths, json_string)}" for a in chosen]
            return "{\n" + ",\n".join(members) + "\n}\n"
        return "".join(_rewritten(self.text, a, paths, hcl_string) + "\n" for a in chosen)


def json_string(value: str) -> str:
    return json.dumps(value)


def hcl_string(value: str) -> str:
    """A quoted HCL string that evaluates to `value` (JSON escapes are HCL escapes; templates doubled;
    characters beyond ASCII as they are, since JSON would write some as surrogate pairs HCL refuses)."""
    return json.dumps(value, ensure_ascii=False).replace("${", "$${").replace("%{", "%%{")


def _rewritten(text: str, a: TfvarsAttribute, paths: Mapping[str, str] | None, quote: Any) -> str:
    source = text[a.start:a.end]
    if not paths:
        return source
    for ref in sorted(a.file_refs, key=lambda r: r.start, reverse=True):
        if ref.value in paths:
            source = source[: ref.start - a.start] + quote(paths[ref.value]) + source[ref.end - a.start:]
    return source


def read_text(path: Path | str, shown: str) -> str | Problem:
    """The file as text, or why it cannot be one."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return Problem(shown, f"cannot be read: {e.strerror}")
    if len(data) > MAX_TFVARS_BYTES:
        return Problem(shown, f"is {len(data)} bytes; the limit is {MAX_TFVARS_BYTES}")
    if b"\0" in data:
        return Problem(shown, "is binary (contains NUL bytes), not HCL text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return Problem(shown, f"is not UTF-8 text (byte {e.start})")
    return text


_PARSE_VERSION = "1"  # of what a cached reading holds; bump when the reading of a file changes


def parse_tfvars(path: Path, shown: str, file_keys: tuple[str, ...] = FILE_KEYS) -> ParsedTfvars:
    return _parse_file(path, shown, file_keys, None)


def _parse_file(path: Path | str, shown: str, file_keys: tuple[str, ...], readings: Readings | None) -> ParsedTfvars:
    text = read_text(path, shown)
    if isinstance(text, Problem):
        return ParsedTfvars(shown, "", problems=(text,))
    json_syntax = shown.endswith(".json")
    # Terraform skips a byte-order mark before HCL, and refuses one before JSON.
    text = text if json_syntax else text.removeprefix(BOM)
    if not json_syntax and (quick := _read_compiled(text, shown, file_keys)) is not None:
        return quick  # faster than fetching a cached reading: the cache is for the files it cannot read
    if readings is None:
        return parse_tfvars_text(text, shown, json_syntax, file_keys, compiled=False)
    key = f"{_PARSE_VERSION}:{__version__}:{json_syntax}:{','.join(file_keys)}:" + \
        hashlib.sha256(text.encode("utf-8")).hexdigest()
    raw = readings.get(key)
    if raw is None:
        raw = _to_json(parse_tfvars_text(text, shown, json_syntax, file_keys, compiled=False))
        readings.put(key, raw)
    return _from_json(raw, shown, text, json_syntax)


class TfvarsReader:
    """Reads tfvars files; with a cache directory, each reading is kept under the digest of the file's
    text (in one SQLite file), so an unchanged file, in any checkout on this host, is parsed once: a
    changed module selects deployments among thousands of tfvars files without parsing them again."""

    def __init__(self, file_keys: tuple[str, ...], cache_dir: Path | None = None) -> None:
        self.file_keys = file_keys
        self.readings = Readings(cache_dir / "tfvars-readings.sqlite3") if cache_dir is not None else None

    def read(self, path: Path | str, shown: str) -> ParsedTfvars:
        return _parse_file(path, shown, self.file_keys, self.readings)

    def close(self) -> None:
        if self.readings is not None:
            self.readings.flush()


class Readings:
    """Cached readings in one SQLite file: one query per file read, one transaction for what was new.
    Never fails for the cache's sake: a locked, full or corrupt cache costs the parse, nothing more."""

    KEEP_S = 30 * 24 * 3600  # a reading not written again for this long is dropped

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: Any = None
        self._new: dict[str, str] = {}
        self._broken = False

    def _open(self) -> Any:
        if self._db is None and not self._broken:
            import sqlite3

            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))  # readings hold values: owner only
                self._db = sqlite3.connect(self.path, timeout=5)
                self._db.execute("CREATE TABLE IF NOT EXISTS readings (key TEXT PRIMARY KEY, value TEXT, at REAL)")
            except (OSError, sqlite3.Error):
                self._broken = True
        return self._db

    def get(self, key: str) -> dict[str, Any] | None:
        db = self._open()
        if db is None:
            return None
        try:
            row = db.execute("SELECT value FROM readings WHERE key = ?", (key,)).fetchone()
            return json.loads(row[0]) if row else None
        except Exception:  # sqlite3.Error, a bad row: read the file instead
            return None

    def put(self, key: str, value: dict[str, Any]) -> None:
        self._new[key] = json.dumps(value)
        if len(self._new) >= 2000:
            self.flush()

    def flush(self) -> None:
        db = self._open()
        if db is None or not self._new:
            self.close()
            return
        now = time.time()
        try:
            with db:
                db.executemany("INSERT OR REPLACE INTO readings VALUES (?, ?, ?)",
                               [(k, v, now) for k, v in self._new.items()])
                db.execute("DELETE FROM readings WHERE at < ?", (now - self.KEEP_S,))
        except Exception:  # noqa: S110 - a cache that cannot be written is only slower
            pass
        self._new.clear()
        self.close()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _to_json(p: ParsedTfvars) -> dict[str, Any]:
    """What a reading holds besides the text and the file's name (both known to whoever reads it back)."""
    return {"attributes": [[a.name, a.line, a.start, a.end, a.value, a.known, [list(asdict(r).values()) for r in
                                                                                 a.file_refs]] for a in p.attributes],
            "problems": [[x.message, x.line] for x in p.problems],
            "warnings": [[x.message, x.line] for x in p.warnings]}


def _from_json(raw: dict[str, Any], shown: str, text: str, json_syntax: bool) -> ParsedTfvars:
    return ParsedTfvars(
        shown, text, "json" if json_syntax else "hcl",
        tuple(TfvarsAttribute(name, line, start, end, value, known, tuple(FileRef(*r) for r in refs))
              for name, line, start, end, value, known, refs in raw["attributes"]),
        tuple(Problem(shown, m, line) for m, line in raw["problems"]),
        tuple(Problem(shown, m, line) for m, line in raw["warnings"]))


def parse_tfvars_text(text: str, shown: str, json_syntax: bool = False, file_keys: tuple[str, ...] = FILE_KEYS,
                      fast: bool = True, compiled: bool = True) -> ParsedTfvars:
    """`fast`: try the readers for plain literals first, the compiled one unless not `compiled` (tests turn
    them off to compare them with the full reader)."""
    lines = Lines(text)
    keys = _FileKeys(file_keys)
    try:
        if json_syntax:
            attributes, problems = _json_attributes(text, lines, keys)
        elif fast and (found := _read_literals(text, keys, compiled)) is not None:
            return _literal_reading(text, shown, lines, found)
        else:
            attributes, problems = _hcl_attributes(text, lines, keys)
    except HclError as e:
        detail = f": {e.detail}" if e.detail else ""
        return ParsedTfvars(shown, text, "json" if json_syntax else "hcl",
                            problems=(Problem(shown, f"{e.summary}{detail}", lines.of(e.pos)),))
    warnings = () if attributes or problems else (Problem(shown, "sets no variables (only comments or blank)"),)
    return ParsedTfvars(shown, text, "json" if json_syntax else "hcl", tuple(attributes),
                        tuple(Problem(shown, m, lines.of(pos)) for m, pos in problems), warnings)


Found = list[tuple[str, int, int, Any, list[tuple[str, str, int, int]]]]  # name, start, end, value, file refs


def _literal_reading(text: str, shown: str, lines: Lines, found: Found) -> ParsedTfvars:
    attributes = tuple(TfvarsAttribute(name, lines.of(start), start, end, value, True,
                                       tuple(FileRef(*ref) for ref in refs))
                       for name, start, end, value, refs in found)
    warnings = () if attributes else (Problem(shown, "sets no variables (only comments or blank)"),)
    return ParsedTfvars(shown, text, "hcl", attributes, (), warnings)


def _number(text: str) -> Any:
    return plain(number(text))


def _compiled_literals(text: str, keys: _FileKeys) -> Found | None:
    """A file of plain literals by the compiled reader, or None. It does not resolve file references: a
    file with a key that names one is the Python line reader's."""
    if compiled_reader is None:
        return None
    read = compiled_reader.read(text, _number)
    if read is None:
        return None
    found, names = read
    return None if keys.any_in(names) else found


def _read_compiled(text: str, shown: str, file_keys: tuple[str, ...]) -> ParsedTfvars | None:
    found = _compiled_literals(text, _FileKeys(file_keys))
    return None if found is None else _literal_reading(text, shown, Lines(text), found)


def _read_literals(text: str, keys: _FileKeys, compiled: bool) -> Found | None:
    """A file of plain literals read fast, or None: the full reader decides."""
    if compiled and (found := _compiled_literals(text, keys)) is not None:
        return found
    return read_literal_lines(text, keys if keys.pattern else None)


@functools.lru_cache(maxsize=8)
def _file_key_pattern(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(fnmatch.translate(p) for p in patterns)) if patterns else None


@functools.lru_cache(maxsize=8)
def _plain_keys(patterns: tuple[str, ...]) -> set[str]:
    return set()


class _FileKeys:
    """Whether a key names a file. Keys that do not are remembered for the process: files share most of
    their keys, so most files are answered by one set difference."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.pattern = _file_key_pattern(patterns)
        self._plain = _plain_keys(patterns)

    def __call__(self, key: str) -> bool:
        if key in self._plain or self.pattern is None:
            return False
        if self.pattern.match(key):
            return True
        if len(self._plain) > 100_000:
            self._plain.clear()
        self._plain.add(key)
        return False

    def any_in(self, keys: set[str]) -> bool:
        return self.pattern is not None and any(self(k) for k in keys - self._plain)


def _hcl_attributes(text: str, lines: Lines, keys: _FileKeys) -> tuple[list[TfvarsAttribute], list[tuple[str, int]]]:
    body = parse_file(text)
    if body.blocks:
        block = body.blocks[0]
        raise HclError(f"Unexpected {block.type!r} block", block.start,
                       "Blocks are not allowed here; a variable definitions file holds `name = value` lines only.")
    attributes: list[TfvarsAttribute] = []
    problems: list[tuple[str, int]] = []
    first: dict[str, int] = {}
    for attr in body.attributes:
        if attr.name in first:
            raise HclError("Attribute redefined", attr.start,
                           f"The argument {attr.name!r} was already set on line {lines.of(first[attr.name])}. "
                           "Each argument may be set only once.")
        first[attr.name] = attr.start
    for attr in body.attributes:
        try:
            value, known = evaluate(attr.expr), True
        except HclError as e:
            problems.append((f"{attr.name}: {e.summary}: {e.detail}", e.pos))
            continue
        except (Unsupported, RecursionError):
            value, known = string_literals(attr.expr), False
        refs: list[FileRef] = []
        if keys.pattern is not None:
            for where, node in _file_nodes(attr.name, attr.expr, keys, attr.name):
                problem = _hcl_file_ref(where, node, refs)
                if problem:
                    problems.append((problem, node.start))
        attributes.append(TfvarsAttribute(attr.name, lines.of(attr.start), attr.start, attr.end, value, known,
                                          tuple(refs)))
    return attributes, problems


def _file_nodes(where: str, expr: Expr, keys: _FileKeys, key: str | None) -> Iterator[tuple[str, Expr]]:
    """(where, value) of every item whose key names a file, in object constructors at any depth."""
    if key is not None and keys(key):
        yield where, expr
    elif isinstance(expr, ObjectCons):
        for k, v in expr.items:
            name = k.value if isinstance(k, Literal) and isinstance(k.value, str) else None
            yield from _file_nodes(f"{where}.{name or '?'}", v, keys, name)
    elif isinstance(expr, TupleCons):
        for i, item in enumerate(expr.items):
            yield from _file_nodes(f"{where}[{i}]", item, keys, None)


def _hcl_file_ref(where: str, node: Expr, refs: list[FileRef]) -> str | None:
    """Record the file(s) `node` names; a problem when it is not a plain string (or list of them)."""
    nodes = list(node.items) if isinstance(node, TupleCons) else [node]
    for n in nodes:
        if isinstance(n, Literal) and n.value is None:
            continue  # no file given
        if not (isinstance(n, Literal) and isinstance(n.value, str)):
            return (f"{where}: a file reference must be a plain quoted string (or a list of them), "
                    "so tfo can ship the file with the deployment")
        if n.value:
            refs.append(FileRef(where, n.value, n.start, n.end))
    return None


def _json_attributes(text: str, lines: Lines, keys: _FileKeys) -> tuple[list[TfvarsAttribute], list[tuple[str, int]]]:
    root = parse_json_object(text)
    attributes: list[TfvarsAttribute] = []
    problems: list[tuple[str, int]] = []
    for name, key_pos, value in root.members:
        if name == "//":
            continue  # a comment, as Terraform reads JSON bodies
        refs: list[FileRef] = []
        if keys.pattern is not None:
            for where, node in _json_file_nodes(name, value, keys, name):
                nodes = list(node.items) if isinstance(node.value, list) else [node]
                for n in nodes:
                    if n.value is None or n.value == "":
                        continue
                    if not isinstance(n.value, str):
                        problems.append((f"{where}: a file reference must be a string (or a list of them)", n.start))
                        continue
                    refs.append(FileRef(where, n.value, n.start, n.end))
        attributes.append(TfvarsAttribute(name, lines.of(key_pos), value.start, value.end, plain(value.value),
                                          True, tuple(refs)))
    return attributes, problems


def _json_file_nodes(where: str, node: JsonValue, keys: _FileKeys, key: str | None) -> Iterator[tuple[str, JsonValue]]:
    if key is not None and keys(key):
        yield where, node
        return
    for name, _, value in node.members:
        yield from _json_file_nodes(f"{where}.{name}", value, keys, name)
    for i, item in enumerate(node.items):
        yield from _json_file_nodes(f"{where}[{i}]", item, keys, None)
