"""Business-hours arithmetic on a configured calendar (working days and hours, time zone,
public holidays). businesstimedelta does the arithmetic, holidays knows the holidays."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from typing import Any

import holidays
import pytz
from businesstimedelta import BusinessTimeDelta, HolidayRule, Rules, WorkDayRule


class _Holidays(HolidayRule):  # type: ignore[misc]
    """Two mends to businesstimedelta's holiday rule.

    It walks day by day to the next holiday on every step of every addition (months of
    days between two holidays): the answer per day is cached. And it gives up (crashes)
    when no holiday lies within five years, as with a short list of configured dates:
    'none soon' is reported as a far-future day instead."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._next: dict[tuple[date, bool], date] = {}

    def next_holiday(self, day: date, reverse: bool = False, max_days: int = 365 * 5) -> date:
        key = (day, reverse)
        if key not in self._next:
            found = super().next_holiday(day, reverse=reverse, max_days=max_days)
            if found is None:
                found = date(1, 1, 2) if reverse else date(9000, 1, 1)
            self._next[key] = found
        return self._next[key]


class BusinessCalendar:
    def __init__(
        self,
        timezone: str = "UTC",
        workdays: Iterable[int] = (0, 1, 2, 3, 4),
        start: time = time(9),
        end: time = time(18),
        country: str | None = None,
        subdivision: str | None = None,
        extra_holidays: Iterable[date] = (),
    ) -> None:
        tz = pytz.timezone(timezone)
        rules = [WorkDayRule(start_time=start, end_time=end, working_days=list(workdays), tz=tz)]
        days = holidays.HolidayBase()
        if country:
            days = holidays.country_holidays(country, subdiv=subdivision)
        days.update({d: "configured holiday" for d in extra_holidays})
        if country or days:
            rules.append(_Holidays(days, tz=tz))
        self._rules = Rules(rules)
        self.timezone = timezone

    def add(self, start: datetime, seconds: float) -> datetime:
        """The moment `seconds` of business time after `start` (aware UTC)."""
        if seconds <= 0:
            return start.astimezone(UTC)
        moved: datetime = start + BusinessTimeDelta(self._rules, seconds=int(round(seconds)))
        return moved.astimezone(UTC)

    def between(self, start: datetime, end: datetime) -> float:
        """Business seconds from `start` to `end` (0 when end is not after start)."""
        if end <= start:
            return 0.0
        return float(self._rules.difference(start, end).timedelta.total_seconds())
