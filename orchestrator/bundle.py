"""Content-addressed bundles: exactly the files one deployment needs, so any host can rebuild its directory.

A bundle is a deterministic tar.gz (sorted entries, zero mtimes and owners) laid out as the
repository is: the root module and every local module it calls, the files they read, the files the
deployment's values name, each at its repository path, plus `.tfo/` with the deployment's var files
(cut from the original tfvars) and a description (`.tfo/spec.json`: where Terraform runs, in which
order the var files go). Nothing else: no other deployment's tfvars, no file behind a symlink that
leaves the repository. Its key is the SHA-256 of its bytes, so the same inputs give the same key; it
holds variable values, so every store keeps it encrypted (`keys.encrypted_at_rest`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from orchestrator import keys
from orchestrator.config import TfoConfig
from orchestrator.errors import StoreError, UserError
from orchestrator.models import DeploymentSpec
from orchestrator.modules import ModuleGraph
from orchestrator.store.base import Store

SPEC_NAME = ".tfo/spec.json"
LAYOUT = 2
# Bundles of layout 1 (before shared modules): the module at the top, one JSON var file beside it
# (and `tfo-spec.json`, which says nothing the workspace needs).
LEGACY_TFVARS_NAME = "tfo.tfvars.json"


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def bundle_files(cfg: TfoConfig, spec: DeploymentSpec, graph: ModuleGraph | None = None) -> list[str]:
    """Repository paths of the files a deployment's bundle carries (module files and referenced files)."""
    module = (graph or ModuleGraph.for_config(cfg)).root_module(spec.module_dir)
    if module.problems:
        raise UserError(f"{spec.id}: " + "; ".join(map(str, module.problems)))
    return sorted({*module.files, *spec.referenced_files})


def build_bundle(cfg: TfoConfig, spec: DeploymentSpec, graph: ModuleGraph | None = None) -> bytes:
    root = cfg.repo_root.resolve()
    raw = io.BytesIO()
    # gzip with mtime=0 so identical inputs give identical bytes.
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for rel in bundle_files(cfg, spec, graph):
            full = root / rel
            mode = 0o755 if full.stat().st_mode & 0o111 else 0o644
            _add(tar, rel, full.read_bytes(), mode)
        for name, text in spec.var_files:
            _add(tar, name, text.encode("utf-8"))
        # depends_on: an order, not an input of terraform (the upstream outputs come at run time)
        meta = {k: v for k, v in spec.to_dict().items()
                if k not in ("bundle_key", "variables", "var_files", "depends_on", "selected_because")}
        if not spec.namespace:  # as before namespaces existed: the same inputs keep the same digest
            meta.pop("namespace")
        meta |= {"layout": LAYOUT, "workdir": spec.module_dir, "var_files": [n for n, _ in spec.var_files]}
        _add(tar, SPEC_NAME, json.dumps(meta, indent=2, sort_keys=True).encode())
    return raw.getvalue()


def bundle_key(data: bytes) -> str:
    return keys.bundle(hashlib.sha256(data).hexdigest())


def upload_bundle(store: Store, data: bytes) -> str:
    key = bundle_key(data)
    known = store.head(key)
    if known is None or not known.encrypted:  # a bundle stored in the clear (before tfo encrypted them)
        store.put(key, data)
    return key


def fetch_bundle(store: Store, key: str) -> bytes:
    try:
        data = store.get(key)
    except KeyError as e:
        raise StoreError(f"bundle {key} is missing from {store.describe()}") from e
    if hashlib.sha256(data).hexdigest() != keys.bundle_digest(key):
        raise StoreError(f"bundle {key} does not match its digest: the store returned corrupt data")
    return data


@dataclass(frozen=True)
class Workspace:
    """An extracted bundle: where Terraform runs, and its var files relative to there."""

    root: Path
    cwd: Path
    var_files: tuple[str, ...]


def extract_bundle(data: bytes, dest: Path) -> Workspace:
    """Unpack into `dest`, refusing links and any member that would land outside it."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = PurePosixPath(member.name)
            if name.is_absolute() or ".." in name.parts or not member.isfile():
                raise StoreError(f"bundle member {member.name!r} is not a plain relative file; refusing it")
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None
            target.write_bytes(src.read())
            target.chmod(member.mode & 0o755)
    return _workspace(dest)


def _workspace(dest: Path) -> Workspace:
    spec_file = dest / SPEC_NAME
    if not spec_file.is_file():  # layout 1
        return Workspace(dest, dest, (LEGACY_TFVARS_NAME,))
    meta = json.loads(spec_file.read_text())
    workdir = str(meta.get("workdir") or ".")
    if PurePosixPath(workdir).is_absolute() or ".." in PurePosixPath(workdir).parts:
        raise StoreError(f"bundle names workdir {workdir!r}, which is not inside it; refusing it")
    cwd = dest / workdir
    names = [str(v) for v in meta.get("var_files", ())]
    if any(PurePosixPath(n).is_absolute() or ".." in PurePosixPath(n).parts for n in names):
        raise StoreError(f"bundle names var files outside it ({names}); refusing it")
    return Workspace(dest, cwd, tuple(posixpath.relpath(n, workdir) for n in names))
