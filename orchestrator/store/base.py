"""What every store offers: objects (state, backups, bundles, pointers, runs, audit) and state helpers.

The key layout, and what each namespace means (encrypted at rest, audit bucket), is `orchestrator.keys`:
a store decides both from the key, so no caller can forget to encrypt what holds values.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from orchestrator import keys
from orchestrator.errors import StateBackupError, StoreError


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: str
    metadata: dict[str, str] = field(default_factory=dict)
    encrypted: str = ""  # how it is encrypted at rest: "AES256", "aws:kms", "fernet" or ""


@dataclass(frozen=True)
class KeyStamp:
    """A key from a listing, with a stamp that changes whenever the object does (S3's ETag; locally its
    size and modification time): enough to tell what to read again, without reading or heading anything."""

    key: str
    stamp: str


@dataclass(frozen=True)
class BackupInfo:
    key: str
    source_version: str  # S3 version id of the backed-up state, or a content digest locally
    empty: bool  # there was no state yet: restoring this backup removes the state


class Store(ABC):
    kind: str

    # --- plain objects ---------------------------------------------------------------------------
    @abstractmethod
    def put(self, key: str, data: bytes, *, metadata: dict[str, str] | None = None) -> None:
        """Write an object, encrypted at rest when its namespace says so (`keys.encrypted_at_rest`)."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes (decrypted); KeyError when it does not exist."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    def list_objects(self, prefix: str) -> list[ObjectInfo]: ...

    @abstractmethod
    def list_keys(self, prefix: str, start_after: str = "") -> list[KeyStamp]:
        """Every key under `prefix` (those after `start_after`), sorted, with its stamp: one listing."""

    @abstractmethod
    def list_children(self, prefix: str, start_after: str = "") -> list[str]:
        """The names one level below `prefix` (a `prefix` ending in "/"), sorted: objects by name ("x.json"),
        deeper keys by their next part with a slash ("x/"); only those whose key sorts after `start_after`."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def put_json(self, key: str, obj: Any, **kw: Any) -> None:
        self.put(key, json.dumps(obj, indent=2, sort_keys=True, default=str).encode(), **kw)

    def get_json(self, key: str) -> Any:
        return json.loads(self.get(key))

    # --- state ----------------------------------------------------------------------------------
    @abstractmethod
    def read_state(self, state_key: str) -> bytes | None:
        """Current state bytes, None when the deployment has no state yet."""

    @abstractmethod
    def _copy_state_to_backup(self, state_key: str, backup_key: str, metadata: dict[str, str]) -> str:
        """Copy the state object to `backup_key` encrypted; return the source version id."""

    @abstractmethod
    def restore_state(self, state_key: str, data: bytes | None) -> None:
        """Replace (or, with None, remove) the state object, keeping Terraform's bookkeeping valid."""

    def backup_state(self, state_key: str, metadata: dict[str, str]) -> BackupInfo:
        """Encrypted copy of the current state; raises StateBackupError so no apply runs without one."""
        key = keys.backup(state_key)
        try:
            if self.read_state(state_key) is None:
                self.put(key, b"", metadata={**metadata, "tfo-empty": "true"})
                return BackupInfo(key, "", True)
            version = self._copy_state_to_backup(state_key, key, {**metadata, "tfo-empty": "false"})
        except StoreError as e:
            raise StateBackupError(f"backup of {state_key} to {key} failed: {e}") from e
        except Exception as e:
            raise StateBackupError(f"backup of {state_key} to {key} failed: {type(e).__name__}: {e}") from e
        info = self.head(key)
        if info is None:
            raise StateBackupError(f"backup of {state_key} to {key} reported success but the object is missing")
        return BackupInfo(key, version, False)

    def list_backups(self, state_key: str) -> list[ObjectInfo]:
        return sorted(self.list_objects(keys.backups_of(state_key)), key=lambda o: o.key)

    def read_backup(self, backup_key: str) -> bytes | None:
        """The backed-up state, None for a backup that records 'there was no state'."""
        info = self.head(backup_key)
        if info is None:
            raise KeyError(backup_key)
        if info.metadata.get("tfo-empty") == "true":
            return None
        return self.get(backup_key)

    # --- terraform backend ----------------------------------------------------------------------
    @abstractmethod
    def backend_files(self, state_key: str) -> dict[str, str]:
        """Files to write into a deployment directory (e.g. a backend override)."""

    @abstractmethod
    def backend_config(self, state_key: str, region: str) -> dict[str, str]:
        """`-backend-config` pairs for `terraform init`."""

    @abstractmethod
    def describe(self) -> str: ...
