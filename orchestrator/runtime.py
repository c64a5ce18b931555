"""What deploy/rollback/finalize need at run time, built once per process by an executor."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.cache import cached, file_key
from orchestrator.cancel import CancelToken
from orchestrator.config import TfoConfig
from orchestrator.credentials import AccountCredentials, AwsCredentials
from orchestrator.locks import DynamoLeaseBackend, FileLeaseBackend, LeaseManager
from orchestrator.procs import host_name
from orchestrator.store import Store, open_store
from orchestrator.terraform import TerraformClient
from orchestrator.terraform_env import terraform_environment

# (deployment id, phase, detail): phases are queued, preparing, waiting_lock, init, plan, backup,
# apply, rollback, verify, and a final status value.
EventSink = Callable[[str, str, str], None]


def _no_events(dep_id: str, phase: str, detail: str) -> None:
    return None


@dataclass
class Runtime:
    cfg: TfoConfig
    store: Store
    leases: LeaseManager
    client: TerraformClient
    cancel: CancelToken = field(default_factory=CancelToken)
    on_event: EventSink = _no_events
    host: str = field(default_factory=host_name)
    # Exceptions that mean "stop now" (a Celery soft time limit): the deployment is recorded cancelled.
    stop_exceptions: tuple[type[BaseException], ...] = ()
    # Per process, and shared by the per-task copies `dataclasses.replace` makes of a worker's runtime:
    # assumed roles and the stores built on them are reused until the credentials change.
    credentials: AccountCredentials | None = None
    _state_stores: dict[str, tuple[AwsCredentials, Store]] = field(default_factory=dict)
    _terraform_version: str = ""

    def __post_init__(self) -> None:
        if self.credentials is None:
            self.credentials = AccountCredentials(self.cfg)

    def event(self, dep_id: str, phase: str, detail: str = "") -> None:
        # A broken progress display must never break a deployment.
        with contextlib.suppress(Exception):
            self.on_event(dep_id, phase, detail)

    def account_credentials(self, account: str, run_id: str) -> AwsCredentials | None:
        assert self.credentials is not None
        return self.credentials.for_account(account, f"tfo-{run_id}")

    def state_store(self, account: str, run_id: str) -> Store:
        """The store for one account's state and backups: with its role's credentials when it has one."""
        creds = self.account_credentials(account, run_id)
        if creds is None or self.cfg.store.kind != "s3":
            return self.store
        known = self._state_stores.get(account)
        if known is not None and known[0] is creds:
            return known[1]
        from orchestrator.store.s3 import S3Store

        store = S3Store(self.cfg.store, session=creds.session(self.cfg.store.region))
        self._state_stores[account] = (creds, store)
        return store

    @property
    def terraform_version(self) -> str:
        """Asked once per process; recorded in every audit record."""
        if not self._terraform_version:
            binary = shutil.which(self.client.binary) or self.client.binary
            identity = file_key(binary)
            if identity is None:  # not there: let the client say so (TerraformNotFoundError)
                self._terraform_version = self.client.version()
            else:  # `terraform version` costs 0.1-0.3 s; ask once per binary, not once per run
                self._terraform_version = str(cached(self.cfg.cache_path, "terraform-version", identity,
                                                     self.client.version, keep=lambda v: v != "unknown"))
        return self._terraform_version

    def run_dir(self, run_id: str) -> Path:
        return self.cfg.workdir_path / run_id


def open_leases(cfg: TfoConfig, store: Store) -> LeaseManager:
    if cfg.store.kind == "s3":
        from orchestrator.store.s3 import S3Store

        assert isinstance(store, S3Store)
        backend: FileLeaseBackend | DynamoLeaseBackend = DynamoLeaseBackend(
            store.dynamodb, cfg.store.lock_table, cfg.store.bucket
        )
    else:
        backend = FileLeaseBackend(cfg.resolve(cfg.store.path) / "locks")
    return LeaseManager(backend, cfg.lease_ttl_s)


def build_runtime(cfg: TfoConfig, cancel: CancelToken | None = None, on_event: EventSink | None = None) -> Runtime:
    store = open_store(cfg)
    return Runtime(
        cfg=cfg,
        store=store,
        leases=open_leases(cfg, store),
        client=TerraformClient(cfg.terraform_bin, terraform_environment(os.environ, cfg.terraform_env,
                                                                        cfg.secret_env_names)),
        cancel=cancel or CancelToken(),
        on_event=on_event or _no_events,
    )
