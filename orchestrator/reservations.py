"""Pull request reservations of deployments (Atlantis' project locks), kept in the store.

A deployment planned by an open pull request is reserved for it: another pull request planning it is
told who holds it and does not plan it, until the holder is merged or closed (the webhook releases its
reservations) or an operator runs `tfo unlock`. A reservation is not a lease: applies of the apply
branch go on; it keeps two reviews from planning, and applying, the same deployment at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator import keys
from orchestrator.errors import TfoError
from orchestrator.models import DeploymentSpec, Record
from orchestrator.store.base import Store


@dataclass(frozen=True)
class Reservation(Record):
    repo: str  # OWNER/NAME
    pr: int
    sha: str = ""
    run_id: str = ""
    at: float = 0.0

    def same_pull(self, repo: str, pr: int) -> bool:
        return self.repo.lower() == repo.lower() and self.pr == pr

    def __str__(self) -> str:
        return f"{self.repo}#{self.pr}"


def held(store: Store, spec: DeploymentSpec) -> Reservation | None:
    try:
        return Reservation.from_dict(store.get_json(keys.reservation(spec.id, spec.namespace)))
    except KeyError:
        return None


def reserve(store: Store, specs: Sequence[DeploymentSpec], claim: Reservation,
            still_open: Callable[[Reservation], bool]) -> dict[str, Reservation]:
    """Reserve `specs` for the claiming pull request; the ones another open pull request holds are left
    out and returned (deployment id -> holder). A holder that is no longer open loses its reservation."""
    refused: dict[str, Reservation] = {}
    for spec in specs:
        holder = held(store, spec)
        if holder is not None and not holder.same_pull(claim.repo, claim.pr) and still_open(holder):
            refused[spec.id] = holder
            continue
        store.put_json(keys.reservation(spec.id, spec.namespace),
                       Reservation(claim.repo, claim.pr, claim.sha, claim.run_id, time.time()).to_dict())
    return refused


def release(store: Store, repo: str, pr: int) -> list[str]:
    """Drop every reservation the pull request holds (it was merged or closed); the keys dropped."""
    dropped = []
    for obj in store.list_objects(keys.RESERVATIONS):
        try:
            holder = Reservation.from_dict(store.get_json(obj.key))
        except (KeyError, TypeError, ValueError, TfoError):
            continue
        if holder.same_pull(repo, pr):
            store.delete(obj.key)
            dropped.append(obj.key)
    return dropped


def unlock(store: Store, deployment_id: str, namespace: str = "") -> Reservation | None:
    """An operator's `tfo unlock`: the reservation removed, or None when there was none."""
    key = keys.reservation(deployment_id, namespace)
    try:
        holder = Reservation.from_dict(store.get_json(key))
    except KeyError:
        return None
    store.delete(key)
    return holder


def note(reserved: dict[str, str], limit: int = 50) -> str:
    """For a pull request's report: what was not planned because another one holds it (id -> holder)."""
    shown = sorted(reserved.items())
    lines = "\n".join(f"- `{d}`: reserved by {holder}" for d, holder in shown[:limit])
    more = f"\n- and {len(shown) - limit} more" if len(shown) > limit else ""
    return (f"{lines}{more}\n\nA deployment is reserved for the pull request that planned it until that one is "
            "merged or closed (or an operator runs `tfo unlock DEPLOYMENT`).")
