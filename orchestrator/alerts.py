"""Alerts to people: a Slack incoming webhook (`[tfo.alerts] slack_webhook_url`, or TFO_ALERTS_SLACK_WEBHOOK_URL
to keep it out of the file). Drift transitions (orchestrator/drift.py) and runs that need a person (failed,
rolled back, not finalized) go out through here. Text is redacted again before it leaves; an alert that
cannot be sent is logged and returned, never raised: the run is recorded either way.
"""

from __future__ import annotations

import logging

import requests

from orchestrator.config import TfoConfig
from orchestrator.models import Action, RunResult, RunStatus, Status
from orchestrator.redaction import Redactor

log = logging.getLogger("tfo.alerts")
MAX_LISTED = 10


def post_slack(url: str, text: str, redactor: Redactor | None = None) -> str:
    """Post one message; the error ("" when sent)."""
    # Slack reads <...> as links and mentions (<!channel>): text from terraform or a commit must not be
    text = (redactor or Redactor()).redact(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    try:
        r = requests.post(url, json={"text": text}, timeout=10)
    except requests.RequestException as e:
        return f"slack: {type(e).__name__}"
    return f"slack answered {r.status_code}" if r.status_code >= 300 else ""


def run_alert_text(result: RunResult, dashboard_url: str = "") -> str:
    """A short message for an apply that needs a person, or "" for a run that does not. Plans are not
    alerted (a failing plan is its pull request's news), nor drift runs (drift alerts on transitions)."""
    if result.run.options.action != Action.APPLY:
        return ""
    results = result.results
    rolled_back = [r for r in results if r.status == Status.ROLLED_BACK]
    broken = [r for r in results if r.status == Status.ROLLBACK_FAILED]
    failed = [r for r in results if r.status == Status.FAILED]
    if result.status in (RunStatus.SUCCEEDED, RunStatus.CANCELLED, RunStatus.BLOCKED) and not (
            rolled_back or broken or failed):
        return ""
    action = result.run.options.action.value
    what = "rolled back" if rolled_back and not (failed or broken) else result.status.value
    lines = [f"tfo {action} run `{result.run.run_id}` {what}: {len(results)} deployment(s), "
             f"{len(failed)} failed, {len(rolled_back)} rolled back, {len(broken)} rollback failed"]
    for r in (broken + failed + rolled_back)[:MAX_LISTED]:
        first = r.error.splitlines()[0][:200] if r.error else ""
        lines.append(f"- `{r.spec.id}` {r.status.value}" + (f": {first}" if first else ""))
    if len(broken + failed + rolled_back) > MAX_LISTED:
        lines.append(f"- and {len(broken + failed + rolled_back) - MAX_LISTED} more")
    if result.run.actor:
        lines.append(f"started by {result.run.actor}")
    if dashboard_url:
        lines.append(f"{dashboard_url.rstrip('/')}/runs/{result.run.run_id}")
    return "\n".join(lines)


def alert_run(cfg: TfoConfig, result: RunResult) -> str:
    """The run's alert, if it needs one and alerts are configured; the error ("" when sent or not needed)."""
    if not (cfg.alerts.slack_webhook_url and cfg.alerts.runs):
        return ""
    text = run_alert_text(result, cfg.alerts.dashboard_url or cfg.github.dashboard_url)
    error = post_slack(cfg.alerts.slack_webhook_url, text) if text else ""
    if error:
        log.error("run %s: alert not sent: %s", result.run.run_id, error)
    return error


def alert_not_finalized(cfg: TfoConfig, run_id: str, why: str) -> str:
    """A run nobody could finalize: its deployments' checkpoints are in the store, its summary is not."""
    if not (cfg.alerts.slack_webhook_url and cfg.alerts.runs):
        return ""
    error = post_slack(cfg.alerts.slack_webhook_url,
                       f"tfo run `{run_id}` could not be finalized: {why[:300]}\n"
                       f"its deployments' checkpoints are in the store; see `tfo runs show {run_id}`")
    if error:
        log.error("run %s: alert not sent: %s", run_id, error)
    return error
