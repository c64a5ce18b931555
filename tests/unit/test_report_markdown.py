"""The Markdown report (PR comment, step summary): always ends, always fits, fences always balanced."""

from __future__ import annotations

import random
import re

import pytest

from orchestrator.models import DeploymentResult, PlanSummary, RollbackRecord, Status
from orchestrator.report import GITHUB_COMMENT_LIMIT, to_markdown
from tests.unit.test_report_bundle import run_result, spec

# What terraform prints for one resource to add (~450 characters), as in the runs that hung.
PLAN_ONE = "\n".join([
    "Terraform will perform the following actions:",
    "",
    '  # example_thing.this["a"] will be created',
    '  + resource "example_thing" "this" {',
    "      + delay_seconds = 0",
    "      + fail          = false",
    '      + id            = (known after apply)',
    '      + name          = "bucket-a"',
    '      + tags          = {',
    '          + "team" = "platform"',
    "        }",
    "    }",
    "",
    "Plan: 1 to add, 0 to change, 0 to destroy.",
])


def changed(n: int, text: str = PLAN_ONE, status: Status = Status.SUCCEEDED, **kw: object) -> DeploymentResult:
    return DeploymentResult(spec(n), "plan", status, PlanSummary(1, 0, 0), plan_text=text, **kw)  # type: ignore[arg-type]


def unchanged(n: int) -> DeploymentResult:
    return DeploymentResult(spec(n), "plan", Status.NO_CHANGES, plan_text="No changes. Infrastructure is up-to-date.")


def details(md: str) -> list[tuple[str, str]]:
    """(deployment id, body) of every <details> block, checking each one's fence opens and closes."""
    found = []
    for m in re.finditer(r"<details><summary><code>(.*?)</code>.*?</summary>\n\n(`{3,})\n(.*?)</details>", md, re.S):
        fence, rest = m.group(2), m.group(3)
        closing = rest.split("\n" + fence + "\n", 1)
        assert len(closing) == 2 or rest.endswith("\n" + fence), f"unclosed fence in {m.group(1)}"
        body = closing[0] if len(closing) == 2 else rest[: -len(fence) - 1]
        assert not re.search(rf"^{fence}", body, re.M), f"the body of {m.group(1)} closes its fence early"
        found.append((m.group(1), body))
    return found


def assert_well_formed(md: str, limit: int) -> None:
    assert len(md) <= limit
    assert md.count("<details>") == md.count("</details>") == len(details(md))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("n", [134, 150, 300, 400, 1000, 3000])
def test_many_deployments_with_changes_end_and_fit_one_comment(n: int) -> None:
    """The hang: past ~134 deployments the old shrink loop never got short enough."""
    md = to_markdown(run_result([changed(i) for i in range(n)]))
    assert_well_formed(md, GITHUB_COMMENT_LIMIT)
    assert f"**{n} deployment(s)**: {n} succeeded" in md
    rows = re.findall(r"^\| `(s3/acct/us-east-1/p\d+)` \|", md, re.M)
    more = re.search(r"(\d+) more deployment\(s\) not listed", md)
    assert len(rows) + (int(more.group(1)) if more else 0) == n
    assert (len(rows) == n) == (n <= 1000)  # every deployment has its row while the rows fit
    shown = details(md)
    assert shown or n > 1000, "plan output is shown while the table leaves room"
    left_out = re.search(r"Output of (\d+) deployment\(s\) not shown", md)
    assert len(shown) + (int(left_out.group(1)) if left_out else 0) == n


@pytest.mark.timeout(30)
def test_many_deployments_without_changes_show_only_the_table() -> None:
    md = to_markdown(run_result([unchanged(i) for i in range(300)]))
    assert_well_formed(md, GITHUB_COMMENT_LIMIT)
    assert "<details>" not in md and "No changes." not in md
    assert len(re.findall(r"^\| `s3/", md, re.M)) == 300


def test_details_only_for_changes_and_failures_failures_first() -> None:
    results = [unchanged(0), changed(1), changed(2, "Error: quota", Status.FAILED, error="quota exceeded"),
               changed(3, status=Status.ROLLED_BACK, error="boom",
                       rollback=RollbackRecord("reapply", "succeeded", "bundles/x", True))]
    md = to_markdown(run_result(results))
    assert_well_formed(md, GITHUB_COMMENT_LIMIT)
    assert [d for d, _ in details(md)] == ["s3/acct/us-east-1/p2", "s3/acct/us-east-1/p3", "s3/acct/us-east-1/p1"]
    rows = re.findall(r"^\| `(\S+)` \| \S+ (\w+) \| (\d+) \| (\d+) \| (\d+) \| (.*) \|$", md, re.M)
    assert [(r[0][-2:], r[1]) for r in rows] == [("p2", "failed"), ("p3", "rolled_back"), ("p1", "succeeded"),
                                                 ("p0", "no_changes")]
    assert rows[1][5] == "reapply: succeeded, matches target"
    assert "quota exceeded" in md and "**4 deployment(s)**" in md


def test_a_long_plan_is_cut_and_the_short_ones_kept_whole() -> None:
    huge = "\n".join(f"  + resource line {i}" for i in range(20000))
    small = "Plan: 1 to add, 0 to change, 0 to destroy."
    md = to_markdown(run_result([changed(0, huge), changed(1, small), changed(2, huge[:90000])]))
    assert_well_formed(md, GITHUB_COMMENT_LIMIT)
    bodies = dict(details(md))
    assert bodies["s3/acct/us-east-1/p1"] == small
    for cut in ("s3/acct/us-east-1/p0", "s3/acct/us-east-1/p2"):
        assert bodies[cut].endswith("… (truncated)") and bodies[cut].startswith("  + resource line 0")
    assert md.count("output truncated:") == 2
    # the room is used: the report is close to the limit, not cut far below it
    assert len(md) > GITHUB_COMMENT_LIMIT - 2000


def test_terraform_indentation_survives() -> None:
    md = to_markdown(run_result([changed(0)]))
    assert '\n  # example_thing.this["a"] will be created' in md


def test_fences_survive_backticks_in_output() -> None:
    md = to_markdown(run_result([changed(0, "a ```` fence\n```", Status.FAILED, error="bad ``` fence")]))
    assert_well_formed(md, GITHUB_COMMENT_LIMIT)
    assert "\n`````\n" in md


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", range(40))
def test_random_runs_always_fit(seed: int) -> None:
    rng = random.Random(seed)
    results = []
    for i in range(rng.choice([1, 5, 50, 300, 2000])):
        kind = rng.random()
        if kind < 0.3:
            results.append(unchanged(i))
            continue
        text = "\n".join("x" * rng.randint(0, 120) + "`" * rng.choice([0, 0, 3, 5])
                         for _ in range(rng.randint(0, rng.choice([5, 400]))))
        status = rng.choice([Status.SUCCEEDED, Status.FAILED, Status.ROLLED_BACK, Status.ROLLBACK_FAILED])
        results.append(changed(i, text, status, error="e" * rng.randint(0, 3000)))
    limit = rng.choice([2000, 20000, GITHUB_COMMENT_LIMIT])
    md = to_markdown(run_result(results), limit=limit)
    assert_well_formed(md, limit)
    assert md.startswith("## tfo apply:")
    assert len(re.findall(r"^\| `s3/", md, re.M)) == len(results) or "more deployment(s) not listed" in md


def _balanced(piece: str) -> bool:
    from orchestrator.report import _Open

    state = _Open()
    for line in piece.split("\n"):
        state = state.after(line)
    return not state.fence and state.details == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", range(30))
def test_split_pieces_fit_render_alone_and_lose_no_line(seed: int) -> None:
    from orchestrator.report import split_markdown

    rng = random.Random(seed)
    lines: list[str] = []
    depth, fence = 0, ""
    for i in range(rng.randint(50, 400)):
        roll = rng.random()
        if fence:
            inside = rng.choice([f"    {fence}", f"line {i} " + "x" * rng.randint(0, 300)])  # indented: content
            lines.append(fence if roll < 0.1 else inside)
            fence = "" if lines[-1] == fence else fence
        elif roll < 0.1:
            fence = rng.choice(["```", "````", "~~~", "  ```"]).strip()
            lines.append(fence + rng.choice(["", "hcl", "diff"]))
        elif roll < 0.2:
            depth += 1
            lines.append(f"<details><summary>block {i}</summary>")
        elif roll < 0.27 and depth:
            depth -= 1
            lines.append("</details>")
        else:
            lines.append(f"text {i} " + "y" * rng.choice([0, 10, 80, 2000]))
    lines += [fence] if fence else []
    lines += ["</details>"] * depth
    text = "\n".join(lines)
    limit = rng.choice([600, 1000, 4000])
    pieces = split_markdown(text, limit)
    assert all(len(p) <= limit for p in pieces), [len(p) for p in pieces]
    assert all(_balanced(p) for p in pieces)
    out = "\n".join(pieces)
    position = 0
    for line in lines:  # every original line, in order (a long one in fragments)
        for fragment in (line[k:k + 100] for k in range(0, max(len(line), 1), 100)):
            found = out.find(fragment, position)
            assert found >= 0, fragment
            position = found


def test_split_keeps_a_text_that_fits_whole() -> None:
    from orchestrator.report import split_markdown

    assert split_markdown("a\n```\nb\n```\n", 100) == ["a\n```\nb\n```\n"]
