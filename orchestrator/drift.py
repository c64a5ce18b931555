"""What drift runs found over time, per deployment, and the alerts on its transitions.

Each deployment's drift record (`drift/[{namespace}/]{id}.json`) holds its current state and its
events (when it started drifting, what drifted, when it was back in sync or remediated), newest last.
Alerts go out on transitions only, never on every run while a deployment stays drifted: a GitHub issue
per drifted deployment (opened, updated when what drifted changes, closed when it is back in sync) and
a Slack incoming-webhook message (orchestrator/alerts.py). A failing alert is logged; the run's result
does not depend on it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator import alerts, keys
from orchestrator.config import TfoConfig
from orchestrator.errors import TfoError
from orchestrator.github import GitHubClient, GitHubError
from orchestrator.models import Record, RunResult, Status
from orchestrator.store.base import Store

log = logging.getLogger("tfo.drift")
MAX_EVENTS = 200
DRIFTING = ("drifted", "changed")


@dataclass(frozen=True)
class DriftEvent(Record):
    at: float
    run_id: str
    event: str  # drifted | changed | in_sync | remediated
    severity: str = ""
    resources: tuple[str, ...] = ()  # "address: change (attribute names)"


@dataclass(frozen=True)
class DriftRecord(Record):
    deployment: str
    namespace: str = ""
    drifted: bool = False
    since: float = 0.0  # when it started drifting
    severity: str = ""
    resources: tuple[str, ...] = ()
    issue: int = 0  # the open GitHub issue about it
    events: tuple[DriftEvent, ...] = field(default_factory=tuple)

    @property
    def key(self) -> str:
        return keys.drift_record(self.deployment, self.namespace)


def _load(store: Store, deployment: str, namespace: str) -> DriftRecord:
    try:
        return DriftRecord.from_dict(store.get_json(keys.drift_record(deployment, namespace)))
    except KeyError:
        return DriftRecord(deployment, namespace)


def record_run(store: Store, detected: RunResult, remediation: RunResult | None = None
               ) -> list[tuple[DriftRecord, DriftEvent]]:
    """Record a drift run (and its remediation) per deployment; the transitions it made, each with the
    record as it stood after it. Deployments that could not be judged (error, unmanaged) keep theirs."""
    fixed = {r.spec.id for r in remediation.results if r.status == Status.SUCCEEDED} if remediation else set()
    fixed_by = remediation.run.run_id if remediation else ""
    now = time.time()
    out: list[tuple[DriftRecord, DriftEvent]] = []
    for r in detected.results:
        if r.status not in (Status.DRIFTED, Status.IN_SYNC):
            continue
        record = _load(store, r.spec.id, r.spec.namespace)
        resources = tuple(sorted(str(d) for d in r.drift))  # terraform lists them in no fixed order
        run_id = detected.run.run_id
        steps: list[DriftEvent] = []
        if r.status == Status.DRIFTED:
            if not record.drifted:
                steps.append(DriftEvent(now, run_id, "drifted", r.severity, resources))
            elif resources != record.resources:
                steps.append(DriftEvent(now, run_id, "changed", r.severity, resources))
            if r.spec.id in fixed:
                steps.append(DriftEvent(now, fixed_by, "remediated", r.severity, resources))
        elif record.drifted:
            steps.append(DriftEvent(now, run_id, "in_sync"))
        for event in steps:
            drifting = event.event in DRIFTING
            record = replace(record, drifted=drifting, since=now if event.event == "drifted" else record.since,
                             severity=event.severity if drifting else "",
                             resources=event.resources if drifting else (),
                             events=(*record.events, event)[-MAX_EVENTS:])
            out.append((record, event))
        if steps:
            store.put_json(record.key, record.to_dict())
    return out


def history(store: Store, deployment: str = "", namespace: str = "") -> list[DriftRecord]:
    """Every deployment's drift record (or one's), by id."""
    if deployment:
        try:
            return [DriftRecord.from_dict(store.get_json(keys.drift_record(deployment, namespace)))]
        except KeyError:
            return []
    records = []
    for obj in store.list_objects(keys.DRIFT):
        try:
            records.append(DriftRecord.from_dict(store.get_json(obj.key)))
        except (KeyError, TypeError, ValueError, TfoError):
            continue
    return sorted(records, key=lambda r: (r.namespace, r.deployment))


# --- alerts --------------------------------------------------------------------------------------
def alert_text(record: DriftRecord, event: DriftEvent) -> str:
    what = {"drifted": "started drifting", "changed": "drifts differently now", "in_sync": "is back in sync",
            "remediated": "was remediated (re-applied)"}[event.event]
    severity = f" (severity {event.severity})" if event.event in DRIFTING and event.severity else ""
    lines = [f"tfo drift: `{record.deployment}` {what}{severity}"]
    if event.event in DRIFTING:
        lines += [f"- {r}" for r in event.resources[:30]]
        if len(event.resources) > 30:
            lines.append(f"- and {len(event.resources) - 30} more")
    lines.append(f"run `{event.run_id}`")
    return "\n".join(lines)


def send_alerts(cfg: TfoConfig, store: Store, changes: list[tuple[DriftRecord, DriftEvent]],
                client: GitHubClient | None) -> list[str]:
    """The alerts of these transitions, in order; the errors (logged, never raised)."""
    errors: list[str] = []
    a = cfg.alerts
    issues: dict[str, int] = {}
    for record, event in changes:
        text = alert_text(record, event)
        if a.slack_webhook_url and (error := alerts.post_slack(a.slack_webhook_url, text)):
            errors.append(error)
        if a.github_repo and client is not None:
            issue = issues.get(record.key, record.issue)
            try:
                issues[record.key] = _github_issue(client, a.github_repo, record.deployment, issue, event, text)
            except GitHubError as e:
                errors.append(f"github: {e}")
    for key, issue in issues.items():  # the issue number, for the next transition
        try:
            latest = DriftRecord.from_dict(store.get_json(key))
            if latest.issue != issue:
                store.put_json(key, replace(latest, issue=issue).to_dict())
        except (KeyError, TfoError) as e:
            errors.append(f"the drift record {key}: {e}")
    for error in errors:
        log.error("drift alert not sent: %s", error)
    return errors


def _github_issue(client: GitHubClient, repo: str, deployment: str, issue: int, event: DriftEvent,
                  text: str) -> int:
    if event.event in DRIFTING:
        body = text + "\n\nOpened, updated and closed by tfo's drift detection."
        if issue:
            client.request("PATCH", f"/repos/{repo}/issues/{issue}", {"body": body, "state": "open"}, repo=repo)
            return issue
        created: dict[str, Any] = client.request("POST", f"/repos/{repo}/issues",
                                                 {"title": f"Drift: {deployment}", "body": body}, repo=repo,
                                                 idempotent=False)
        return int(created["number"])
    if issue:
        client.request("POST", f"/repos/{repo}/issues/{issue}/comments", {"body": text}, repo=repo, idempotent=False)
        client.request("PATCH", f"/repos/{repo}/issues/{issue}", {"state": "closed"}, repo=repo)
    return 0
