"""Crontab schedules (`[tfo.drift] schedule`): parsed here, once, for two readers that must agree.

Celery beat fires the schedule (it gets the expanded sets, so it cannot read the text differently), and a
scheduled run works out which firing it belongs to (`previous`), so that every beat started by mistake
sends the same slot and only the first run of a slot happens. Times are UTC, as Celery's default.

Five fields: minute hour day-of-month month day-of-week, each `*`, `N`, `A-B`, a list of those, and
`/STEP`; months and days of the week by number or by English three-letter name; Sunday is 0 or 7. Cron
runs a job when either day field matches if both are restricted, Celery only when both match: a schedule
restricting both is refused rather than read one way by one and the other way by the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from orchestrator.errors import ConfigError

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, lowest, highest, names for the values from `lowest`)
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS), ("day of week", 0, 7, _DAYS))
# Every combination of month, day and weekday comes round within 28 years (the Gregorian cycle of
# weekdays for the years in use); a schedule that never fires (30 February) is refused when parsed.
_LOOK_BACK_DAYS = 28 * 366


@dataclass(frozen=True)
class CronSchedule:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday

    def _day_matches(self, day: datetime) -> bool:
        return (day.month in self.months and day.day in self.days_of_month
                and (day.isoweekday() % 7) in self.days_of_week)

    def previous(self, now: datetime) -> datetime:
        """The latest firing at or before `now` (UTC, to the minute)."""
        now = now.astimezone(UTC).replace(second=0, microsecond=0)
        day = now.replace(hour=0, minute=0)
        for back in range(_LOOK_BACK_DAYS):
            d = day - timedelta(days=back)
            if not self._day_matches(d):
                continue
            for hour in sorted(self.hours, reverse=True):
                for minute in sorted(self.minutes, reverse=True):
                    at = d.replace(hour=hour, minute=minute)
                    if at <= now:
                        return at
        raise ConfigError(f"drift.schedule = {self.text!r}: never fires")


def _value(token: str, name: str, low: int, high: int, names: tuple[str, ...], text: str) -> int:
    if token.lower() in names:
        return names.index(token.lower()) + low
    if not re.fullmatch(r"[0-9]{1,4}", token):
        raise ConfigError(f"drift.schedule = {text!r}: {name} {token!r} is not a number"
                          + (f" or one of {', '.join(names)}" if names else ""))
    v = int(token)
    if not low <= v <= high:
        raise ConfigError(f"drift.schedule = {text!r}: {name} {v} is outside {low}-{high}")
    return v


def _field(spec: str, name: str, low: int, high: int, names: tuple[str, ...], text: str) -> frozenset[int]:
    out: set[int] = set()
    for part in spec.split(","):
        rng, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not re.fullmatch(r"[0-9]{1,4}", step_text) or int(step_text) == 0:
                raise ConfigError(f"drift.schedule = {text!r}: {name} step {step_text!r} is not a positive number")
            step = int(step_text)
        if rng == "*":
            first, last = low, high
        elif "-" in rng:
            a, _, b = rng.partition("-")
            first, last = _value(a, name, low, high, names, text), _value(b, name, low, high, names, text)
            if first > last:
                raise ConfigError(f"drift.schedule = {text!r}: {name} range {rng!r} runs backwards")
        else:
            first = _value(rng, name, low, high, names, text)
            last = high if step_text else first
        out.update(range(first, last + 1, step))
    return frozenset(out)


def parse(text: str) -> CronSchedule:
    parts = text.split()
    if len(parts) != 5:
        raise ConfigError(f"drift.schedule = {text!r}: expected five fields (minute hour day-of-month month "
                          f"day-of-week), e.g. '0 */6 * * *'")
    sets = [_field(p, *f, text) for p, f in zip(parts, _FIELDS, strict=True)]
    days_of_week = frozenset(d % 7 for d in sets[4])
    if parts[2] != "*" and parts[4] != "*":
        raise ConfigError(f"drift.schedule = {text!r}: restrict the day of the month or the day of the week, "
                          "not both (cron and Celery read that differently)")
    schedule = CronSchedule(text, sets[0], sets[1], sets[2], sets[3], days_of_week)
    if not any(min(schedule.days_of_month) <= _days_in(m) for m in schedule.months):
        raise ConfigError(f"drift.schedule = {text!r}: never fires (no such day in those months)")
    return schedule


def _days_in(month: int) -> int:
    return 29 if month == 2 else 30 if month in (4, 6, 9, 11) else 31
