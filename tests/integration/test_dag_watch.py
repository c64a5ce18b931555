"""The watch of a run sent as a graph (workers/dag.py), against a real Redis broker and a real local store, with no
worker consuming: what it sends is read back from the broker's queues. It settles what ended unnoticed, sends
again what the broker lost, and sends finalize once, whatever Redis forgot."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator import keys
from orchestrator.config import CeleryConfig, StoreConfig, TfoConfig
from orchestrator.models import Action, DeploymentResult, DeploymentSpec, RollbackStrategy, RunOptions, RunSpec, Status
from orchestrator.record import DeploymentRecord
from orchestrator.store.local import LocalStore
from workers import dag
from workers.app import FINALIZE_QUEUE, make_app

pytestmark = pytest.mark.integration
RUN = "20261208T100000Z-abcdef"


def _spec(name: str, *needs: str) -> DeploymentSpec:
    return DeploymentSpec(id=f"{name}/a/us-east-1/p", service=name, account="a", region="us-east-1", project="p",
                          state_key=f"{name}/a/us-east-1/p/terraform.tfstate", tfvars_path="x.tfvars",
                          module_dir="terraform", variables={}, depends_on=tuple(f"{n}/a/us-east-1/p" for n in needs))


KMS, S3, IAM, FN = _spec("kms"), _spec("s3", "kms"), _spec("iam", "kms"), _spec("lambda", "s3", "iam")


def _queued(client: Any, queue: str) -> list[str]:
    """The task ids waiting in a queue (kombu's Redis list of JSON messages)."""
    return [json.loads(m)["headers"]["id"] for m in client.lrange(queue, 0, -1)]


def _finish(store: LocalStore, spec: DeploymentSpec, status: Status = Status.SUCCEEDED) -> None:
    DeploymentRecord(store, RUN, spec).finish(DeploymentResult(spec, Action.APPLY, status))


@pytest.fixture
def setup(redis: Any, tmp_path: Path) -> Any:
    cfg = TfoConfig(repo_root=tmp_path, store=StoreConfig(kind="local", path=str(tmp_path / "store")),
                    celery=CeleryConfig(broker_url=redis.url, visibility_timeout_s=600))
    app = make_app(cfg)
    store = LocalStore(tmp_path / "store")
    run = RunSpec(run_id=RUN, options=RunOptions(Action.APPLY, RollbackStrategy.REAPPLY),
                  deployments=(KMS, S3, IAM, FN), started_at="2026-12-08T10:00:00+00:00")
    graph = dag.start(app, store, run)
    yield app, store, graph, dag.redis_of(app)
    app.close()


def test_what_ended_unnoticed_is_settled_and_what_redis_forgot_is_sent_once(setup: Any) -> None:
    app, store, graph, client = setup
    assert _queued(client, "tfo") == [graph.task_ids[KMS.id]]  # the producer sent the root only
    # the key's task wrote its result and died before settling: the watch settles it
    _finish(store, KMS)
    assert dag.look_again(app, store, RUN, "watch") is False
    assert sorted(_queued(client, "tfo")) == sorted(graph.task_ids[d.id] for d in (KMS, S3, IAM))
    dag.look_again(app, store, RUN, "watch")  # nothing new: nothing sent again
    assert len(_queued(client, "tfo")) == 3
    # Redis loses the run's keys; the bucket and the role finish meanwhile
    for key in client.scan_iter(f"tfo-dag:{RUN}:*"):
        client.delete(key)
    _finish(store, S3)
    _finish(store, IAM, Status.FAILED)
    dag.look_again(app, store, RUN, "watch")
    assert _queued(client, "tfo").count(graph.task_ids[FN.id]) == 1  # its upstreams ended: sent, once
    assert len(_queued(client, "tfo")) == 4
    assert _queued(client, FINALIZE_QUEUE).count(f"{RUN}.finalize") == 0
    _finish(store, FN, Status.SKIPPED)
    for _ in range(2):
        dag.look_again(app, store, RUN, "watch")
    assert _queued(client, FINALIZE_QUEUE).count(f"{RUN}.finalize") == 1  # everything ended: finalize, once
    store.put_json(keys.run_summary(RUN), {"run_id": RUN})
    assert dag.look_again(app, store, RUN, "watch") is True  # finalized: the watch ends


def test_a_message_the_broker_lost_is_sent_again_after_the_visibility_timeout(
        setup: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app, store, graph, client = setup
    client.delete("tfo")  # the root's message is lost (a broker that lost its data)
    dag.look_again(app, store, RUN, "watch")
    assert _queued(client, "tfo") == []  # not yet: it may just be waiting for a worker
    later = time.time() + 600 + 61
    monkeypatch.setattr(dag.time, "time", lambda: later)
    dag.look_again(app, store, RUN, "watch")
    assert _queued(client, "tfo") == [graph.task_ids[KMS.id]]
    dag.look_again(app, store, RUN, "watch")  # sent again just now: not a third time
    assert len(_queued(client, "tfo")) == 1


def test_which_ended_tasks_count_as_lost() -> None:
    now = time.time()

    def meta(status: str, exc: str = "", ago: float = 0) -> dict[str, Any]:
        done = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now - ago))
        return {"status": status, "result": {"exc_type": exc}, "date_done": done}

    assert not dag._lost({"status": "PENDING"}, False, now)
    assert not dag._lost(meta("SUCCESS"), False, now)
    assert dag._lost(meta("FAILURE", "StoreError"), False, now)  # raised: lost at once
    assert dag._lost(meta("REVOKED"), False, now)  # revoked before it ran: lost at once
    # killed by the time limit, or revoked while it ran: only after the grace its terraform has to stop
    assert not dag._lost(meta("FAILURE", "TimeLimitExceeded", 10), True, now)
    assert dag._lost(meta("FAILURE", "TimeLimitExceeded", dag.LOST_GRACE_S + 5), True, now)
    assert not dag._lost(meta("REVOKED", ago=10), True, now)
    assert dag._lost(meta("REVOKED", ago=dag.LOST_GRACE_S + 5), True, now)
