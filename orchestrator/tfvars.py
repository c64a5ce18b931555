"""Parse .tfvars with python-hcl2 into plain Python values, reporting problems with file and line."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.cache import cached, contents_digest
from orchestrator.errors import Problem
from orchestrator.hcl_variables import sensitive_variable_names
from orchestrator.tfvars_fast import parse_literal_tfvars

MAX_TFVARS_BYTES = 5 * 1024 * 1024
_HEREDOC = re.compile(r"\A<<(-?)([A-Za-z_][A-Za-z0-9_]*)\n(.*?)\n?[ \t]*\2\Z", re.S)


class NotLiteralError(ValueError):
    pass


@dataclass(frozen=True)
class ParsedTfvars:
    variables: dict[str, Any]
    problems: tuple[Problem, ...]


def _heredoc_text(m: re.Match[str]) -> str:
    text = m.group(3)
    if m.group(1):  # <<- strips the common indentation
        lines = text.split("\n")
        indent = min((len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()), default=0)
        text = "\n".join(ln[indent:] for ln in lines)
    return text + "\n"


def _unquote(raw: str, where: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        body = raw[1:-1]
        heredoc = _HEREDOC.match(body)
        if heredoc:
            return _heredoc_text(heredoc)
        if "${" in body.replace("$${", "") or "%{" in body.replace("%%{", ""):
            raise NotLiteralError(f"{where}: template interpolation is not allowed in tfvars")
        try:
            # HCL string escapes are a superset of JSON's for everything tfvars use.
            return str(json.loads('"' + body.replace("\n", "\\n").replace("\t", "\\t") + '"')).replace(
                "$${", "${"
            )
        except json.JSONDecodeError:
            return body
    m = _HEREDOC.match(raw)
    if m:
        return _heredoc_text(m)
    raise NotLiteralError(f"{where}: {raw.strip('${}')!r} is an expression; tfvars take literal values only")


def to_literal(value: Any, where: str) -> Any:
    if isinstance(value, str):
        return _unquote(value, where)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k.startswith("__") and k.endswith("__"):
                continue  # hcl2 metadata such as __comments__
            key = k[1:-1] if len(k) >= 2 and k[0] == k[-1] == '"' else k
            out[key] = to_literal(v, f"{where}.{key}")
        return out
    if isinstance(value, list):
        return [to_literal(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _line_of(text: str, name: str) -> int | None:
    m = re.search(rf"^\s*{re.escape(name)}\s*=", text, re.M)
    return text.count("\n", 0, m.start()) + 1 if m else None


def parse_tfvars(path: Path, shown: str) -> ParsedTfvars:
    try:
        data = path.read_bytes()
    except OSError as e:
        return ParsedTfvars({}, (Problem(shown, f"cannot be read: {e.strerror}"),))
    if len(data) > MAX_TFVARS_BYTES:
        return ParsedTfvars({}, (Problem(shown, f"is {len(data)} bytes; the limit is {MAX_TFVARS_BYTES}"),))
    if b"\0" in data:
        return ParsedTfvars({}, (Problem(shown, "is binary (contains NUL bytes), not HCL text"),))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return ParsedTfvars({}, (Problem(shown, f"is not UTF-8 text (byte {e.start})"),))
    literal = parse_literal_tfvars(text)  # nearly every file: plain literals, no python-hcl2 needed
    if literal:
        return ParsedTfvars(literal, ())
    if not text.strip() or not re.sub(r"(#|//)[^\n]*|/\*.*?\*/", "", text, flags=re.S).strip():
        return ParsedTfvars({}, (Problem(shown, "is empty: it sets no variables"),))
    return parse_with_hcl2(text, shown)


def parse_with_hcl2(text: str, shown: str) -> ParsedTfvars:
    import hcl2  # 0.1 s to import: only files outside the literal subset need it

    try:
        raw = hcl2.loads(text)
    except Exception as e:  # lark raises several unrelated types; all mean "not valid HCL"
        line = getattr(e, "line", None)
        line = line if isinstance(line, int) and line > 0 else None
        column = getattr(e, "column", None)
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        where = f" (column {column})" if isinstance(column, int) and column > 0 else ""
        return ParsedTfvars({}, (Problem(shown, f"HCL syntax error{where}: {detail}", line),))
    problems: list[Problem] = []
    variables: dict[str, Any] = {}
    for name, value in raw.items():
        if name.startswith("__") and name.endswith("__"):
            continue
        if _line_of(text, name) is None:
            problems.append(Problem(shown, f"{name!r} is a block; tfvars hold 'name = value' lines only",
                                    _line_of(text, name)))
            continue
        try:
            variables[name] = to_literal(value, name)
        except NotLiteralError as e:
            problems.append(Problem(shown, str(e), _line_of(text, name)))
    return ParsedTfvars(variables, tuple(problems))


def sensitive_variables(module_dir: Path, cache_dir: Path | None = None) -> tuple[str, ...]:
    """Names of the module's variables declared `sensitive = true` (cached per module content)."""
    contents = {f.name: f.read_bytes() for f in sorted(module_dir.glob("*.tf"))}  # each file read once
    if not any(b"sensitive" in text for text in contents.values()):
        return ()  # no flag to find
    if cache_dir is None:
        return _sensitive_variables(contents)
    return tuple(cached(cache_dir, "sensitive-variables", contents_digest(contents),
                        lambda: _sensitive_variables(contents), keep=lambda v: True))


def _sensitive_variables(contents: dict[str, bytes]) -> tuple[str, ...]:
    names: set[str] = set()
    for raw in contents.values():
        text = raw.decode("utf-8", errors="replace")
        found = sensitive_variable_names(text)  # python-hcl2 only for what the scanner does not follow
        names |= found if found is not None else sensitive_variables_hcl2(text)
    return tuple(sorted(names))


def sensitive_variables_hcl2(text: str) -> set[str]:
    import hcl2

    try:
        parsed = hcl2.loads(text)
    except Exception:  # terraform validates the module itself; we only look for a flag
        return set()
    names: set[str] = set()
    for block in parsed.get("variable", []):
        for name, body in block.items():
            if isinstance(body, dict) and body.get("sensitive") is True:
                names.add(name.strip('"'))
    return names
