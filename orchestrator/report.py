"""Reports people and CI read: `--json-out` (the contract) and `--markdown-out` (PR comment / step summary).

Everything here comes from results whose text was already redacted.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

from orchestrator.models import DeploymentResult, RunResult, Status

GITHUB_COMMENT_LIMIT = 65536
_ICON = {"succeeded": "✅", "no_changes": "⏸️", "failed": "❌", "rolled_back": "↩️", "rollback_failed": "🔥",
         "invalid": "⚠️", "cancelled": "⏹️", "blocked": "🛑", "stale": "⌛", "in_sync": "✅", "drifted": "🌊",
         "unmanaged": "⚪", "error": "❌", "skipped": "⏭️"}
# Rows and details in this order: what needs a person first, so whatever must be left out to fit is the
# least interesting (unchanged deployments last).
_RANK = {Status.ROLLBACK_FAILED: 0, Status.FAILED: 1, Status.ERROR: 1, Status.ROLLED_BACK: 2, Status.DRIFTED: 2,
         Status.BLOCKED: 3, Status.SKIPPED: 3, Status.STALE: 4, Status.INVALID: 5, Status.CANCELLED: 6,
         Status.SUCCEEDED: 7, Status.IN_SYNC: 7, Status.NO_CHANGES: 8, Status.UNMANAGED: 8}
_MIN_BODY = 200  # a plan cut shorter than this says nothing: leave the section out instead
_CUT_MARK = "\n… (truncated)"


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


def _body(r: DeploymentResult) -> str:
    plan = r.plan_text.lstrip("\r\n").rstrip()  # leading spaces are terraform's indentation
    # The policy verdict first: a body cut to fit keeps its start, and the verdict is why it is shown.
    parts = [f"Refused by policy: {v}" for v in r.violations]
    parts += [plan] if plan else []
    if r.error and not r.violations:
        parts.append(f"Error: {r.error}")
    if r.rollback and r.rollback.error:
        parts.append(f"Rollback: {r.rollback.error}")
    return "\n\n".join(parts) or "(no output)"


def _fence(body: str) -> str:
    """A code fence longer than any run of backticks in the body, so the body cannot close it."""
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    return "`" * max(3, longest + 1)


def _cut_note(cut: int) -> str:
    return (f"\n\n_output truncated: {cut} characters left out to fit GitHub's comment limit; "
            "the full output is in the audit record_")


@dataclass(frozen=True)
class _Section:
    """One deployment's `<details>` block: a fixed frame around a body that may be cut to fit."""

    open: str
    close: str
    body: str

    @property
    def frame(self) -> int:
        # The note is counted at its longest (every character cut), so a cut section never outgrows it.
        return len(self.open) + len(self.close) + len(_cut_note(len(self.body)))

    def render(self, cap: int) -> str:
        if len(self.body) <= cap:
            return self.open + self.body + self.close
        kept = self.body[: cap - len(_CUT_MARK)]
        newline = kept.rfind("\n")
        if newline >= len(kept) * 3 // 4:  # end on a whole line when one is near
            kept = kept[:newline]
        return self.open + kept.rstrip() + _CUT_MARK + self.close + _cut_note(len(self.body) - len(kept))


def _section(r: DeploymentResult) -> _Section:
    body = _body(r)
    fence = _fence(body)
    return _Section(f"<details><summary><code>{r.spec.id}</code> {r.status.value}</summary>\n\n{fence}\n",
                    f"\n{fence}", body)


def _body_cap(sections: list[_Section], budget: int) -> int:
    """The largest length every body may keep so that all sections fit in `budget` (-1: they cannot)."""
    room = budget - sum(s.frame + len("\n</details>\n\n") for s in sections)
    lengths = sorted(len(s.body) for s in sections)
    for i, length in enumerate(lengths):
        remaining = len(lengths) - i
        if length * remaining > room:  # this body and every longer one are cut to an equal share
            return room // remaining if room // remaining >= _MIN_BODY else -1
        room -= length
    return lengths[-1] if lengths else 0


def _heading(result: RunResult) -> str:
    run = result.run
    counts = Counter(r.status.value for r in result.results)
    totals = [sum(getattr(r.plan, k) for r in result.results) for k in ("add", "change", "destroy")]
    tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return "\n".join([
        f"## tfo {run.options.action.value}: {result.status} {_ICON.get(result.status, '')}".rstrip(),
        "",
        f"Run `{run.run_id}`" + (f" at `{run.git_sha[:12]}`" if run.git_sha else "")
        + (" (atomic)" if run.options.atomic else ""),
        "",
        f"**{len(result.results)} deployment(s)**" + (f": {tally}" if tally else "")
        + f"; plan +{totals[0]} ~{totals[1]} -{totals[2]}",
        "",
    ]) + "\n"


def _table(result: RunResult, ordered: list[DeploymentResult], budget: int) -> str:
    """One row per deployment; when the rows cannot all fit, the last ones are counted instead."""
    rollback = any(r.rollback for r in ordered)
    lines = ["| deployment | status | add | change | destroy |" + (" rollback |" if rollback else ""),
             "|---|---|---:|---:|---:|" + ("---|" if rollback else "")]
    if not ordered:
        lines.append("| _no deployments_ | | | | |" + (" |" if rollback else ""))
    rows = [f"| `{_escape(r.spec.id)}` | {_ICON.get(r.status.value, '')} {r.status.value} | {r.plan.add} "
            f"| {r.plan.change} | {r.plan.destroy} |" + (f" {_escape(_rollback_cell(r))} |" if rollback else "")
            for r in ordered]
    # The room a "rows left out" line needs, with every count at its widest.
    reserve = 400 + len(result.run.run_id)
    used = sum(len(line) + 1 for line in lines)
    if used + sum(len(row) + 1 for row in rows) <= budget:
        return "\n".join(lines + rows) + "\n\n"
    shown = 0
    for row in rows:
        if used + len(row) + 1 + reserve > budget:
            break
        used += len(row) + 1
        shown += 1
    left = Counter(r.status.value for r in ordered[shown:])
    lines += rows[:shown]
    lines.append(f"\n_{len(ordered) - shown} more deployment(s) not listed to fit the comment limit ("
                 + ", ".join(f"{n} {s}" for s, n in sorted(left.items())) + "); "
                 f"`tfo runs show {result.run.run_id}` lists them all_")
    return "\n".join(lines) + "\n\n"


def to_markdown(result: RunResult, limit: int = GITHUB_COMMENT_LIMIT) -> str:
    """The run as Markdown of at most `limit` characters, built in one pass (no shrink-and-retry).

    A heading with the counts, a summary table of every deployment (problems first), then the output of
    each deployment that changed something or did not succeed, each cut to an equal share of what is left
    when they do not all fit.
    """
    ordered = sorted(result.results, key=lambda r: _RANK[r.status])
    heading = _heading(result)
    note_room = 200 + len(result.run.run_id)  # the note on sections left out
    table = _table(result, ordered, limit - len(heading) - note_room)
    sections = [_section(r) for r in ordered if not r.status.ok or r.plan.has_changes]
    budget = limit - len(heading) - len(table) - note_room
    # Fewer sections leave each a larger share, so the most that fit is found by bisection; the least
    # important (the last) are the ones left out.
    fits, too_many = 0, len(sections) + 1
    while too_many - fits > 1:
        mid = (fits + too_many) // 2
        fits, too_many = (mid, too_many) if _body_cap(sections[:mid], budget) >= 0 else (fits, mid)
    dropped = len(sections) - fits
    cap = _body_cap(sections[:fits], budget)
    text = heading + table + "".join(s.render(cap) + "\n</details>\n\n" for s in sections[:fits])
    if dropped:
        text += (f"_Output of {dropped} deployment(s) not shown to fit the comment limit; "
                 f"`tfo audit show {result.run.run_id}` has it._\n")
    if len(text) > limit:  # only a limit smaller than the heading itself gets here
        text = text[: max(0, limit - 24)] + "\n\n_report truncated_\n"
    return text


_FENCE_OPEN = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")  # CommonMark: at most three spaces of indentation
_FENCE_CLOSE = re.compile(r" {0,3}(`{3,}|~{3,})[ \t]*")
_CONTINUED = "<details><summary>(continued)</summary>\n\n"


@dataclass
class _Open:
    """What is open at a point of a Markdown text: a code fence (its marker and line), <details> blocks."""

    fence: str = ""
    fence_line: str = ""
    details: int = 0

    def after(self, line: str) -> _Open:
        if self.fence:
            m = _FENCE_CLOSE.fullmatch(line)
            closes = m is not None and m.group(1)[0] == self.fence[0] and len(m.group(1)) >= len(self.fence)
            return _Open(details=self.details) if closes else self
        m = _FENCE_OPEN.fullmatch(line)
        if m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
            return _Open(m.group(1), line, self.details)
        depth = max(0, self.details + line.count("<details") - line.count("</details>"))
        return self if depth == self.details else _Open(details=depth)

    def closers(self) -> str:
        return (f"\n{self.fence}" if self.fence else "") + "\n</details>" * self.details + "\n"

    def openers(self) -> str:
        return _CONTINUED * self.details + (self.fence_line + "\n" if self.fence else "")


def split_markdown(text: str, limit: int) -> list[str]:
    """`text` in pieces of at most `limit` characters, cut between lines (a line longer than a piece can
    hold is cut too); a piece that ends inside a code fence or `<details>` closes them, and the next
    piece opens them again, so that each renders on its own."""
    if len(text) <= limit:
        return [text]
    pieces: list[str] = []
    state = _Open()
    body: list[str] = []
    size = 0

    def cut() -> None:
        nonlocal body, size
        pieces.append("".join(body).rstrip("\n") + state.closers())
        opening = state.openers()
        if len(opening) + len(state.closers()) > limit // 2:  # nesting too deep to carry: start afresh
            opening = ""
            state.__dict__.update(_Open().__dict__)
        body, size = [opening], len(opening)

    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        after = state.after(line)
        if size + len(line) + 1 + len(after.closers()) <= limit:
            body.append(line + "\n")
            size += len(line) + 1
            state = after
            i += 1
            continue
        room = limit - size - len(after.closers()) - 1
        if size > len(state.openers()) and room < len(line):
            cut()  # the line goes to the next piece
            continue
        # the line alone does not fit a piece: as much as there is room for here, the rest next
        room = max(room, 1)
        body.append(line[:room] + "\n")
        size += room + 1
        lines[i] = line[room:]
        cut()
    if "".join(body).strip():
        pieces.append("".join(body))
    return [p for p in pieces if p.strip()]


def report_parts(result: RunResult, per_part: int, max_parts: int) -> list[str]:
    """The Markdown report in at most `max_parts` pieces of at most `per_part` characters each."""
    text = to_markdown(result, per_part * max_parts - 2048 * max_parts)  # room for the pieces' closers
    parts = split_markdown(text, per_part)
    return parts if len(parts) <= max_parts else split_markdown(to_markdown(result, per_part), per_part)[:1]
