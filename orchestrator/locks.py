"""Lease locks per state key, covering backup -> apply -> rollback.

A lease names its owner (the run id), host and pid, and expires unless a heartbeat renews it, so a
dead process never holds one forever. A lease held by someone else is an answer, not an error:
`acquire` waits up to a limit and then returns `LeaseResult(acquired=False, holder=...)`.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from orchestrator.errors import LockError
from orchestrator.fsutil import atomic_write, flock
from orchestrator.procs import host_name

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


@dataclass(frozen=True)
class LeaseHolder:
    owner: str
    host: str
    pid: int
    expires: float
    # Kept by a finished deployment for its run's rollback: another process of the same run may take it.
    kept: bool = False

    def yields_to(self, me: LeaseHolder) -> bool:
        """Whether `me` may take this lease now (besides it being stale)."""
        if self.owner != me.owner:
            return False
        # The same run: the same process again, or a lease handed over for rollback. Never a second,
        # live attempt of the same deployment next to the first.
        return (self.host == me.host and self.pid == me.pid) or self.kept

    def describe(self) -> str:
        left = max(0, int(self.expires - time.time()))
        return f"run {self.owner} on {self.host} (pid {self.pid}, lease expires in {left}s unless renewed)"


@dataclass(frozen=True)
class LeaseResult:
    acquired: bool
    key: str
    holder: LeaseHolder | None
    waited_s: float


class LeaseBackend(ABC):
    @abstractmethod
    def try_acquire(self, key: str, me: LeaseHolder) -> LeaseHolder | None:
        """Take the lease (or refresh it, when `me.owner` already holds it); None on success, else the holder."""

    @abstractmethod
    def renew(self, key: str, me: LeaseHolder) -> bool: ...

    @abstractmethod
    def release(self, key: str, owner: str) -> None: ...

    @abstractmethod
    def holder(self, key: str) -> LeaseHolder | None: ...


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FileLeaseBackend(LeaseBackend):
    """Leases as JSON files next to the local store; a flock guards each read-modify-write."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.dir / (key.replace("/", "__") + ".lease")

    def _mutex(self) -> contextlib.AbstractContextManager[None]:
        return flock(self.dir / ".mutex")

    def _read(self, key: str) -> LeaseHolder | None:
        try:
            return LeaseHolder(**json.loads(self._path(key).read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None

    def _stale(self, h: LeaseHolder) -> bool:
        return h.expires < time.time() or (h.host == host_name() and not _pid_alive(h.pid))

    def _write(self, key: str, me: LeaseHolder) -> None:
        # No fsync: a crash of this host ends every lease taken on it anyway.
        atomic_write(self._path(key), json.dumps(asdict(me)), fsync=False)

    def try_acquire(self, key: str, me: LeaseHolder) -> LeaseHolder | None:
        with self._mutex():
            current = self._read(key)
            if current and not current.yields_to(me) and not self._stale(current):
                return current
            self._write(key, me)
            return None

    def renew(self, key: str, me: LeaseHolder) -> bool:
        with self._mutex():
            current = self._read(key)
            if current is None or current.owner != me.owner:
                return False
            self._write(key, me)
            return True

    def release(self, key: str, owner: str) -> None:
        with self._mutex():
            current = self._read(key)
            if current is not None and current.owner == owner:
                self._path(key).unlink(missing_ok=True)

    def holder(self, key: str) -> LeaseHolder | None:
        h = self._read(key)
        return None if h is None or self._stale(h) else h


class DynamoLeaseBackend(LeaseBackend):
    """Leases as items in Terraform's lock table, under a prefix Terraform never uses."""

    PREFIX = "tfo-lease:"

    def __init__(self, client: DynamoDBClient, table: str, namespace: str) -> None:
        self.client = client
        self.table = table
        self.namespace = namespace

    def _id(self, key: str) -> dict[str, Any]:
        return {"S": f"{self.PREFIX}{self.namespace}/{key}"}

    def _item(self, key: str, me: LeaseHolder) -> dict[str, Any]:
        return {"LockID": self._id(key), "owner": {"S": me.owner}, "host": {"S": me.host},
                "pid": {"N": str(me.pid)}, "expires": {"N": f"{me.expires:.3f}"}, "kept": {"BOOL": me.kept}}

    def _fail(self, what: str, key: str, e: Exception) -> LockError:
        return LockError(f"{what} lease for {key} in DynamoDB table {self.table} failed: {e}")

    def try_acquire(self, key: str, me: LeaseHolder) -> LeaseHolder | None:
        try:
            self.client.put_item(
                TableName=self.table,
                Item=self._item(key, me),
                ConditionExpression=("attribute_not_exists(LockID) OR #e < :now OR "
                                     "(#o = :o AND ((#h = :h AND #p = :p) OR #k = :true))"),
                ExpressionAttributeNames={"#o": "owner", "#e": "expires", "#h": "host", "#p": "pid", "#k": "kept"},
                ExpressionAttributeValues={":o": {"S": me.owner}, ":now": {"N": f"{time.time():.3f}"},
                                           ":h": {"S": me.host}, ":p": {"N": str(me.pid)}, ":true": {"BOOL": True}},
            )
            return None
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return self.holder(key) or LeaseHolder("?", "?", 0, time.time())
            raise self._fail("acquiring", key, e) from e
        except BotoCoreError as e:
            raise self._fail("acquiring", key, e) from e

    def renew(self, key: str, me: LeaseHolder) -> bool:
        try:
            self.client.put_item(TableName=self.table, Item=self._item(key, me),
                                 ConditionExpression="#o = :o", ExpressionAttributeNames={"#o": "owner"},
                                 ExpressionAttributeValues={":o": {"S": me.owner}})
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise self._fail("renewing", key, e) from e
        except BotoCoreError as e:
            raise self._fail("renewing", key, e) from e

    def release(self, key: str, owner: str) -> None:
        try:
            self.client.delete_item(TableName=self.table, Key={"LockID": self._id(key)},
                                    ConditionExpression="#o = :o", ExpressionAttributeNames={"#o": "owner"},
                                    ExpressionAttributeValues={":o": {"S": owner}})
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise self._fail("releasing", key, e) from e
        except BotoCoreError as e:
            raise self._fail("releasing", key, e) from e

    def holder(self, key: str) -> LeaseHolder | None:
        try:
            item = self.client.get_item(TableName=self.table, Key={"LockID": self._id(key)},
                                        ConsistentRead=True).get("Item")
        except (BotoCoreError, ClientError) as e:
            raise self._fail("reading", key, e) from e
        if not item:
            return None
        h = LeaseHolder(item["owner"]["S"], item["host"]["S"], int(item["pid"]["N"]), float(item["expires"]["N"]),
                        bool(item.get("kept", {}).get("BOOL", False)))
        return None if h.expires < time.time() else h


class LeaseManager:
    """Acquires, renews (heartbeat thread) and releases leases for this process."""

    def __init__(self, backend: LeaseBackend, ttl_s: float) -> None:
        self.backend = backend
        self.ttl_s = ttl_s
        self._held: dict[tuple[str, str], None] = {}
        self._kept: set[tuple[str, str]] = set()
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _me(self, owner: str, key: str = "") -> LeaseHolder:
        with self._guard:
            kept = (key, owner) in self._kept
        return LeaseHolder(owner=owner, host=host_name(), pid=os.getpid(), expires=time.time() + self.ttl_s, kept=kept)

    def acquire(self, key: str, owner: str, wait_s: float,
                cancelled: Callable[[], bool] = lambda: False, poll_s: float = 0.5) -> LeaseResult:
        start = time.monotonic()
        while True:
            holder = self.backend.try_acquire(key, self._me(owner, key))
            if holder is None:
                with self._guard:
                    self._held[(key, owner)] = None
                self._ensure_heartbeat()
                return LeaseResult(True, key, None, time.monotonic() - start)
            waited = time.monotonic() - start
            if waited >= wait_s or cancelled():
                return LeaseResult(False, key, holder, waited)
            time.sleep(min(poll_s, max(0.0, wait_s - waited)))

    def release(self, key: str, owner: str) -> None:
        with self._guard:
            self._held.pop((key, owner), None)
            self._kept.discard((key, owner))
        self.backend.release(key, owner)

    def keep_for_rollback(self, key: str, owner: str) -> None:
        """Hand the lease over to the run's finalize (any process of the run), still renewed by us."""
        with self._guard:
            self._kept.add((key, owner))
        self.backend.renew(key, self._me(owner, key))

    def leave_to_rollback(self, key: str, owner: str) -> None:
        """Mark a lease this process took kept for its run's rollback, and stop renewing it here: the
        attempt that kept it (or finalize) renews it, else it expires."""
        with self._guard:
            self._held.pop((key, owner), None)
            self._kept.add((key, owner))
        try:
            self.backend.renew(key, self._me(owner, key))
        finally:
            with self._guard:
                self._kept.discard((key, owner))

    def release_all(self, owner: str) -> None:
        with self._guard:
            mine = [k for (k, o) in self._held if o == owner]
        for key in mine:
            self.release(key, owner)

    def _ensure_heartbeat(self) -> None:
        with self._guard:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._beat, name="tfo-lease-heartbeat", daemon=True)
                self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(max(0.5, self.ttl_s / 3)):
            with self._guard:
                held = list(self._held)
            for key, owner in held:
                # A missed beat is retried on the next one; the lease outlives a few of them.
                with contextlib.suppress(LockError):
                    if not self.backend.renew(key, self._me(owner, key)):
                        # Released elsewhere (finalize on another worker) or taken over: stop renewing.
                        with self._guard:
                            self._held.pop((key, owner), None)

    def close(self) -> None:
        self._stop.set()
