"""The embedded default: a directory. Terraform uses its `local` backend via a generated override."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from orchestrator import keys
from orchestrator.errors import StoreError
from orchestrator.fsutil import atomic_write
from orchestrator.store.base import KeyStamp, ObjectInfo, Store

KEY_FILE = ".tfo-key"
KEY_ENV = "TFO_STORE_ENCRYPTION_KEY"


def _safe_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"refusing unsafe store key {key!r}")
    return key


class LocalStore(Store):
    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"local store {self.root} cannot be created: {e.strerror}") from e
        self._fernet = Fernet(self._load_key())

    def _load_key(self) -> bytes:
        from_env = os.environ.get(KEY_ENV)
        if from_env:
            return from_env.encode()
        path = self.root / KEY_FILE
        try:
            return path.read_bytes().strip()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StoreError(f"encryption key {path} cannot be read: {e.strerror}") from e
        try:
            return self._create_key(path)
        except OSError as e:
            raise StoreError(f"encryption key {path} cannot be created: {e.strerror}") from e

    def _create_key(self, path: Path) -> bytes:
        """A new store's key, created whole or not at all: two first runs at once must agree on one key.

        The key is written to a temporary file (0600) and linked into place; linking fails if another
        process got there first, and then its key is the store's.
        """
        with contextlib.suppress(FileExistsError):  # another process won: its key is the store's
            atomic_write(path, Fernet.generate_key(), exclusive=True)
        return path.read_bytes().strip()

    def _path(self, key: str) -> Path:
        return self.root / _safe_key(key)

    def _meta_path(self, key: str) -> Path:
        p = self._path(key)
        return p.with_name(p.name + ".tfo-meta.json")

    def _atomic_write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)

    def put(self, key: str, data: bytes, *, metadata: dict[str, str] | None = None) -> None:
        encrypt = keys.encrypted_at_rest(key)
        body = self._fernet.encrypt(data) if encrypt else data
        meta = {"metadata": metadata or {}, "encrypted": "fernet" if encrypt else ""}
        try:
            self._atomic_write(self._meta_path(key), json.dumps(meta).encode())
            self._atomic_write(self._path(key), body)
        except OSError as e:
            raise StoreError(f"cannot write {key} to local store {self.root}: {e.strerror or e}") from e

    def _meta(self, key: str) -> dict[str, object]:
        try:
            loaded = json.loads(self._meta_path(key).read_text())
            return loaded if isinstance(loaded, dict) else {}
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def get(self, key: str) -> bytes:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None
        except OSError as e:
            raise StoreError(f"cannot read {key} from local store {self.root}: {e.strerror}") from e
        if self._meta(key).get("encrypted") == "fernet":
            try:
                return self._fernet.decrypt(data)
            except InvalidToken as e:
                raise StoreError(f"{key}: cannot decrypt (wrong {KEY_ENV} or {KEY_FILE}?)") from e
        return data

    def head(self, key: str) -> ObjectInfo | None:
        p = self._path(key)
        try:
            st = p.stat()
        except FileNotFoundError:
            return None
        meta = self._meta(key)
        md = meta.get("metadata")
        return ObjectInfo(
            key=key,
            size=st.st_size,
            last_modified=datetime.fromtimestamp(st.st_mtime, UTC).isoformat(),
            metadata=dict(md) if isinstance(md, dict) else {},
            encrypted=str(meta.get("encrypted", "")),
        )

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        base = self.root / prefix
        directory = base if prefix.endswith("/") else base.parent
        if not directory.is_dir():
            return []
        out = []
        for p in directory.rglob("*"):
            if not p.is_file() or p.name.endswith(".tfo-meta.json") or p.name.startswith(".tmp-"):
                continue
            key = p.relative_to(self.root).as_posix()
            if key.startswith(prefix) and key != KEY_FILE:
                info = self.head(key)
                if info:
                    out.append(info)
        return sorted(out, key=lambda o: o.key)

    def _listed(self, name: str) -> bool:
        return not (name.endswith(".tfo-meta.json") or name.startswith(".tmp-") or name == KEY_FILE)

    def list_keys(self, prefix: str, start_after: str = "") -> list[KeyStamp]:
        base = self.root / prefix
        directory = base if prefix.endswith("/") else base.parent
        out = []
        for dirpath, _, files in os.walk(directory):
            for name in files:
                if not self._listed(name):
                    continue
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix) or key <= start_after:
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:  # replaced or deleted meanwhile
                    continue
                out.append(KeyStamp(key, f"{st.st_mtime_ns}-{st.st_size}"))
        return sorted(out, key=lambda k: k.key)

    def list_children(self, prefix: str, start_after: str = "") -> list[str]:
        try:
            entries = list(os.scandir(self.root / prefix))
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = [e.name + "/" if e.is_dir() else e.name for e in entries if self._listed(e.name)]
        return sorted(n for n in names if prefix + n > start_after)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
        self._meta_path(key).unlink(missing_ok=True)

    # --- state ----------------------------------------------------------------------------------
    def read_state(self, state_key: str) -> bytes | None:
        try:
            data = self._path(state_key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"cannot read state {state_key}: {e.strerror}") from e
        return data or None

    def _copy_state_to_backup(self, state_key: str, backup_key: str, metadata: dict[str, str]) -> str:
        data = self.read_state(state_key) or b""
        digest = hashlib.sha256(data).hexdigest()
        self.put(backup_key, data, metadata={**metadata, "source-sha256": digest})
        return f"sha256:{digest}"

    def restore_state(self, state_key: str, data: bytes | None) -> None:
        path = self._path(state_key)
        try:
            if data is None:
                path.unlink(missing_ok=True)
                Path(str(path) + ".backup").unlink(missing_ok=True)
            else:
                self._atomic_write(path, data)
        except OSError as e:
            raise StoreError(f"cannot restore state {state_key}: {e.strerror}") from e

    # --- terraform backend ----------------------------------------------------------------------
    def backend_files(self, state_key: str) -> dict[str, str]:
        state_path = self._path(state_key)
        state_path.parent.mkdir(parents=True, exist_ok=True)
        # Overrides the module's `backend "s3" {}` so the same module runs against the local store.
        return {
            "backend_override.tf": 'terraform {\n  backend "local" {\n'
            f"    path = {json.dumps(str(state_path))}\n  }}\n}}\n"
        }

    def backend_config(self, state_key: str, region: str) -> dict[str, str]:
        return {}

    def describe(self) -> str:
        return f"local store {self.root}"
