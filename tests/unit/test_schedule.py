"""Crontab schedules: what `[tfo.drift] schedule` means, the firing a scheduled run belongs to, and that
Celery beat is given exactly the same times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator import schedule
from orchestrator.errors import ConfigError


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(("text", "now", "previous"), [
    ("0 */6 * * *", at(2026, 11, 28, 13, 5), at(2026, 11, 28, 12, 0)),
    ("0 */6 * * *", at(2026, 11, 28, 12, 0, 59), at(2026, 11, 28, 12, 0)),
    ("0 */6 * * *", at(2026, 11, 28, 0, 0), at(2026, 11, 28, 0, 0)),
    ("* * * * *", at(2026, 11, 28, 13, 5, 30), at(2026, 11, 28, 13, 5)),
    ("*/15 9-17 * * mon-fri", at(2026, 11, 28, 13, 5), at(2026, 11, 27, 17, 45)),  # a Saturday: Friday's last
    ("30 2 * * 0", at(2026, 11, 28, 13, 5), at(2026, 11, 22, 2, 30)),
    ("30 2 * * 7", at(2026, 11, 28, 13, 5), at(2026, 11, 22, 2, 30)),  # Sunday is 7 too
    ("0 0 1 jan,jul *", at(2026, 11, 28, 13, 5), at(2026, 7, 1, 0, 0)),
    ("0 0 29 2 *", at(2026, 11, 28, 13, 5), at(2024, 2, 29, 0, 0)),
    ("5/20 1,3 * * *", at(2026, 11, 28, 3, 30), at(2026, 11, 28, 3, 25)),
])
def test_the_firing_a_run_belongs_to(text: str, now: datetime, previous: datetime) -> None:
    assert schedule.parse(text).previous(now) == previous


@pytest.mark.parametrize(("text", "why"), [
    ("0 */6 * *", "expected five fields"),
    ("60 * * * *", "minute 60 is outside 0-59"),
    ("0 24 * * *", "hour 24 is outside 0-23"),
    ("0 0 0 * *", "day of month 0 is outside 1-31"),
    ("0 0 * 13 *", "month 13 is outside 1-12"),
    ("0 0 * * 8", "day of week 8 is outside 0-7"),
    ("0 0 * * funday", "day of week 'funday' is not a number or one of sun"),
    ("*/0 * * * *", "step '0' is not a positive number"),
    ("10-5 * * * *", "runs backwards"),
    ("0 0 31 feb,apr *", "never fires"),
    ("0 0 1 * mon", "not both"),
    ("-1 * * * *", "is not a number"),
    ("\u00b2 * * * *", "is not a number"),  # a digit to str.isdigit, not to int()
    ("*/\u0663 * * * *", "is not a positive number"),
])
def test_bad_schedules_are_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=r"drift\.schedule") as e:
        schedule.parse(text)
    assert why in str(e.value)


@pytest.mark.parametrize("text", ["0 */6 * * *", "*/15 9-17 * * mon-fri", "30 2 * * 7", "0 0 1 jan,jul *",
                                  "5/20 1,3 * * *", "0 12 29 2 *"])
def test_celery_beat_fires_exactly_when_the_schedule_says(text: str) -> None:
    # Beat gets the parsed sets (workers/beat.py): walking a year minute by minute from each firing, the
    # next one Celery computes is the next one the schedule lists.
    from workers.beat import celery_schedule

    parsed = schedule.parse(text)
    beat = celery_schedule(parsed)
    fired = parsed.previous(at(2026, 11, 28, 13, 5))
    for _ in range(40):
        start, delta, _ = beat.remaining_delta(fired)
        following = (start + delta).astimezone(UTC)
        # the schedule's own view: the latest firing at or before `following`, and none in between
        assert parsed.previous(following) == following
        assert parsed.previous(following - timedelta(minutes=1)) == fired
        assert following > fired
        fired = following
