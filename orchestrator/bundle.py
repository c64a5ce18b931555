"""Content-addressed bundles: exactly the files one deployment needs, so any host can rebuild its directory.

A bundle is a deterministic tar.gz (sorted entries, zero mtimes and owners) of the module, the
deployment's filtered tfvars and the local files they reference. Its key is the SHA-256 of its bytes,
so the same inputs always give the same key and a bundle is uploaded once.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path, PurePosixPath

from orchestrator.config import TfoConfig
from orchestrator.errors import StoreError
from orchestrator.models import DeploymentSpec
from orchestrator.store.base import Store

TFVARS_NAME = "tfo.tfvars.json"
SPEC_NAME = "tfo-spec.json"
# Never ship local Terraform working state or our own generated files from a module directory.
EXCLUDE_DIRS = {".terraform", ".git", ".tfo"}
EXCLUDE_SUFFIXES = (".tfstate", ".tfstate.backup", ".tfplan")
EXCLUDE_NAMES = {"backend_override.tf", TFVARS_NAME, SPEC_NAME, "tfplan"}


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def module_files(module_dir: Path) -> list[Path]:
    files = []
    for p in sorted(module_dir.rglob("*")):
        rel = p.relative_to(module_dir)
        if any(part in EXCLUDE_DIRS for part in rel.parts):
            continue
        if p.is_file() and not p.name.endswith(EXCLUDE_SUFFIXES) and p.name not in EXCLUDE_NAMES:
            files.append(p)
    return files


def build_bundle(cfg: TfoConfig, spec: DeploymentSpec) -> bytes:
    root = cfg.repo_root
    module_dir = root / spec.module_dir
    raw = io.BytesIO()
    # gzip with mtime=0 so identical inputs give identical bytes.
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for f in module_files(module_dir):
            mode = 0o755 if f.stat().st_mode & 0o111 else 0o644
            _add(tar, f.relative_to(module_dir).as_posix(), f.read_bytes(), mode)
        for rel in spec.referenced_files:
            _add(tar, f"inputs/{rel}", (root / rel).read_bytes())
        _add(tar, TFVARS_NAME, json.dumps(spec.variables, indent=2, sort_keys=True).encode())
        meta = {k: v for k, v in spec.to_dict().items() if k not in ("bundle_key", "variables")}
        _add(tar, SPEC_NAME, json.dumps(meta, indent=2, sort_keys=True).encode())
    return raw.getvalue()


def bundle_key(data: bytes) -> str:
    return f"bundles/sha256/{hashlib.sha256(data).hexdigest()}.tar.gz"


def upload_bundle(store: Store, data: bytes) -> str:
    key = bundle_key(data)
    if store.head(key) is None:
        store.put(key, data)
    return key


def fetch_bundle(store: Store, key: str) -> bytes:
    try:
        data = store.get(key)
    except KeyError as e:
        raise StoreError(f"bundle {key} is missing from {store.describe()}") from e
    expected = key.rsplit("/", 1)[-1].removesuffix(".tar.gz")
    if hashlib.sha256(data).hexdigest() != expected:
        raise StoreError(f"bundle {key} does not match its digest: the store returned corrupt data")
    return data


def extract_bundle(data: bytes, dest: Path) -> None:
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
