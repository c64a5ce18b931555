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
CLAIM_STALE_S by whoever claims next (a sibling upstream, or the watch). Once the message is sent the claim
says so, and nobody sends it again.

A watch (`tfo.dag_watch`, every `[tfo.celery] dag_watch_s` until the run is finalized) is the backstop for
what no task can report: an error callback that failed (the broker blinked), a task revoked before it ran,
a time-limit kill (settled by the watch only after LOST_GRACE_S, so the killed attempt's terraform can stop
first), and Redis losing the run's keys. It settles from the store's view: a deployment whose done
checkpoint is written, or whose task failed or was revoked without one, has ended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import redis
from celery import Celery
from celery.backends.redis import RedisBackend

from orchestrator import keys
from orchestrator.config import TfoConfig
from orchestrator.dependencies import graph_of
from orchestrator.models import RunSpec
from orchestrator.record import Checkpoint
from orchestrator.store.base import Store
from workers.app import FINALIZE_QUEUE, TfoCelery, queue_for

# Sending a message takes milliseconds: a claim this old belongs to a task that died before it sent.
CLAIM_STALE_S = 120
# A deploy task killed by the hard time limit leaves its terraform (in a session of its own) a while to stop
# before its deployment is settled lost, and finalize may roll it back.
LOST_GRACE_S = 300
SENT = b"sent"

# GET-and-SET in one step, on Redis' clock (hosts' clocks may disagree): 1 = claimed by ARGV[1] (new, its
# own again, or taken over as stale), 0 = another task's live claim, 2 = sent already.
_CLAIM = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 4) == 'sent' then return 2 end
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


def claim(client: redis.Redis, key: str, me: str, ttl: int, stale_s: int = CLAIM_STALE_S) -> bool:
    """Whether task `me` is the one to send what `key` names (then `sent`)."""
    return int(client.eval(_CLAIM, 1, key, me, stale_s, ttl)) == 1


def finalizing(app: Celery, run_id: str, me: str, longest_s: int) -> bool:
    """Whether this finalize (`me`: its message) may go on: one at a time. The same message redelivered
    (its worker died) goes on; another message (finalize sent twice) waits, unless the one finalizing has
    been at it for longer than a task may run."""
    return claim(redis_of(app), _key(run_id, "finalizing"), me, _ttl(app), stale_s=longest_s)


def sent(client: redis.Redis, key: str, ttl: int) -> None:
    """The message is sent (when: the watch sends again one the broker lost)."""
    client.set(key, SENT + b" %d" % int(time.time()), ex=ttl)


def send_deploy(app: Celery, run_id: str, deployment_id: str, graph: RunGraph) -> None:
    sig = app.signature("tfo.deploy", args=(run_id, deployment_id), kwargs={"dag": True},
                        task_id=graph.task_ids[deployment_id], queue=graph.queues[deployment_id])
    # A task that raises, or that the hard time limit kills, still settles (so the run still ends).
    sig.link_error(app.signature("tfo.deploy_lost", args=(run_id, deployment_id), queue=FINALIZE_QUEUE))
    sig.apply_async()


def send_finalize(app: Celery, run_id: str) -> None:
    import uuid

    from workers.producer import finalize_task_id

    # sent_as tells this message from another finalize of the run sent by mistake (same task id)
    sig = app.signature("tfo.finalize", args=([], run_id), kwargs={"collect": True, "sent_as": uuid.uuid4().hex},
                        task_id=finalize_task_id(run_id), queue=FINALIZE_QUEUE)
    sig.link_error(app.signature("tfo.run_failed", args=(run_id,), queue=FINALIZE_QUEUE))
    sig.apply_async()


def start(app: TfoCelery, store: Store, run: RunSpec) -> RunGraph:
    """The producer's part: store the graph, send what waits for nothing, and the watch."""
    graph = graph_for(app.tfo_config, run)
    store.put_json(keys.run_graph(run.run_id), graph.to_dict())
    client, ttl = redis_of(app), _ttl(app)
    for d in graph.roots():
        send_deploy(app, run.run_id, d, graph)
        sent(client, _key(run.run_id, f"send:{d}"), ttl)
    from workers.producer import dag_watch_task_id

    app.signature("tfo.dag_watch", args=(run.run_id,), task_id=dag_watch_task_id(run.run_id),
                  queue=FINALIZE_QUEUE).apply_async(countdown=app.tfo_config.celery.dag_watch_s)
    return graph


@dataclass(frozen=True)
class Settled:
    sent: tuple[str, ...]  # the dependents this call sent
    finalized: bool  # whether it sent the run's finalize


def settle(app: Celery, store: Store, run_id: str, deployment_id: str, me: str, check_store: bool = False) -> Settled:
    """`deployment_id` has ended (or is lost): send each dependent whose upstreams have all settled, and
    finalize once every deployment has. `me` is the calling task's id (its claims are its own).
    `check_store` (the watch, when Redis may have forgotten what it sent): a dependent that has a checkpoint
    was sent and ran, and is not sent again."""
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
            if not (check_store and store.head(keys.checkpoint(run_id, d)) is not None):
                send_deploy(app, run_id, d, graph)
                out.append(d)
            sent(client, _key(run_id, f"send:{d}"), ttl)
    finalized = False
    if count >= len(graph.needs) and claim(client, _key(run_id, "finalize"), me, ttl):
        send_finalize(app, run_id)
        sent(client, _key(run_id, "finalize"), ttl)
        finalized = True
    return Settled(tuple(out), finalized)


def _done_at(meta: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(str(meta.get("date_done"))).timestamp()
    except ValueError:
        return 0.0


def _lost(meta: dict[str, Any], started: bool, now: float) -> bool:
    """Whether a deploy task's backend record says it ended without its deployment's result. One killed by
    the time limit, or revoked while it ran (`started`: it has a checkpoint), counts only after a grace:
    its terraform, in a session of its own, may still be stopping."""
    status = meta.get("status")
    if status not in ("FAILURE", "REVOKED"):
        return False
    exc = meta.get("result") if isinstance(meta.get("result"), dict) else {}
    killed = status == "FAILURE" and (exc or {}).get("exc_type") == "TimeLimitExceeded"
    if killed or (status == "REVOKED" and started):
        return now - _done_at(meta) > LOST_GRACE_S
    return True


def _sent_at(value: bytes | str | None) -> float:
    """When a claim's message was sent (0: not sent)."""
    if isinstance(value, str):
        value = value.encode()
    if not value or not value.startswith(SENT):
        return 0.0
    try:
        return float(value.split(b" ", 1)[1])
    except (IndexError, ValueError):
        return 1.0  # sent, time unknown: long ago


def look_again(app: TfoCelery, store: Store, run_id: str, me: str) -> bool:
    """The watch's look at a run; whether it is finalized (the watch ends). Settles what ended without
    being settled, sends what is ready and was never sent, and sends again a message the broker lost
    (sent longer ago than the visibility timeout, and no worker has a record of it)."""
    from workers.producer import finalize_task_id, task_metas

    if store.head(keys.run_summary(run_id)) is not None:
        return True
    graph = load_graph(store, run_id)
    client, ttl = redis_of(app), _ttl(app)
    lost_after = app.tfo_config.celery.visibility_timeout_s + 60
    now = time.time()
    settled = {m.decode() if isinstance(m, bytes) else str(m) for m in client.smembers(_key(run_id, "settled"))}
    rest = [d for d in graph.needs if d not in settled]
    checkpoints = {d: _checkpoint(store, run_id, d) for d in rest}
    ended = {d for d, cp in checkpoints.items() if cp is not None and cp.finished() is not None}
    unknown = [d for d in rest if d not in ended]
    metas = dict(zip(unknown, task_metas(app, [graph.task_ids[d] for d in unknown]), strict=True))
    ended |= {d for d in unknown if _lost(metas[d], checkpoints[d] is not None, now)}
    for d in sorted(ended, key=list(graph.needs).index):  # upstreams first: each settle sends what it can
        settle(app, store, run_id, d, me, check_store=True)
    done = settled | ended
    waiting = [d for d in graph.needs if d not in done]
    claims = dict(zip(waiting, client.mget([_key(run_id, f"send:{d}") for d in waiting]), strict=True)) \
        if waiting else {}
    for d in waiting:
        ups = graph.needs[d]
        if not all(u in done for u in ups):
            continue
        when = _sent_at(claims[d])
        if not when and ups:
            # ready and never sent (its upstream's task died between claiming and sending): settling an
            # upstream again sends it, once that claim is stale
            settle(app, store, run_id, ups[0], me, check_store=True)
        elif (when and now - when > lost_after and checkpoints.get(d) is None
              and metas.get(d, {}).get("status", "PENDING") == "PENDING"):
            send_deploy(app, run_id, d, graph)  # lost by the broker: nobody ever took it
            sent(client, _key(run_id, f"send:{d}"), ttl)
    if len(done) >= len(graph.needs):
        finalize_claim = client.get(_key(run_id, "finalize"))
        when = _sent_at(finalize_claim)
        if not when:
            settle(app, store, run_id, next(iter(graph.needs)), me, check_store=True)  # finalize, never sent
        elif now - when > lost_after and task_metas(app, [finalize_task_id(run_id)])[0].get(
                "status", "PENDING") == "PENDING":
            send_finalize(app, run_id)
            sent(client, _key(run_id, "finalize"), ttl)
    return False


def _checkpoint(store: Store, run_id: str, deployment_id: str) -> Checkpoint | None:
    try:
        data = store.get_json(keys.checkpoint(run_id, deployment_id))
    except KeyError:
        return None
    try:
        return Checkpoint.from_dict(data) if isinstance(data, dict) else None
    except (TypeError, ValueError):
        return None
