"""What a root module needs: the local modules it calls, the files it reads, its sensitive variables.

A deployment's bundle holds its root module and every local module that module calls (`source =
"../modules/x"`, transitively) at the same relative paths, plus the files they read through
`path.module` or `path.root` outside those directories, so `terraform init` and `file()` find them
in the per-deployment directory as in the repository. The same facts select deployments: a change
to any file a root module needs selects the deployments built from it. Module sources that are not
local (registry, git, https) are left to `terraform init`.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import __version__
from orchestrator.cache import cached, contents_digest
from orchestrator.config import TfoConfig
from orchestrator.errors import Problem
from orchestrator.hcl import HclError, Lines, parse_file
from orchestrator.hcl.syntax import Body, Call, Expr, GetAttr, Literal, Template, Variable, Wrap, walk

# Never ship local Terraform working state or files tfo generates into a workspace.
EXCLUDE_DIRS = frozenset({".terraform", ".git", ".tfo"})
EXCLUDE_SUFFIXES = (".tfstate", ".tfstate.backup", ".tfplan")
EXCLUDE_NAMES = frozenset({"backend_override.tf", "tfplan", ".terraform.lock.hcl.tmp"})
_FACTS_VERSION = "3"  # bump when ModuleFacts changes shape or meaning (cached per module content)


def private_reason(rel: str, private_dirs: tuple[str, ...] = ()) -> str | None:
    """Why a repository path is no deployment's input: git's, Terraform's or tfo's own data, or state."""
    parts = rel.split("/")
    hidden = next((p for p in parts if p in EXCLUDE_DIRS), None)
    if hidden:
        return f"is inside {hidden}/ (git's, Terraform's or tfo's own data)"
    mine = next((d for d in private_dirs if rel == d or rel.startswith(d + "/")), None)
    if mine:
        return f"is inside {mine}/ (tfo's working data)"
    if rel.endswith(EXCLUDE_SUFFIXES):
        return "is a Terraform state or plan file"
    return None


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
    # Files tfo's reader could not follow: (file name, line, message). Not refused (terraform is the
    # judge of .tf files, and may know newer syntax); their local module sources come from a plain scan.
    unread: tuple[tuple[str, int, str], ...] = ()


def ships(name: str) -> bool:
    """Whether a file of this name in a module directory goes into bundles (never state, plans,
    generated files or another deployment's tfvars; Terraform's auto-loaded tfvars do)."""
    return not (name.endswith(EXCLUDE_SUFFIXES) or name in EXCLUDE_NAMES or (is_tfvars(name) and not auto_loaded(name)))


def is_module_dir(path: Path) -> bool:
    return path.is_dir() and any(p.name.endswith((".tf", ".tf.json")) for p in path.iterdir())


@dataclass(frozen=True)
class RootModule:
    dir: str  # repo-relative, POSIX
    module_dirs: tuple[str, ...] = ()  # the root module and every local module it calls
    extra: tuple[str, ...] = ()  # files, directories ("x/") and globs read outside those, repo-relative
    files: tuple[str, ...] = ()  # every file the bundle carries, repo-relative
    sensitive: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = field(default=())

    def needs(self, path: str) -> bool:
        """Whether a change to `path` (repo-relative; added, changed or deleted) can change this module."""
        if path in self._files:
            return True
        for e in self.extra:  # read through path.module: a file, everything under a directory, or a glob
            if path == e or path.startswith(e.rstrip("/") + "/") or (_GLOB_CHARS & set(e) and doublestar(e, path)):
                return True
        # A file added to or deleted from a module directory, of a kind the bundle carries.
        if not ships(posixpath.basename(path)):
            return False
        parent = posixpath.dirname(path) or "."
        return any(parent == d or ((parent.startswith(d + "/") or d == ".") and not private_reason(path))
                   for d in self.module_dirs)

    @functools.cached_property
    def _files(self) -> frozenset[str]:
        return frozenset(self.files)


_GLOB_CHARS = frozenset("*?[")


@functools.lru_cache(maxsize=256)
def _doublestar_regex(pattern: str) -> re.Pattern[str]:
    """A glob as Terraform's fileset() reads it: `*` within a segment, `**/` any number of directories."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def doublestar(pattern: str, path: str) -> bool:
    return _doublestar_regex(pattern).fullmatch(path) is not None


def module_facts(directory: Path, cache_dir: Path | None = None) -> ModuleFacts:
    """The facts of one module directory, cached per the content of its .tf files."""
    contents = {p.name: p.read_bytes() for p in sorted(directory.iterdir())
                if p.name.endswith((".tf", ".tf.json")) and p.is_file()}
    if cache_dir is None:
        return _facts(contents)
    raw = cached(cache_dir, "module-facts", f"{_FACTS_VERSION}:{__version__}:{contents_digest(contents)}",
                 lambda: _facts_dict(_facts(contents)), keep=lambda v: True)
    return ModuleFacts(tuple(raw["sensitive"]), tuple(raw["calls"]), tuple(raw["reads"]), tuple(raw["root_reads"]),
                       tuple((str(f), int(line), str(m)) for f, line, m in raw["unread"]))


def _facts_dict(f: ModuleFacts) -> dict[str, Any]:
    return {"sensitive": list(f.sensitive), "calls": list(f.calls), "reads": list(f.reads),
            "root_reads": list(f.root_reads), "unread": [list(p) for p in f.unread]}


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
            calls += [m.group(1) for m in _SOURCE_SCAN.finditer(text) if _local(m.group(1))]
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


# A module call's local source, for files tfo's reader cannot follow.
_SOURCE_SCAN = re.compile(r'^\s*source\s*=\s*"([^"\n]*)"', re.M)


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


def _path_var(node: Any) -> str | None:
    """"module" or "root" for `path.module` / `path.root`."""
    if isinstance(node, GetAttr) and isinstance(node.source, Variable) and node.source.name == "path" \
            and node.name in ("module", "root"):
        return node.name
    return None


def _path_reads(expr: Expr) -> Iterator[tuple[str, str]]:
    """(base, path) for each `"${path.module}/x"` template and `fileset(path.module, "*.json")` call."""
    for node in walk(expr):
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

    @classmethod
    def for_config(cls, cfg: TfoConfig) -> ModuleGraph:
        return cls(cfg.repo_root, cfg.cache_path, cfg.private_dirs)

    def __init__(self, repo_root: Path, cache_dir: Path | None = None, private_dirs: tuple[str, ...] = ()) -> None:
        self.root = repo_root.resolve()
        self.cache_dir = cache_dir
        self.private_dirs = private_dirs
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
        unread: list[Problem] = []
        dirs: list[str] = []
        extra: list[str] = []
        pending: list[tuple[str, tuple[str, str] | None]] = [(root_dir, None)]  # (dir, (caller, source))
        while pending:
            rel, via = pending.pop(0)
            if rel in dirs:
                continue
            if not is_module_dir(self.root / rel):
                problems.append(Problem(via[0], f"calls module {via[1]!r} ({rel}), which has no .tf files: "
                                                "terraform init would fail (Unreadable module directory)")
                                if via else Problem(rel, "module directory has no .tf files"))
                continue
            dirs.append(rel)
            facts = self.facts(rel)
            unread += [Problem(f"{rel}/{name}".removeprefix("./"),
                               f"tfo cannot read this file ({message}); Terraform will say whether it is valid. "
                               "Local modules it calls were found by a plain scan for `source = \"...\"`", line)
                       for name, line, message in facts.unread]
            for source in facts.calls:
                target = posixpath.normpath(posixpath.join(rel, source))
                why = self.refused(target)
                if why:
                    problems.append(Problem(rel, f"module source {source!r} ({target}) {why}"))
                else:
                    pending.append((target, (rel, source)))
            for base, base_dir, reads in (("module", rel, facts.reads), ("root", root_dir, facts.root_reads)):
                for read in reads:
                    target = posixpath.normpath(posixpath.join(base_dir, read))
                    why = None if _GLOB_CHARS & set(target) else self.refused(target)
                    if why or self._inside(target.split("*")[0] or ".") is None:
                        problems.append(Problem(rel, f"reads {read!r} through path.{base}: {target} "
                                                     f"{why or 'resolves outside the repository'}"))
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
                          tuple(unread + warnings))

    def _inside(self, joined: str) -> str | None:
        """Normalised repo-relative path, or None when it leaves the repository (symlinks followed)."""
        norm = posixpath.normpath(joined)
        if norm == ".." or norm.startswith("../") or posixpath.isabs(norm):
            return None
        real = os.path.realpath(self.root / norm)
        if real != str(self.root) and not real.startswith(str(self.root) + os.sep):
            return None
        return norm

    def refused(self, rel: str) -> str | None:
        """Why `rel` may not be shipped: outside the repository, or private data (checked where it really is)."""
        if self._inside(rel) is None:
            return "resolves outside the repository (symlinks are followed)"
        real = Path(os.path.realpath(self.root / rel)).relative_to(self.root).as_posix()
        return private_reason(rel, self.private_dirs) or private_reason(real, self.private_dirs)

    def _files(self, dirs: list[str], extra: list[str], problems: list[Problem]) -> tuple[str, ...]:
        files: set[str] = set()
        for d in dirs:
            self._collect_dir(d, set(dirs), files, problems, module_root=True)
        for e in extra:
            if _GLOB_CHARS & set(e):
                files.update(self._glob(e, problems))
            elif e.endswith("/") or (self.root / e).is_dir():
                self._collect_dir(e.rstrip("/") or ".", set(dirs), files, problems, module_root=False)
            elif (self.root / e).is_file():
                self._add(e, files, problems)
        return tuple(sorted(files))

    def _add(self, rel: str, files: set[str], problems: list[Problem]) -> None:
        why = self.refused(rel)
        if why:
            problems.append(Problem(rel, f"{why}; refusing to ship it"))
        else:
            files.add(rel)

    def _glob(self, pattern: str, problems: list[Problem]) -> Iterator[str]:
        head = pattern.split("*")[0].split("?")[0].split("[")[0]
        base = head.rsplit("/", 1)[0] if "/" in head else "."
        found: set[str] = set()
        self._collect_dir(base, set(), found, problems, module_root=False)
        return (f for f in found if doublestar(pattern, f))

    def _collect_dir(self, rel: str, modules: set[str], files: set[str], problems: list[Problem],
                     module_root: bool, shown_as: str = "") -> None:
        """Files of a directory and its subdirectories, except other modules' and other deployments'.

        A symlinked directory inside the repository is walked where it points and its files shipped
        under the link's path (`shown_as`), with the same filters."""
        top = self.root / rel
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            inner = os.path.relpath(dirpath, top).replace(os.sep, "/")
            here = posixpath.normpath(posixpath.join(shown_as or rel, inner))
            kept = []
            for d in sorted(dirnames):
                sub = posixpath.normpath(posixpath.join(here, d))
                if d in EXCLUDE_DIRS or sub in modules:
                    continue  # a called module is collected as itself
                if os.path.islink(os.path.join(dirpath, d)):
                    why = self.refused(sub)
                    if why:
                        problems.append(Problem(sub, f"{why}; refusing to ship it"))
                    else:
                        real = Path(os.path.realpath(self.root / sub)).relative_to(self.root).as_posix()
                        self._collect_dir(real, modules, files, problems, module_root, shown_as=sub)
                    continue
                if module_root and any(n.endswith((".tf", ".tf.json")) for n in os.listdir(os.path.join(dirpath, d))):
                    continue  # another module that this one does not call
                kept.append(d)
            dirnames[:] = kept
            for f in filenames:
                if ships(f):  # never state, plans, or another deployment's tfvars
                    self._add(posixpath.normpath(posixpath.join(here, f)), files, problems)
