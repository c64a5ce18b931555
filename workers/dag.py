"""A run whose deployments depend on each other, on Celery: a deployment is sent by the task of the last of its
upstreams to settle (succeed, fail, or be lost), not level by level, so no worker waits for a level's slowest
deployment while another one is ready; the run's finalize is sent by whichever task settles last.

The producer stores the run's graph (ids and queues only) and sends the deployments that wait for nothing.
Each deploy task, once its deployment has ended (its done checkpoint written), calls `settle`; a deploy task
that raised or was killed by the hard time limit is settled by its error callback (`tfo.deploy_lost`), so its
dependents are still sent (and skipped: their upstream did not finish) and the run still ends.

Redis (the result backend's) keeps, per run, the set of settled deployments and one claim per message to
send (a deployment's deploy task, the run's finalize). A claim belongs to one task id: of two upstreams
settling together only one sends their dependent; the same task redelivered after a crash between claiming
and sending takes its own claim again; a claim whose task never comes back is taken over after
CLAIM_STALE_S. Once the message is sent the claim says so, and nobody sends it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import redis
from celery import Celery
from celery.backends.redis import RedisBackend

from orchestrator import keys
from orchestrator.config import TfoConfig
from orchestrator.dependencies import graph_of
from orchestrator.models import RunSpec
from orchestrator.store.base import Store
from workers.app import FINALIZE_QUEUE, TfoCelery, queue_for

# Sending a message takes milliseconds: a claim this old belongs to a task that died before it sent.
CLAIM_STALE_S = 120
SENT = b"sent"

# GET-and-SET in one step, on Redis' clock (hosts' clocks may disagree): 1 = claimed by ARGV[1] (new, its
# own again, or taken over as stale), 0 = another task's live claim, 2 = sent already.
_CLAIM = """
local v = redis.call('GET', KEYS[1])
if v == 'sent' then return 2 end
local now = tonumber(redis.call('TIME')[1])
if v then
  local who, at = string.match(v, '^(.*) (%d+)$')
  if who ~= ARGV[1] and at and now - tonumber(at) < tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. now, 'EX', ARGV[3])
return 1
"""


@dataclass(frozen=True)
class RunGraph:
    """What the tasks of a run need to send each other: each deployment's upstreams in the run, its deploy
    task's id and queue. Ids only (no variables): it is not encrypted."""

    needs: dict[str, tuple[str, ...]]
    task_ids: dict[str, str]
    queues: dict[str, str]

    @cached_property
    def below(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for d, ups in self.needs.items():
            for u in ups:
                out.setdefault(u, []).append(d)
        return out

    def roots(self) -> list[str]:
        return [d for d, ups in self.needs.items() if not ups]

    def to_dict(self) -> dict[str, Any]:
        return {"needs": {d: list(u) for d, u in self.needs.items()}, "task_ids": self.task_ids,
                "queues": self.queues}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunGraph:
        return cls(needs={str(d): tuple(map(str, u)) for d, u in data["needs"].items()},
                   task_ids={str(k): str(v) for k, v in data["task_ids"].items()},
                   queues={str(k): str(v) for k, v in data["queues"].items()})


def graph_for(cfg: TfoConfig, run: RunSpec) -> RunGraph:
    from workers.producer import deploy_task_id

    needs = graph_of(run.deployments).needs
    return RunGraph(needs={s.id: tuple(needs[s.id]) for s in run.deployments},
                    task_ids={s.id: deploy_task_id(run.run_id, s) for s in run.deployments},
                    queues={s.id: queue_for(cfg, s) for s in run.deployments})


_graphs: dict[str, RunGraph] = {}


def load_graph(store: Store, run_id: str) -> RunGraph:
    """The run's graph, read once per process (a run's graph never changes)."""
    if run_id not in _graphs:
        if len(_graphs) > 32:
            _graphs.clear()
        _graphs[run_id] = RunGraph.from_dict(store.get_json(keys.run_graph(run_id)))
    return _graphs[run_id]


def redis_of(app: Celery) -> redis.Redis:
    """The result backend's Redis client, or one for the broker's Redis (tfo's brokers are Redis)."""
    backend = app.backend
    if isinstance(backend, RedisBackend):
        client: redis.Redis = backend.client
        return client
    return redis.Redis.from_url(app.conf.broker_url)


def _key(run_id: str, what: str) -> str:
    return f"tfo-dag:{run_id}:{what}"


def _ttl(app: Celery) -> int:
    return int(app.conf.result_expires.total_seconds())


def claim(client: redis.Redis, key: str, me: str, ttl: int) -> bool:
    """Whether task `me` is the one to send what `key` names (then `sent`)."""
    return int(client.eval(_CLAIM, 1, key, me, CLAIM_STALE_S, ttl)) == 1


def sent(client: redis.Redis, key: str, ttl: int) -> None:
    client.set(key, SENT, ex=ttl)


def send_deploy(app: Celery, run_id: str, deployment_id: str, graph: RunGraph) -> None:
    sig = app.signature("tfo.deploy", args=(run_id, deployment_id), kwargs={"dag": True},
                        task_id=graph.task_ids[deployment_id], queue=graph.queues[deployment_id])
    # A task that raises, or that the hard time limit kills, still settles (so the run still ends).
    sig.link_error(app.signature("tfo.deploy_lost", args=(run_id, deployment_id), queue=FINALIZE_QUEUE))
    sig.apply_async()


def send_finalize(app: Celery, run_id: str) -> None:
    from workers.producer import finalize_task_id

    sig = app.signature("tfo.finalize", args=([], run_id), kwargs={"collect": True},
                        task_id=finalize_task_id(run_id), queue=FINALIZE_QUEUE)
    sig.link_error(app.signature("tfo.run_failed", args=(run_id,), queue=FINALIZE_QUEUE))
    sig.apply_async()


def start(app: TfoCelery, store: Store, run: RunSpec) -> RunGraph:
    """The producer's part: store the graph, send what waits for nothing."""
    graph = graph_for(app.tfo_config, run)
    store.put_json(keys.run_graph(run.run_id), graph.to_dict())
    client, ttl = redis_of(app), _ttl(app)
    for d in graph.roots():
        send_deploy(app, run.run_id, d, graph)
        sent(client, _key(run.run_id, f"send:{d}"), ttl)
    return graph


@dataclass(frozen=True)
class Settled:
    sent: tuple[str, ...]  # the dependents this call sent
    finalized: bool  # whether it sent the run's finalize


def settle(app: Celery, store: Store, run_id: str, deployment_id: str, me: str) -> Settled:
    """`deployment_id` has ended (or is lost): send each dependent whose upstreams have all settled, and
    finalize once every deployment has. `me` is the calling task's id (its claims are its own)."""
    graph = load_graph(store, run_id)
    client, ttl = redis_of(app), _ttl(app)
    settled_key = _key(run_id, "settled")
    pipe = client.pipeline()
    pipe.sadd(settled_key, deployment_id)
    pipe.expire(settled_key, ttl)
    pipe.scard(settled_key)
    count = int(pipe.execute()[2])
    out = []
    for d in graph.below.get(deployment_id, []):
        ups = graph.needs[d]
        if all(client.smismember(settled_key, list(ups))) and claim(client, _key(run_id, f"send:{d}"), me, ttl):
            send_deploy(app, run_id, d, graph)
            sent(client, _key(run_id, f"send:{d}"), ttl)
            out.append(d)
    finalized = False
    if count >= len(graph.needs) and claim(client, _key(run_id, "finalize"), me, ttl):
        send_finalize(app, run_id)
        sent(client, _key(run_id, "finalize"), ttl)
        finalized = True
    return Settled(tuple(out), finalized)
