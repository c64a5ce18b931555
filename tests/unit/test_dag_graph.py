"""The graph a Celery run with dependencies is sent by (workers/dag.py): what each task needs to send its
dependents, from the run's specs alone."""

from __future__ import annotations

from pathlib import Path

from orchestrator.config import CeleryConfig, TfoConfig
from orchestrator.models import Action, DeploymentSpec, RollbackStrategy, RunOptions, RunSpec
from workers.dag import RunGraph, graph_for


def _spec(service: str, account: str, *needs: str) -> DeploymentSpec:
    return DeploymentSpec(id=f"{service}/{account}/us-east-1/p", service=service, account=account, region="us-east-1",
                          project="p", state_key=f"{service}/{account}/us-east-1/p/terraform.tfstate",
                          tfvars_path="x.tfvars", module_dir="terraform", variables={}, depends_on=needs)


def test_a_diamond_with_an_edge_out_of_the_run() -> None:
    key, bucket, role = _spec("kms", "a"), _spec("s3", "a", "kms/a/us-east-1/p"), _spec("iam", "a", "kms/a/us-east-1/p")
    # the reader also depends on a deployment this run does not hold: it waits only for what the run holds
    reader = _spec("lambda", "a", "s3/a/us-east-1/p", "iam/a/us-east-1/p", "kms/zz/us-east-1/p")
    run = RunSpec(run_id="20261208T000000Z-abcdef", options=RunOptions(Action.APPLY, RollbackStrategy.REAPPLY),
                  deployments=(key, bucket, role, reader), started_at="2026-12-08T00:00:00+00:00")
    cfg = TfoConfig(repo_root=Path("."), celery=CeleryConfig(route_by="account"))
    graph = graph_for(cfg, run)
    assert graph.roots() == [key.id]
    assert graph.below == {key.id: [bucket.id, role.id], bucket.id: [reader.id], role.id: [reader.id]}
    assert graph.needs[reader.id] == (bucket.id, role.id)
    assert graph.task_ids[reader.id] == f"{run.run_id}.deploy.lambda__a__us-east-1__p"
    assert set(graph.queues.values()) == {"tfo.a"}  # routed as the chord would route them
    assert RunGraph.from_dict(graph.to_dict()) == graph  # what the store keeps reads back the same
