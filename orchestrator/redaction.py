"""Redaction of everything shown to people: console, Markdown, logs, run summaries.

The full, unredacted output goes only to the encrypted audit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

MASK = "[REDACTED]"
_MIN_LITERAL = 4  # shorter "secrets" would mask ordinary words and numbers everywhere

# Words that mark a name as holding a secret (not secrets themselves).
_SECRET_WORDS = (
    r"password|passwd|passphrase|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key"  # noqa: S105
    r"|client[_-]?secret|credentials?|auth"
)

# Whitespace as it may appear in output: Terraform word-wraps diagnostics ("-----BEGIN\nRSA PRIVATE
# KEY-----"), and output embedded in JSON carries its newlines as backslash-n.
_WS = r"(?:\s|\\+n)+"
_PEM_LINE = rf"(?:[A-Z0-9]+{_WS})*PRIVATE{_WS}KEY-----"

_PATTERNS: tuple[tuple[re.Pattern[str], str | None], ...] = (
    # PEM private keys, whole block
    (re.compile(rf"-----BEGIN{_WS}{_PEM_LINE}.*?-----END{_WS}{_PEM_LINE}", re.S),
     "-----BEGIN PRIVATE KEY-----" + MASK + "-----END PRIVATE KEY-----"),
    # a PEM block cut off before its END line still must not leak
    (re.compile(rf"-----BEGIN{_WS}{_PEM_LINE}(?!\[REDACTED\])[A-Za-z0-9+/=\s\\n]+"),
     "-----BEGIN PRIVATE KEY-----" + MASK),
    # scheme://user:password@host
    (re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)([^:/\s@]*):([^@\s/]+)@"), r"\1\2:" + MASK + "@"),
    # Authorization: Bearer xyz / token xyz
    (re.compile(rf"(?i)\b(bearer|basic|token){_WS}[A-Za-z0-9._~+/=-]{{8,}}"), r"\1 " + MASK),
    # AWS access key ids
    (re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA)[A-Z0-9]{16}\b"), MASK),
    # GitHub, Slack and similar prefixed tokens
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|xox[abprs]-[A-Za-z0-9-]{10,})\b"),
     MASK),
    # AWS secret access keys: 40 base64 characters that are not part of a longer token
    (re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"), None),
)


# `name = value`, `name: value`, `"name": "value"` where the name contains a secret word; quotes may be
# backslash-escaped, as in JSON embedded in JSON (plan output inside an audit record). Matched from
# each secret word onwards, so the cost stays linear in the size of the output.
_SECRET_WORD = re.compile(_SECRET_WORDS, re.I)
_ASSIGNMENT_TAIL = re.compile(
    r"""[\w.-]*(?:\\*["'])?(?P<sep>\s*(?:=>|=|:)\s*)"""
    r"""(?P<value>\\*"(?:[^"\\\n]|\\(?!\\*"))*\\*"|'[^'\n]*'|[^\s,;}\])"'\\]+)""")


def _masked_value(value: str) -> str:
    if value.strip("\"'\\") in ("", "(sensitive value)", "(sensitive)", MASK, "null", "true", "false") \
            or value.startswith(("(", "[")):
        return value
    opening = re.match(r"""^\\*["']?""", value)
    closing = re.search(r"""\\*["']?$""", value)
    head = opening.group(0) if opening else ""
    tail = closing.group(0) if closing and len(value) > len(head) else ""
    return f"{head}{MASK}{tail}"


def _mask_assignments(text: str) -> str:
    out: list[str] = []
    pos = 0
    for word in _SECRET_WORD.finditer(text):
        if word.start() < pos:
            continue
        m = _ASSIGNMENT_TAIL.match(text, word.end())
        if not m:
            continue
        out.append(text[pos:m.start("value")])
        out.append(_masked_value(m.group("value")))
        pos = m.end("value")
    out.append(text[pos:])
    return "".join(out)


def _mask_aws_secret(m: re.Match[str]) -> str:
    s = m.group(0)
    # Hex digests and lowercase-only ids are not secret keys; real ones mix cases and digits.
    if re.fullmatch(r"[0-9a-f]{40}", s) or not (re.search(r"[A-Z]", s) and re.search(r"[a-z]", s)
                                                 and re.search(r"[0-9/+]", s)):
        return s
    return MASK


def _leaves(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)


class Redactor:
    def __init__(self, literals: Iterable[str] = ()) -> None:
        self._literals: set[str] = set()
        self.add(literals)

    def add(self, literals: Iterable[str]) -> None:
        for lit in literals:
            for line in str(lit).splitlines() or [str(lit)]:
                if len(line.strip()) >= _MIN_LITERAL:
                    self._literals.add(line.strip())
                    escaped = json.dumps(line.strip())[1:-1]
                    if escaped != line.strip():
                        self._literals.add(escaped)

    def add_sensitive_variables(self, variables: dict[str, Any], names: Iterable[str]) -> None:
        for name in names:
            if name in variables:
                self.add(_leaves(variables[name]))

    def redact_tree(self, value: Any) -> Any:
        """Every string in a JSON-like structure redacted on its own (before it is serialized and escaped)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self.redact_tree(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.redact_tree(v) for v in value]
        return value

    def redact(self, text: str) -> str:
        if not text:
            return text
        # Longest first, so a secret that contains another is masked whole.
        for lit in sorted(self._literals, key=len, reverse=True):
            if lit in text:
                text = text.replace(lit, MASK)
        for pattern, replacement in _PATTERNS:
            # a pattern without a fixed replacement is the AWS secret key one, which needs a check
            text = pattern.sub(replacement if replacement is not None else _mask_aws_secret, text)
        return _mask_assignments(text)
