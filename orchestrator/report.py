"""Reports people and CI read: `--json-out` (the contract) and `--markdown-out` (PR comment / step summary).

Everything here comes from results whose text was already redacted.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.models import DeploymentResult, RunResult

GITHUB_COMMENT_LIMIT = 65536
_ICON = {"succeeded": "✅", "no_changes": "⏸️", "failed": "❌", "rolled_back": "↩️", "rollback_failed": "🔥",
         "invalid": "⚠️", "cancelled": "⏹️"}


def to_json(result: RunResult) -> str:
    return json.dumps(result.report_dict(), indent=2, sort_keys=False)


def _rollback_cell(r: DeploymentResult) -> str:
    if not r.rollback:
        return ""
    rb = r.rollback
    matches = {True: ", matches target", False: ", differs from target", None: ""}[rb.matches_target]
    return f"{rb.strategy}: {rb.status}{matches}"


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def _details(r: DeploymentResult, body: str, note: str = "") -> str:
    fence = "```"
    while fence in body:
        fence += "`"
    extra = f"\n\n_{note}_" if note else ""
    return (f"<details><summary><code>{r.spec.id}</code> {r.status.value}</summary>\n\n"
            f"{fence}\n{body}\n{fence}{extra}\n</details>\n")


def _body(r: DeploymentResult) -> str:
    parts = [r.plan_text.strip()] if r.plan_text.strip() else []
    if r.error:
        parts.append(f"Error: {r.error}")
    if r.rollback and r.rollback.error:
        parts.append(f"Rollback: {r.rollback.error}")
    return "\n\n".join(parts) or "(no output)"


def to_markdown(result: RunResult, limit: int = GITHUB_COMMENT_LIMIT) -> str:
    run = result.run
    head = [
        f"## tfo {run.options.action.value}: {result.status} {_ICON.get(result.status, '')}".rstrip(),
        "",
        f"Run `{run.run_id}`" + (f" at `{run.git_sha[:12]}`" if run.git_sha else "")
        + (" (atomic)" if run.options.atomic else ""),
        "",
        "| deployment | add | change | destroy | status | rollback |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in result.results:
        head.append(
            f"| `{_escape(r.spec.id)}` | {r.plan.add} | {r.plan.change} | {r.plan.destroy} "
            f"| {_ICON.get(r.status.value, '')} {r.status.value} | {_escape(_rollback_cell(r))} |"
        )
    if not result.results:
        head.append("| _no deployments_ | | | | | |")
    header = "\n".join(head) + "\n\n"
    bodies = {r.spec.id: _body(r) for r in result.results}
    truncated: dict[str, int] = {}

    def render() -> str:
        sections = []
        for r in result.results:
            note = ""
            if r.spec.id in truncated:
                note = (f"output truncated: {truncated[r.spec.id]} characters left out to fit GitHub's "
                        "comment limit; the full output is in the audit record")
            sections.append(_details(r, bodies[r.spec.id], note))
        return header + "\n".join(sections)

    text = render()
    # Shrink the longest plan first until the whole report fits.
    while len(text) > limit:
        longest = max(bodies, key=lambda k: len(bodies[k]), default=None)
        if longest is None or len(bodies[longest]) <= 200:
            return text[: limit - 80] + "\n\n_report truncated to fit the comment limit_\n"
        excess = len(text) - limit + 200
        keep = max(200, len(bodies[longest]) - excess)
        cut = len(bodies[longest]) - keep
        truncated[longest] = truncated.get(longest, 0) + cut
        bodies[longest] = bodies[longest][:keep].rstrip() + "\n… (truncated)"
        text = render()
    return text


def discovery_json(items: list[dict[str, Any]], skipped: list[dict[str, str]]) -> str:
    return json.dumps({"deployments": items, "skipped": skipped}, indent=2)
