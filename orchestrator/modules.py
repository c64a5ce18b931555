"""What a root module needs: the local modules it calls, the files it reads, its sensitive variables.

A deployment's bundle holds its root module and every local module that module calls (`source =
"../modules/x"`, transitively) at the same relative paths, plus the files they read through
`path.module` or `path.root` outside those directories, so `terraform init` and `file()` find them
in the per-deployment directory as in the repository. The same facts select deployments: a change
to any file a root module needs selects the deployments built from it. Module sources that are not
local (registry, git, https) are left to `terraform init`.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.cache import cached, contents_digest
from orchestrator.errors import Problem
from orchestrator.hcl import HclError, Lines, parse_file
from orchestrator.hcl.syntax import Block, Body, Call, Expr, GetAttr, Literal, Template, Variable, Wrap

# Never ship local Terraform working state or files tfo generates into a workspace.
EXCLUDE_DIRS = frozenset({".terraform", ".git", ".tfo"})
EXCLUDE_SUFFIXES = (".tfstate", ".tfstate.backup", ".tfplan")
EXCLUDE_NAMES = frozenset({"backend_override.tf", "tfplan", ".terraform.lock.hcl.tmp"})
_FACTS_VERSION = "2"  # bump when ModuleFacts changes shape or meaning (cached per module content)


def auto_loaded(name: str) -> bool:
    """Variable files Terraform loads by itself from the root module directory."""
    return name in ("terraform.tfvars", "terraform.tfvars.json") or name.endswith((".auto.tfvars",
                                                                                    ".auto.tfvars.json"))


def is_tfvars(name: str) -> bool:
    return name.endswith((".tfvars", ".tfvars.json"))


@dataclass(frozen=True)
class ModuleFacts:
    """What one module directory's own .tf files say."""

    sensitive: tuple[str, ...] = ()
    calls: tuple[str, ...] = ()  # local sources as written ("../modules/x")
    reads: tuple[str, ...] = ()  # paths read through path.module (ending "/" for a directory, or a glob)
    root_reads: tuple[str, ...] = ()  # the same through path.root
    problems: tuple[tuple[str, int, str], ...] = ()  # (file name, line, message)


@dataclass(frozen=True)
class RootModule:
    dir: str  # repo-relative, POSIX
    module_dirs: tuple[str, ...] = ()  # the root module and every local module it calls
    extra: tuple[str, ...] = ()  # files and directories ("x/") read outside those, repo-relative
    files: tuple[str, ...] = ()  # every file the bundle carries, repo-relative
    sensitive: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = field(default=())

    def needs(self, path: str) -> bool:
        """Whether a change to `path` (repo-relative; added, changed or deleted) can change this module."""
        if path in self.files or path in self.extra:
            return True
        if any(e.endswith("/") and path.startswith(e) for e in self.extra):
            return True
        # A file added to or deleted from a module directory: one the bundle would carry.
        name = path.rsplit("/", 1)[-1]
        if (is_tfvars(name) and not auto_loaded(name)) or name.endswith(EXCLUDE_SUFFIXES) or name in EXCLUDE_NAMES:
            return False
        parts = path.split("/")
        return any(posixpath.dirname(path) == d or (d == "." and "/" not in path) for d in self.module_dirs) or \
            any(path.startswith(d + "/") and not set(parts[len(d.split("/")):-1]) & EXCLUDE_DIRS
                for d in self.module_dirs if d != ".")


def module_facts(directory: Path, cache_dir: Path | None = None) -> ModuleFacts:
    """The facts of one module directory, cached per the content of its .tf files."""
    contents = {p.name: p.read_bytes() for p in sorted(directory.iterdir())
                if p.name.endswith((".tf", ".tf.json")) and p.is_file()}
    if cache_dir is None:
        return _facts(contents)
    raw = cached(cache_dir, "module-facts", _FACTS_VERSION + contents_digest(contents),
                 lambda: _facts_dict(_facts(contents)), keep=lambda v: True)
    return ModuleFacts(tuple(raw["sensitive"]), tuple(raw["calls"]), tuple(raw["reads"]), tuple(raw["root_reads"]),
                       tuple((str(f), int(line), str(m)) for f, line, m in raw["problems"]))


def _facts_dict(f: ModuleFacts) -> dict[str, Any]:
    return {"sensitive": list(f.sensitive), "calls": list(f.calls), "reads": list(f.reads),
            "root_reads": list(f.root_reads), "problems": [list(p) for p in f.problems]}


def _facts(contents: dict[str, bytes]) -> ModuleFacts:
    sensitive: set[str] = set()
    calls: list[str] = []
    reads: list[str] = []
    root_reads: list[str] = []
    problems: list[tuple[str, int, str]] = []
    for name, raw in contents.items():
        text = raw.decode("utf-8", errors="replace").removeprefix("\ufeff")
        if name.endswith(".json"):
            _json_facts(name, text, sensitive, calls, problems)
            continue
        try:
            body = parse_file(text)
        except HclError as e:
            problems.append((name, Lines(text).of(e.pos), f"{e.summary}: {e.detail}" if e.detail else e.summary))
            continue
        for block in body.blocks:
            attrs = {a.name: a.expr for a in block.body.attributes}
            if block.type == "variable" and block.labels:
                flag = attrs.get("sensitive")
                if isinstance(flag, Literal) and flag.value is True:
                    sensitive.add(block.labels[0])
            elif block.type == "module":
                source = attrs.get("source")
                if isinstance(source, Literal) and isinstance(source.value, str) and _local(source.value):
                    calls.append(source.value)
        for expr in _expressions(body):
            for base, path in _path_reads(expr):
                (reads if base == "module" else root_reads).append(path)
    return ModuleFacts(tuple(sorted(sensitive)), tuple(dict.fromkeys(calls)), tuple(dict.fromkeys(reads)),
                       tuple(dict.fromkeys(root_reads)), tuple(problems))


def _json_facts(name: str, text: str, sensitive: set[str], calls: list[str],
                problems: list[tuple[str, int, str]]) -> None:
    try:
        data = json.loads(text)
    except ValueError as e:
        problems.append((name, getattr(e, "lineno", 1), f"not valid JSON: {e}"))
        return
    if not isinstance(data, dict):
        return
    for var_name, var in _json_blocks(data.get("variable")):
        if isinstance(var, dict) and var.get("sensitive") is True:
            sensitive.add(var_name)
    for _, mod in _json_blocks(data.get("module")):
        if isinstance(mod, dict) and isinstance(mod.get("source"), str) and _local(mod["source"]):
            calls.append(mod["source"])


def _json_blocks(section: Any) -> Iterator[tuple[str, Any]]:
    for item in section if isinstance(section, list) else [section]:
        if isinstance(item, dict):
            for label, body in item.items():
                for b in body if isinstance(body, list) else [body]:
                    yield label, b


def _local(source: str) -> bool:
    return source.startswith(("./", "../"))


def _expressions(body: Body) -> Iterator[Expr]:
    for a in body.attributes:
        yield a.expr
    for b in body.blocks:
        yield from _expressions(b.body)


def _walk(node: Any) -> Iterator[Any]:
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, tuple | list):
            stack.extend(n)
        elif hasattr(n, "__slots__") and not isinstance(n, str):
            yield n
            if not isinstance(n, Block):
                stack.extend(getattr(n, s) for s in n.__slots__)


def _path_var(node: Any) -> str | None:
    """"module" or "root" for `path.module` / `path.root`."""
    if isinstance(node, GetAttr) and isinstance(node.source, Variable) and node.source.name == "path" \
            and node.name in ("module", "root"):
        return node.name
    return None


def _path_reads(expr: Expr) -> Iterator[tuple[str, str]]:
    """(base, path) for each `"${path.module}/x"` template and `fileset(path.module, "*.json")` call."""
    for node in _walk(expr):
        if isinstance(node, Template) and len(node.items) >= 2:
            base = _path_var(node.items[0])
            tail = node.items[1]
            if base and isinstance(tail, str) and tail.startswith("/"):
                rel = tail[1:]
                if len(node.items) > 2:  # more follows: everything in the directory it names may be read
                    rel = rel[: rel.rfind("/") + 1] if "/" in rel else ""
                yield base, rel or "./"
        elif isinstance(node, Call) and node.name == "fileset" and len(node.args) == 2:
            first, pattern = node.args
            prefix = ""
            if isinstance(first, Wrap):
                first = first.inner
            if isinstance(first, Template) and _path_var(first.items[0]) and len(first.items) == 2 \
                    and isinstance(first.items[1], str):
                prefix = first.items[1].strip("/") + "/"
                base = _path_var(first.items[0])
            else:
                base = _path_var(first)
            if base and isinstance(pattern, Literal) and isinstance(pattern.value, str):
                yield base, prefix + pattern.value


class ModuleGraph:
    """Root modules of one repository, each worked out once per process."""

    def __init__(self, repo_root: Path, cache_dir: Path | None = None) -> None:
        self.root = repo_root.resolve()
        self.cache_dir = cache_dir
        self._facts: dict[str, ModuleFacts] = {}
        self._roots: dict[str, RootModule] = {}

    def facts(self, rel: str) -> ModuleFacts:
        if rel not in self._facts:
            self._facts[rel] = module_facts(self.root / rel, self.cache_dir)
        return self._facts[rel]

    def root_module(self, rel: str) -> RootModule:
        """`rel`: the root module's directory, repo-relative and normalised."""
        if rel not in self._roots:
            self._roots[rel] = self._build(rel)
        return self._roots[rel]

    def _build(self, root_dir: str) -> RootModule:
        problems: list[Problem] = []
        dirs: list[str] = []
        extra: list[str] = []
        pending: list[tuple[str, tuple[str, str] | None]] = [(root_dir, None)]  # (dir, (caller, source))
        while pending:
            rel, via = pending.pop(0)
            if rel in dirs:
                continue
            full = self.root / rel
            if not full.is_dir() or not any(p.name.endswith((".tf", ".tf.json")) for p in full.iterdir()):
                problems.append(Problem(via[0], f"calls module {via[1]!r} ({rel}), which has no .tf files: "
                                                "terraform init would fail (Unreadable module directory)")
                                if via else Problem(rel, "module directory has no .tf files"))
                continue
            dirs.append(rel)
            facts = self.facts(rel)
            problems += [Problem(f"{rel}/{name}".removeprefix("./"), message, line)
                         for name, line, message in facts.problems]
            for source in facts.calls:
                target = self._inside(posixpath.join(rel, source))
                if target is None:
                    problems.append(Problem(rel, f"module source {source!r} resolves outside the repository"))
                else:
                    pending.append((target, (rel, source)))
            for base, base_dir, reads in (("module", rel, facts.reads), ("root", root_dir, facts.root_reads)):
                for read in reads:
                    target = self._inside(posixpath.join(base_dir, read))
                    if target is None:
                        problems.append(Problem(rel, f"reads {read!r} through path.{base}, which resolves "
                                                     "outside the repository"))
                    elif not any(target == d or target.startswith(d + "/") or d == "." for d in dirs):
                        extra.append(target + "/" if read.endswith("/") and target != "." else target)
        warnings = [Problem(f"{root_dir}/{name}".removeprefix("./"),
                            "Terraform loads this file by itself for every deployment of this module: its variables "
                            "reach every service (per-service filtering does not apply)")
                    for name in sorted(os.listdir(self.root / root_dir))
                    if auto_loaded(name)] if (self.root / root_dir).is_dir() else []
        files = self._files(dirs, extra, problems)
        sensitive = self.facts(root_dir).sensitive if root_dir in dirs else ()
        return RootModule(root_dir, tuple(dirs), tuple(dict.fromkeys(extra)), files, sensitive, tuple(problems),
                          tuple(warnings))

    def _inside(self, joined: str) -> str | None:
        """Normalised repo-relative path, or None when it leaves the repository (symlinks followed)."""
        norm = posixpath.normpath(joined)
        if norm == ".." or norm.startswith("../") or posixpath.isabs(norm):
            return None
        real = os.path.realpath(self.root / norm)
        if real != str(self.root) and not real.startswith(str(self.root) + os.sep):
            return None
        return norm

    def _files(self, dirs: list[str], extra: list[str], problems: list[Problem]) -> tuple[str, ...]:
        files: set[str] = set()
        for d in dirs:
            self._collect_dir(d, set(dirs), files, problems, module_root=True)
        for e in extra:
            if any(ch in e for ch in "*?["):
                files.update(self._glob(e))
            elif e.endswith("/") or (self.root / e).is_dir():
                self._collect_dir(e.rstrip("/") or ".", set(dirs), files, problems, module_root=False)
            elif (self.root / e).is_file() and self._check_link(e, problems):
                files.add(e)
        return tuple(sorted(files))

    def _glob(self, pattern: str) -> Iterator[str]:
        base = pattern.split("*")[0].rsplit("/", 1)[0] if "/" in pattern.split("*")[0] else "."
        for dirpath, dirnames, filenames in os.walk(self.root / base):
            dirnames[:] = [d for d in dirnames if d not in EXCLUDE_DIRS]
            for f in filenames:
                rel = os.path.relpath(os.path.join(dirpath, f), self.root).replace(os.sep, "/")
                if fnmatch.fnmatch(rel, pattern) and self._inside(rel):
                    yield rel

    def _check_link(self, rel: str, problems: list[Problem]) -> bool:
        if self._inside(rel) is None:
            problems.append(Problem(rel, "is a symlink to outside the repository; refusing to ship it"))
            return False
        return True

    def _collect_dir(self, rel: str, modules: set[str], files: set[str], problems: list[Problem],
                     module_root: bool) -> None:
        """Files of a module directory, its subdirectories too, except other modules' and other deployments'."""
        top = self.root / rel
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            here = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            kept = []
            for d in sorted(dirnames):
                sub = posixpath.normpath(posixpath.join(here, d))
                if d in EXCLUDE_DIRS or sub in modules:
                    continue  # a called module is collected as itself
                if os.path.islink(os.path.join(dirpath, d)):
                    if self._check_link(sub, problems):
                        self._collect_dir_link(sub, files, problems)
                    continue
                if module_root and any(n.endswith((".tf", ".tf.json")) for n in os.listdir(os.path.join(dirpath, d))):
                    continue  # another module that this one does not call
                kept.append(d)
            dirnames[:] = kept
            for f in filenames:
                rel_file = posixpath.normpath(posixpath.join(here, f))
                if f.endswith(EXCLUDE_SUFFIXES) or f in EXCLUDE_NAMES or (is_tfvars(f) and not auto_loaded(f)):
                    continue  # never another deployment's inputs
                if os.path.islink(os.path.join(dirpath, f)) and not self._check_link(rel_file, problems):
                    continue
                files.add(rel_file)

    def _collect_dir_link(self, rel: str, files: set[str], problems: list[Problem]) -> None:
        real = Path(os.path.realpath(self.root / rel))
        for dirpath, dirnames, filenames in os.walk(real):
            dirnames[:] = [d for d in dirnames
                           if d not in EXCLUDE_DIRS and not os.path.islink(os.path.join(dirpath, d))]
            for f in filenames:
                inner = os.path.relpath(os.path.join(dirpath, f), real).replace(os.sep, "/")
                full = posixpath.join(rel, inner)
                if self._check_link(full, problems):
                    files.add(full)
