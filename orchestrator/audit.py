"""The audit trail: full, unredacted output and metadata per deployment and per run.

Objects are one JSON document each under `audit/year=YYYY/month=MM/day=DD/run_id=ID/` (`keys.audit_*`),
a layout Athena can partition on. They are encrypted at rest (SSE on S3, Fernet in the local store). If the
store refuses an audit object after retries, the record is kept on local disk (0600) and the result
says where, so nothing is lost; the next successful audit write on that host uploads what is pending.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from orchestrator import __version__
from orchestrator.errors import StoreError
from orchestrator.fsutil import atomic_write
from orchestrator.models import RunSpec
from orchestrator.store.base import Store
from orchestrator.terraform import CommandResult

# Five tries over about 7.5 s (on top of boto3's own): an audit record rides out a short store blip.
RETRIES = 5
RETRY_BASE_S = 0.5
PENDING_DIR = "audit-pending"


def command_record(r: CommandResult) -> dict[str, Any]:
    return {"step": r.step, "argv": list(r.argv), "status": r.status.value, "exit_code": r.exit_code,
            "duration_s": round(r.duration_s, 3), "output": r.output}


def base_metadata(run: RunSpec) -> dict[str, Any]:
    return {"run_id": run.run_id, "actor": run.actor, "git_sha": run.git_sha,
            "action": run.options.action.value, "atomic": run.options.atomic,
            "rollback_strategy": run.options.rollback, "tfo_version": __version__,
            "allow_destroy": run.options.allow_destroy, "approved_by": list(run.options.approved_by),
            "from_plan": run.options.from_plan, "started_at": run.started_at}


def write(store: Store, key: str, record: dict[str, Any], fallback_dir: Path) -> tuple[str, str]:
    """Upload an audit record; returns (key, error). On failure the record lands in `fallback_dir`.

    `fallback_dir` is a run directory under the workdir, where `push_pending` looks.
    """
    body = json.dumps(record, indent=2, sort_keys=True, default=str).encode()
    error = ""
    for attempt in range(RETRIES):
        try:
            store.put(key, body, metadata={"run-id": str(record.get("run_id", ""))})
        except StoreError as e:
            error = str(e)
            if attempt + 1 < RETRIES:
                time.sleep(RETRY_BASE_S * (2**attempt))
            continue
        # The store is back: records earlier runs on this host had to keep locally go up now.
        push_pending(store, fallback_dir.parent)
        return key, ""
    local = fallback_dir / PENDING_DIR / key
    try:
        local.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(local, body)  # whole or not at all: push_pending uploads what it finds
    except OSError as e:
        return "", f"audit upload of {key} failed ({error}) and the local copy failed too ({e.strerror})"
    return "", f"audit upload of {key} failed ({error}); kept locally at {local}"


def pending(workdir: Path) -> list[tuple[str, Path]]:
    """(key, local file) of every audit record kept on this host's disk while the store refused it."""
    out = []
    for root in sorted(workdir.glob(f"*/{PENDING_DIR}")):
        for f in sorted(root.rglob("*.json")):
            out.append((f.relative_to(root).as_posix(), f))
    return out


def push_pending(store: Store, workdir: Path) -> None:
    """Upload the records kept locally; a local copy is removed only once the store holds it.

    Never raises: the caller's own work is already recorded, and a record that fails stays for next time.
    """
    for key, local in pending(workdir):
        try:
            body = local.read_bytes()
            run_id = str(json.loads(body).get("run_id", ""))
            store.put(key, body, metadata={"run-id": run_id})
        except (OSError, ValueError, StoreError):
            continue
        local.unlink(missing_ok=True)  # a concurrent push may have taken it already
