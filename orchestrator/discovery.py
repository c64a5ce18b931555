"""Which tfvars files a run is about: from paths, a changed-files list or a git diff."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from orchestrator import git
from orchestrator.config import TfoConfig
from orchestrator.errors import Problem
from orchestrator.models import TfvarsFile
from orchestrator.modules import EXCLUDE_DIRS
from orchestrator.names import unsafe_name_reason

_PLACEHOLDER = re.compile(r"(\*\*/)|\{(account|project|region)\}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class Discovery:
    files: tuple[TfvarsFile, ...] = ()  # every deployment of these files is selected
    skipped: tuple[Skipped, ...] = ()
    problems: tuple[Problem, ...] = field(default=())
    # Changed paths that are no deployment file (a module, a layer, a referenced file): they select the
    # deployments of `candidates` (every deployment file) whose inputs hold them.
    changed_inputs: tuple[str, ...] = ()
    candidates: tuple[TfvarsFile, ...] = ()
    # Selected by what changed (--changed-files, --git-diff): then what depends on a selected deployment
    # is selected too (its inputs, the upstream's outputs, may change).
    by_change: bool = False


@functools.lru_cache(maxsize=16)
def template_regex(template: str) -> re.Pattern[str]:
    """The template as a regex; `**/` spans any number of directories."""
    out = []
    pos = 0
    for m in _PLACEHOLDER.finditer(template):
        out.append(re.escape(template[pos:m.start()]))
        out.append("(?:[^/]+/)*" if m.group(1) else f"(?P<{m.group(2)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


def template_glob(template: str) -> str:
    return re.sub(r"\{(account|project|region)\}", "*", template)


def match_template(cfg: TfoConfig, rel: str) -> TfvarsFile | None:
    if rel.rsplit("/", 1)[-1] in cfg.layers:
        return None  # a layer under other files, not a deployment of its own
    m = template_regex(cfg.path_template).fullmatch(rel)
    if not m:
        return None
    groups = m.groupdict()
    return TfvarsFile(path=rel, account=groups["account"], project=groups.get("project") or "",
                      region=groups.get("region"))


def _inside(root: Path, p: Path) -> bool:
    try:
        p.relative_to(root)
    except ValueError:
        return False
    return True


class _Collector:
    def __init__(self, cfg: TfoConfig) -> None:
        self.cfg = cfg
        self.root = cfg.repo_root.resolve()
        self.files: dict[str, TfvarsFile] = {}
        self.skipped: list[Skipped] = []
        self.problems: list[Problem] = []
        self._real_dirs: dict[str, str] = {}
        self._all: list[str] | None = None
        self.changed_inputs: list[str] = []

    def _realpath(self, rel: str) -> Path:
        """(root / rel).resolve(), with each directory resolved once: 10,000 files live in a few dirs."""
        parent, _, name = rel.rpartition("/")
        real_parent = self._real_dirs.get(parent)
        if real_parent is None:
            real_parent = self._real_dirs[parent] = os.path.realpath(self.root / parent)
        full = os.path.join(real_parent, name)
        return Path(os.path.realpath(full) if os.path.islink(full) else full)

    def _rel(self, shown: str, candidate: Path) -> str | None:
        """Repo-relative POSIX path of `candidate`, or None (with a problem) when it leaves the repo."""
        if ".." in PurePosixPath(shown).parts:
            self.problems.append(Problem(shown, "path contains '..'; only paths inside the repository are accepted"))
            return None
        absolute = candidate if candidate.is_absolute() else Path.cwd() / candidate
        resolved = absolute.resolve()
        if not _inside(self.root, resolved):
            self.problems.append(Problem(shown, f"is outside the repository {self.root} (symlinks are followed)"))
            return None
        # Keep the path as written when it is inside the repo (an in-repo symlink keeps its own name).
        try:
            return absolute.relative_to(self.root).as_posix()
        except ValueError:
            return resolved.relative_to(self.root).as_posix()

    def add_tfvars(self, shown: str, rel: str) -> None:
        if _CONTROL.search(rel):
            self.problems.append(Problem(repr(shown), "path contains control characters"))
            return
        # Every way in (paths, lists, git, the glob of all files) ends here: a symlink leaving the
        # repository is refused whichever way it was found.
        if not _inside(self.root, self._realpath(rel)):
            self.problems.append(Problem(rel, f"is outside the repository {self.root} (symlinks are followed)"))
            return
        tf = match_template(self.cfg, rel)
        if tf is None:
            why = ("is a layer (layers): it selects the deployments beneath it"
                   if rel.rsplit("/", 1)[-1] in self.cfg.layers
                   else f"does not match path_template {self.cfg.path_template!r}")
            self.skipped.append(Skipped(rel, why))
            return
        for label, name in (("account", tf.account), ("project", tf.project), ("region", tf.region)):
            if name is None or (label == "project" and "{project}" not in self.cfg.path_template):
                continue
            reason = unsafe_name_reason(name)
            if reason:
                self.problems.append(Problem(rel, f"{label} name {reason}"))
                return
        self.files[rel] = tf

    def all_tfvars(self) -> list[str]:
        if self._all is None:
            cut = len(str(self.root)) + 1
            found = {str(p)[cut:].replace(os.sep, "/") for p in self.root.glob(template_glob(self.cfg.path_template))
                     if p.is_file()}
            regex = template_regex(self.cfg.path_template)
            self._all = sorted(f for f in found if regex.fullmatch(f) and not _hidden(f))
        return self._all

    def add_path(self, given: str) -> None:
        candidate = Path(given)
        if not candidate.is_absolute() and not candidate.exists() and (self.root / candidate).exists():
            candidate = self.root / candidate
        rel = self._rel(given, candidate)
        if rel is None:
            return
        full = self.root / rel
        if full.is_dir():
            prefix = "" if rel == "." else rel.rstrip("/") + "/"
            for tfvars in self.all_tfvars():
                if tfvars.startswith(prefix):
                    self.add_tfvars(tfvars, tfvars)
        elif full.is_file():
            if not rel.endswith((".tfvars", ".tfvars.json")):
                self.problems.append(Problem(given, "is not a .tfvars or .tfvars.json file"))
            else:
                self.add_tfvars(given, rel)
        else:
            self.problems.append(Problem(given, "does not exist"))

    def add_changed(self, paths: Iterable[tuple[str, str]]) -> None:
        """(status, path) pairs as git reports them, paths relative to the repo root."""
        for status, raw in paths:
            given = raw.strip()
            if not given or given.startswith("#"):
                continue
            rel = self._rel(given, self.root / given if not Path(given).is_absolute() else Path(given))
            if rel is None:
                continue
            deleted = status == "D" or not (self.root / rel).exists()
            if match_template(self.cfg, rel) is not None:
                if deleted:
                    self.skipped.append(
                        Skipped(rel, "deleted: tfo never destroys on deletion; destroy the deployment explicitly")
                    )
                else:
                    self.add_tfvars(given, rel)
                continue
            # A module, a layer, a referenced file, anything else: the deployments that need it are found
            # once every deployment's inputs are known (sharding).
            self.changed_inputs.append(rel)

    def result(self) -> Discovery:
        candidates: tuple[TfvarsFile, ...] = ()
        if self.changed_inputs:
            whole = dict(self.files)
            self.files = {}
            for tfvars in self.all_tfvars():
                self.add_tfvars(tfvars, tfvars)
            candidates = tuple(self.files[k] for k in sorted(self.files))
            self.files = whole
        return Discovery(
            files=tuple(self.files[k] for k in sorted(self.files)),
            skipped=tuple(self.skipped),
            problems=tuple(self.problems),
            changed_inputs=tuple(dict.fromkeys(self.changed_inputs)),
            candidates=candidates,
        )


def _hidden(rel: str) -> bool:
    """Inside tfo's own or Terraform's working directories (a checkout may hold .tfo/work/...)."""
    return any(part in EXCLUDE_DIRS for part in rel.split("/")[:-1])


def read_changed_files(text: str) -> list[tuple[str, str]]:
    """A `git diff --name-only` style list, one path per line; a tab-separated status column is accepted."""
    pairs: list[tuple[str, str]] = []
    for line in text.splitlines():
        if "\t" in line and len(line.split("\t", 1)[0]) <= 4 and line.split("\t", 1)[0][:1].isalpha():
            status, path = line.split("\t", 1)
            paths = path.split("\t")
            if status[:1].upper() in "RC" and len(paths) == 2:  # a rename (or copy): what left matters too
                pairs += [("D" if status[:1].upper() == "R" else "A", paths[0]), ("A", paths[1])]
            else:
                pairs.append((status[:1].upper(), paths[-1]))
        else:
            pairs.append(("M", line))
    return pairs


def discover(
    cfg: TfoConfig,
    paths: Sequence[str] = (),
    changed_files: str | None = None,
    git_diff: str | None = None,
) -> Discovery:
    c = _Collector(cfg)
    for p in paths:
        c.add_path(p)
    if changed_files is not None:
        c.add_changed(read_changed_files(changed_files))
    if git_diff:
        c.add_changed((cp.status, cp.path) for cp in git.changed_paths(cfg.repo_root, git_diff))
    if not paths and changed_files is None and not git_diff:
        for tfvars in c.all_tfvars():
            c.add_tfvars(tfvars, tfvars)
    found = c.result()
    return replace(found, by_change=True) if changed_files is not None or git_diff else found
