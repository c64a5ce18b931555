"""Stores: where state, backups, bundles, pointers, run records and audit live."""

from __future__ import annotations

from orchestrator.config import TfoConfig
from orchestrator.store.base import BackupInfo, KeyStamp, ObjectInfo, Store


def open_store(cfg: TfoConfig) -> Store:
    if cfg.store.kind == "s3":
        from orchestrator.store.s3 import S3Store

        return S3Store(cfg.store)
    from orchestrator.store.local import LocalStore

    return LocalStore(cfg.resolve(cfg.store.path))


__all__ = ["BackupInfo", "KeyStamp", "ObjectInfo", "Store", "open_store"]
