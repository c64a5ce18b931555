"""Validate discovered tfvars and shard each into deployments: one per service (or per file).

A deployment's inputs are its root module (with the local modules it calls and the files they read),
the layers under its file (`layers`), the file itself and the files its values name (`*_file` keys).
Its var files are cut from the original texts, so Terraform reads exactly what is written.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, replace

from orchestrator import dependencies
from orchestrator.config import PLACEHOLDER, TfoConfig
from orchestrator.discovery import Discovery, Skipped, discover
from orchestrator.errors import Problem, ValidationError
from orchestrator.models import DeploymentSpec, TfvarsFile
from orchestrator.modules import ModuleGraph, RootModule, is_module_dir
from orchestrator.names import unsafe_name_reason
from orchestrator.tfvars import ParsedTfvars, TfvarsAttribute, TfvarsReader

VAR_FILES_DIR = ".tfo/vars"  # inside a bundle: the deployment's var files, in -var-file order


def state_key(service: str, account: str, region: str, project: str, namespace: str = "") -> str:
    return "/".join(p for p in (namespace, service, account, region, project) if p) + "/terraform.tfstate"


def deployment_id(service: str, account: str, region: str, project: str) -> str:
    return "/".join(p for p in (service, account, region, project) if p)


@dataclass(frozen=True)
class Deployments:
    specs: tuple[DeploymentSpec, ...]
    warnings: tuple[Problem, ...] = ()
    skipped: tuple[Skipped, ...] = ()  # changed paths that are no deployment's input


class _Sharder:
    def __init__(self, cfg: TfoConfig) -> None:
        self.cfg = cfg
        self.root = cfg.repo_root.resolve()
        self._root_str = str(self.root)
        self.graph = ModuleGraph.for_config(cfg)
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self._parsed: dict[str, ParsedTfvars] = {}
        self.reader = TfvarsReader(cfg.file_keys, cfg.cache_path)
        self._modules: dict[str, RootModule | None] = {}
        self.needs: dict[str, tuple[RootModule, tuple[str, ...]]] = {}  # spec id -> what it is built from
        self.explicit: dict[str, tuple[tuple[str, ...], int]] = {}  # spec id -> its tfo_depends_on, line

    # inputs ----------------------------------------------------------------------------------------
    def parsed(self, rel: str) -> ParsedTfvars:
        if rel not in self._parsed:
            p = self._parsed[rel] = self.reader.read(os.path.join(self._root_str, rel), rel)
            self.problems.extend(p.problems)
            self.warnings.extend(p.warnings)
        return self._parsed[rel]

    def layers(self, tf: TfvarsFile) -> list[str] | None:
        """Layer files from the repository root down to the deployment file's directory (None: refused)."""
        if not self.cfg.layers:
            return []
        found = []
        parts = tf.path.split("/")[:-1]
        for depth in range(len(parts) + 1):
            for name in self.cfg.layers:
                rel = "/".join([*parts[:depth], name])
                if not (self.root / rel).is_file():
                    continue
                why = self.graph.refused(rel)
                if why:
                    self.problems.append(Problem(rel, f"layer {why}"))
                    return None
                found.append(rel)
        return found

    def root_module(self, template: str, tf: TfvarsFile, service: str) -> RootModule | None:
        path = template
        if "{" in template:  # placeholders: this file's names; else no regex work per deployment
            names = {"account": tf.account, "project": tf.project, "region": tf.region or ""}
            path = PLACEHOLDER.sub(lambda m: names[m.group(1)], template)
        rel = posixpath.normpath(path)
        if rel not in self._modules:
            self._modules[rel] = self._inspect(rel, template, service)
        return self._modules[rel]

    def _inspect(self, rel: str, template: str, service: str) -> RootModule | None:
        full = self.root / rel
        shown = f"{template!r}" + (f" ({rel})" if rel != template else "")
        what = f" for service {service!r}" if service else ""
        why = self.graph.refused(rel)
        if why:
            self.problems.append(Problem(rel, f"module directory {shown}{what} {why}"))
            return None
        if not is_module_dir(full):
            self.problems.append(Problem(rel, f"module directory {shown}{what} has no .tf files"))
            return None
        module = self.graph.root_module(rel)
        self.problems.extend(module.problems)
        self.warnings.extend(module.warnings)
        return None if module.problems else module

    def file_paths(self, parsed: ParsedTfvars, attrs: Iterable[TfvarsAttribute]) -> dict[str, str] | None:
        """Each file reference's value -> repo-relative path; problems for the missing and the outside."""
        base = posixpath.dirname(parsed.path)
        found: dict[str, str] = {}
        ok = True
        for a in attrs:
            for ref in a.file_refs:
                line = parsed.text.count("\n", 0, ref.start) + 1
                if posixpath.isabs(ref.value) or ref.value.startswith("~"):
                    self.problems.append(Problem(parsed.path, f"{ref.where}: {ref.value!r} is an absolute path; refer "
                                                              "to files relative to the tfvars file", line))
                    ok = False
                    continue
                target = posixpath.normpath(posixpath.join(base, ref.value))
                why = self.graph.refused(target)
                if why:
                    self.problems.append(Problem(parsed.path, f"{ref.where}: {ref.value!r} ({target}) {why}", line))
                    ok = False
                    continue
                if not (self.root / target).is_file():
                    self.problems.append(Problem(parsed.path, f"{ref.where}: referenced file {ref.value!r} "
                                                              f"({target}) does not exist", line))
                    ok = False
                    continue
                found[ref.value] = target
        return found if ok else None

    def affects(self, spec: DeploymentSpec, path: str) -> bool:
        """Whether a change to `path` (added, changed, deleted or renamed) can change the deployment."""
        module, inputs = self.needs[spec.id]
        if path in inputs or module.needs(path):
            return True
        # a layer that was deleted or renamed away is in no deployment's inputs any more
        folder, _, name = path.rpartition("/")
        return name in self.cfg.layers and (not folder or spec.tfvars_path.startswith(folder + "/"))

    # sharding --------------------------------------------------------------------------------------
    def shard(self, tf: TfvarsFile) -> list[DeploymentSpec]:
        own = self.parsed(tf.path)
        if own.problems:
            return []
        layer_paths = self.layers(tf)
        if layer_paths is None:
            return []
        layers = [self.parsed(rel) for rel in layer_paths]
        if any(layer.problems for layer in layers):
            return []
        if not own.attributes:
            return []  # a file that sets nothing (only comments): warned about, nothing to deploy
        files = [*layers, own]
        merged: dict[str, TfvarsAttribute] = {}
        for f in files:
            merged.update({a.name: a for a in f.attributes})
        targets: tuple[tuple[str, ...], int] = ((), 0)
        given = merged.get(dependencies.OUTPUTS_VARIABLE)
        if given is not None:  # tfo sets it from the upstreams' states; a value here would shadow theirs
            self.problems.append(Problem(tf.path, f"{dependencies.OUTPUTS_VARIABLE} is set by tfo (the outputs of "
                                                  "the deployments this one depends on); do not set it in tfvars",
                                         given.line))
            return []
        reserved = merged.pop(dependencies.RESERVED, None)  # tfo's, never terraform's
        if reserved is not None:
            found, problems = dependencies.explicit_targets(reserved.value if reserved.known else None,
                                                             reserved.line, tf.path)
            if problems:
                self.problems.extend(problems)
                return []
            targets = (found, reserved.line)
        region = self.region(tf, merged)
        if region is None:
            return []
        if self.cfg.shard_by == "file":
            groups: dict[str, set[str]] = {"": set(merged)}
        else:
            groups = {}
            for a in own.attributes:
                service = self.cfg.services.get(a.name)
                if service is not None:
                    groups.setdefault(service, set())
            if not groups:
                known = ", ".join(sorted(self.cfg.services))
                self.problems.append(Problem(tf.path, f"sets no known service variable (known: {known}); to make "
                                                      "every file one deployment, set shard_by = \"file\""))
                return []
            for name in merged:
                service = self.cfg.services.get(name)
                for g, names in groups.items():
                    if service is None or service == g:
                        names.add(name)
        specs = []
        for service in sorted(groups):
            if service:
                reason = unsafe_name_reason(service)
                if reason:
                    self.problems.append(Problem(tf.path, f"service {reason}"))
                    continue
            spec = self.deployment(tf, service, region, files, groups[service], merged)
            if spec is not None:
                specs.append(spec)
                if targets[0]:
                    self.explicit[spec.id] = targets
        return specs

    def region(self, tf: TfvarsFile, merged: dict[str, TfvarsAttribute]) -> str | None:
        region = tf.region
        if region is None:
            region = self.cfg.default_region
            for name in self.cfg.region_variables:
                if name in merged:
                    a = merged[name]
                    if not a.known or not isinstance(a.value, str):
                        self.problems.append(Problem(tf.path, f"{name} gives the region and must be a plain string",
                                                     a.line))
                        return None
                    region = a.value
                    break
        reason = unsafe_name_reason(region)
        if reason:
            self.problems.append(Problem(tf.path, f"region {reason}"))
            return None
        return region

    def deployment(self, tf: TfvarsFile, service: str, region: str, files: list[ParsedTfvars], names: set[str],
                   merged: dict[str, TfvarsAttribute]) -> DeploymentSpec | None:
        module = self.root_module(self.cfg.module_for(service) if service else self.cfg.module_dir, tf, service)
        if module is None:
            return None
        var_files: list[tuple[str, str]] = []
        referenced: set[str] = set()
        for i, f in enumerate(files):
            chosen = [a for a in f.attributes if a.name in names]
            if not chosen:
                continue
            in_workdir: dict[str, str] = {}
            if any(a.file_refs for a in chosen):
                paths = self.file_paths(f, chosen)
                if paths is None:
                    return None
                referenced.update(paths.values())
                in_workdir = {value: posixpath.relpath(target, module.dir) for value, target in paths.items()}
            var_files.append((f"{VAR_FILES_DIR}/{i:02d}-{posixpath.basename(f.path)}", f.var_file(names, in_workdir)))
        did = deployment_id(service, tf.account, region, tf.project)
        self.needs[did] = (module, tuple([f.path for f in files] + sorted(referenced)))
        return DeploymentSpec(
            id=did,
            service=service,
            account=tf.account,
            region=region,
            project=tf.project,
            state_key=state_key(service, tf.account, region, tf.project, self.cfg.namespace),
            namespace=self.cfg.namespace,
            tfvars_path=tf.path,
            module_dir=module.dir,
            variables={n: merged[n].value for n in merged if n in names},
            referenced_files=tuple(sorted(referenced)),
            sensitive_variables=module.sensitive,
            layers=tuple(f.path for f in files[:-1]),
            var_files=tuple(var_files),
        )


def build_deployments(cfg: TfoConfig, discovery: Discovery) -> Deployments:
    """Every selected deployment, or ValidationError listing every problem found."""
    sharder = _Sharder(cfg)
    sharder.problems.extend(discovery.problems)
    specs: list[DeploymentSpec] = []
    for tf in discovery.files:
        specs.extend(sharder.shard(tf))
    skipped: list[Skipped] = []
    if discovery.changed_inputs:
        whole = {tf.path for tf in discovery.files}
        touched: set[str] = set()
        for tf in discovery.candidates:
            if tf.path in whole:
                continue
            for spec in sharder.shard(tf):
                hits = {p for p in discovery.changed_inputs if sharder.affects(spec, p)}
                if hits:
                    specs.append(spec)
                    touched |= hits
        for spec in specs:  # what the whole-selected files use counts as used too
            touched |= {p for p in discovery.changed_inputs if sharder.affects(spec, p)}
        skipped = [Skipped(p, "not an input of any deployment (no module, layer or referenced file of one)")
                   for p in discovery.changed_inputs if p not in touched]
    seen_ids: dict[str, str] = {}
    seen_keys: dict[str, str] = {}
    for spec in specs:
        if spec.id in seen_ids:
            sharder.problems.append(Problem(spec.tfvars_path, f"deployment {spec.id} is also defined by "
                                                              f"{seen_ids[spec.id]}"))
        elif spec.state_key in seen_keys:
            sharder.problems.append(Problem(spec.tfvars_path, f"state key {spec.state_key} is also used by "
                                                              f"{seen_keys[spec.state_key]}"))
        seen_ids[spec.id] = seen_keys[spec.state_key] = spec.tfvars_path
    try:
        if not sharder.problems and (cfg.dependencies or sharder.explicit or discovery.by_change):
            everything = discover(cfg)  # once: for the quick look below and for the dependency pass
            if cfg.dependencies or sharder.explicit or _mention(cfg, everything, dependencies.RESERVED):
                specs = _with_dependencies(cfg, sharder, discovery, everything, specs)
    finally:
        sharder.reader.close()  # after the repository's other files were read too: their readings are cached
    if sharder.problems:
        raise ValidationError(list(dict.fromkeys(sharder.problems)), list(dict.fromkeys(sharder.warnings)))
    return Deployments(tuple(specs), tuple(dict.fromkeys(sharder.warnings)), tuple(skipped))


def _with_dependencies(cfg: TfoConfig, sharder: _Sharder, discovery: Discovery, everything: Discovery,
                       specs: list[DeploymentSpec]) -> list[DeploymentSpec]:
    """The specs with their `depends_on`, resolved against every deployment of the repository (a target
    need not be selected). Files not selected are read for their ids and edges only: their problems are
    not this selection's (they are said when they are selected, and by `tfo validate`)."""
    selected_files = {tf.path for tf in discovery.files}
    repository = list(specs)
    problems, warnings = list(sharder.problems), list(sharder.warnings)
    for tf in everything.files:
        if tf.path not in selected_files:
            repository.extend(sharder.shard(tf))
    sharder.problems[:], sharder.warnings[:] = problems, warnings
    chosen_ids = {s.id for s in specs}
    others = [s for s in repository if s.id not in chosen_ids]
    if discovery.by_change:
        # What depends on a changed deployment reads its outputs, which the change may move: planned too.
        # (The whole repository's edges; the mistakes of files not selected are not this run's.)
        edges, _ = dependencies.resolve(cfg, repository, [], sharder.explicit)
        graph = dependencies.graph_of(edges)
        by_id = {s.id: s for s in others}
        for spec in specs:
            for dependent in sorted(graph.dependents([spec.id]) - chosen_ids):
                if dependent in by_id:
                    chosen_ids.add(dependent)
                    specs.append(replace(by_id.pop(dependent), selected_because=f"{spec.id} changed"))
        others = list(by_id.values())
    resolved, found = dependencies.resolve(cfg, specs, others, sharder.explicit)
    sharder.problems.extend(found)
    return resolved


def _mention(cfg: TfoConfig, everything: Discovery, word: str) -> bool:
    """Whether any deployment file of the repository holds `word` (a quick look before reading them all)."""
    raw = word.encode()
    for tf in everything.files:
        try:
            if raw in (cfg.repo_root / tf.path).read_bytes():
                return True
        except OSError:
            continue
    return False
