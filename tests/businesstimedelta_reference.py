"""The business calendar as businesstimedelta computed it (buzón's tickets/calendar.py
until the closed form): the reference tests/test_calendar.py and bench/business_hours.py
compare against. businesstimedelta and pytz are test dependencies only."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import holidays
import pytz
from businesstimedelta import BusinessTimeDelta, HolidayRule, Rules, WorkDayRule


def reference(timezone: str, **kwargs: Any) -> Any:
    """Rules for `timezone` and the BusinessCalendar keyword arguments (all of them)."""

    class Holidays(HolidayRule):  # type: ignore[misc]
        """As before: the walk to the next holiday cached, 'none in five years' far off."""

        cache: dict[tuple[date, bool], date] = {}

        def next_holiday(self, day: date, reverse: bool = False, max_days: int = 0) -> date:
            if (day, reverse) not in self.cache:
                found = super().next_holiday(day, reverse=reverse, max_days=365 * 5)
                far = date(1, 1, 2) if reverse else date(9000, 1, 1)
                self.cache[day, reverse] = found or far
            return self.cache[day, reverse]

    tz = pytz.timezone(timezone)
    rules = [
        WorkDayRule(
            start_time=kwargs["start"],
            end_time=kwargs["end"],
            working_days=list(kwargs["workdays"]),
            tz=tz,
        )
    ]
    days = holidays.HolidayBase()
    if kwargs["country"]:
        days = holidays.country_holidays(kwargs["country"])
    days.update({d: "configured holiday" for d in kwargs["extra_holidays"]})
    if kwargs["country"] or days:
        rules.append(Holidays(days, tz=tz))
    return Rules(rules)


def reference_add(rules: Any, start: datetime, seconds: float) -> datetime:
    if seconds <= 0:
        return start.astimezone(UTC)
    moved: datetime = start + BusinessTimeDelta(rules, seconds=int(round(seconds)))
    return moved.astimezone(UTC)


def reference_between(rules: Any, start: datetime, end: datetime) -> float:
    if end <= start:
        return 0.0
    return float(rules.difference(start, end).timedelta.total_seconds())
