"""How a run is recorded for the workers: each deploy task reads what it runs, not the whole run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.service import load_deployment, save_run_spec
from orchestrator.store.local import LocalStore
from tests.unit.test_report_bundle import run_result, spec


class CountingStore(LocalStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.read: list[tuple[str, int]] = []

    def get(self, key: str) -> bytes:
        data = super().get(key)
        self.read.append((key, len(data)))
        return data


def test_a_deploy_task_reads_the_run_head_and_its_own_deployment_only(tmp_path: Path) -> None:
    from orchestrator.models import DeploymentResult, Status

    run = run_result([DeploymentResult(spec(i), "apply", Status.SUCCEEDED) for i in range(200)]).run
    store = CountingStore(tmp_path / "store")
    save_run_spec(store, run)
    store.read.clear()
    head, own = load_deployment(store, run.run_id, "s3/acct/us-east-1/p137")
    assert own == run.deployments[137] and head.deployments == () and head.run_id == run.run_id
    assert head.options == run.options and head.started_at == run.started_at
    keys = [k for k, _ in store.read]
    assert keys == [f"runs/{run.run_id}/head.json", f"runs/{run.run_id}/specs/s3__acct__us-east-1__p137.json"]
    whole = len(store.get(f"runs/{run.run_id}/spec.json"))
    assert sum(size for _, size in store.read[:2]) * 50 < whole  # flat in the run's size, not linear


def test_a_local_run_records_the_whole_run_only_and_old_runs_still_load(tmp_path: Path) -> None:
    from orchestrator.models import DeploymentResult, Status

    run = run_result([DeploymentResult(spec(i), "apply", Status.SUCCEEDED) for i in range(3)]).run
    store = CountingStore(tmp_path / "store")
    save_run_spec(store, run, per_deployment=False)
    names: list[Any] = sorted(p.name for p in (tmp_path / "store" / "runs" / run.run_id).iterdir())
    assert [n for n in names if not n.endswith(".tfo-meta.json")] == ["spec.json"]
    head, own = load_deployment(store, run.run_id, "s3/acct/us-east-1/p1")  # falls back to the whole run
    assert own == run.deployments[1] and head.run_id == run.run_id


def test_a_deployment_s_spec_and_its_checkpoint_are_different_objects() -> None:
    from orchestrator import keys as layout

    s = spec(3)
    keys = {layout.deployment_spec("r1", s.id), layout.checkpoint("r1", s.id),
            layout.checkpoint("r1", s.id, "rollback"), layout.run_head("r1"), layout.run_spec("r1")}
    assert len(keys) == 5  # a redelivered task once read its checkpoint as its spec
