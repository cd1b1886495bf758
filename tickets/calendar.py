"""Business-hours arithmetic on a configured calendar (working days and hours, time zone,
public holidays).

Each year is precomputed once, on first use: the open interval of every working day that
is not a holiday, as UTC instants (zoneinfo, so daylight saving is honoured), with the
running sum of business time before each interval. "N business seconds after t" and
"business time between a and b" are then a bisect and a subtraction, not a walk over days.

The results are those of businesstimedelta (which buzón used before, and which the
property test in tests/test_calendar.py still compares against): a moment exactly at the
end of a day's hours stays there rather than moving to the next morning, whole seconds
are added, and the time between two moments drops its fraction of a second.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_SECOND = 1_000_000  # microseconds; every instant below is an int of them since the epoch


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None:  # naive means UTC, as it did for businesstimedelta
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICRO


def _moment(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


@dataclass(frozen=True)
class _Year:
    """A year's open intervals [starts[i], ends[i]) in order, and the business time
    before each start (`before`) and at each end (`through`), counted from the year's
    first interval."""

    starts: list[int]
    ends: list[int]
    before: list[int]
    through: list[int]

    @property
    def total(self) -> int:
        return self.through[-1] if self.through else 0

    def first_open_after(self, at: int) -> int:
        """Index of the first interval that ends after `at` (len when none does)."""
        return bisect_right(self.ends, at)

    def position(self, at: int) -> int:
        """Business time from the start of the year's first interval to `at`."""
        i = self.first_open_after(at)
        if i == len(self.starts):
            return self.total
        return self.before[i] + max(0, at - self.starts[i])


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
        self.timezone = timezone
        self._zone = ZoneInfo(timezone)
        self._workdays = frozenset(workdays)
        self._start, self._end = start, end
        import holidays  # here: commands that only read tickets (`buzon tickets list`) skip it

        days = holidays.HolidayBase()
        if country:
            days = holidays.country_holidays(country, subdiv=subdivision)
        days.update({d: "configured holiday" for d in extra_holidays})
        self._holidays = days
        self._years: dict[int, _Year] = {}

    def add(self, start: datetime, seconds: float) -> datetime:
        """The moment `seconds` of business time after `start` (aware UTC)."""
        if seconds <= 0:
            return start.astimezone(UTC)
        at = _micros(start)
        left = int(round(seconds)) * _SECOND
        year_number = self._local_year(at)
        year = self._year(year_number)
        i = year.first_open_after(at)
        if left == 0:  # under half a second: the next open moment, as businesstimedelta
            while i == len(year.starts):
                year_number += 1
                year, i = self._year(year_number), 0
            return _moment(max(at, year.starts[i]))
        target = year.position(at) + left
        while (j := bisect_left(year.through, target, lo=i)) == len(year.starts):
            target -= year.total
            year_number += 1
            year, i = self._year(year_number), 0
        return _moment(year.starts[j] + target - year.before[j])

    def between(self, start: datetime, end: datetime) -> float:
        """Business seconds from `start` to `end` (0 when end is not after start)."""
        if end <= start:
            return 0.0
        first, last = _micros(start), _micros(end)
        first_year, last_year = self._local_year(first), self._local_year(last)
        total = self._year(last_year).position(last) - self._year(first_year).position(first)
        total += sum(self._year(y).total for y in range(first_year, last_year))
        return float(total // _SECOND)

    def _local_year(self, micros: int) -> int:
        return _moment(micros).astimezone(self._zone).year

    def _year(self, number: int) -> _Year:
        if number > MAXYEAR:
            raise OverflowError("no business hours left in the calendar")
        if number not in self._years:
            self._years[number] = self._build_year(number)
        return self._years[number]

    def _build_year(self, number: int) -> _Year:
        starts: list[int] = []
        ends: list[int] = []
        before: list[int] = []
        through: list[int] = []
        day, sum_so_far = date(number, 1, 1), 0
        while day.year == number:
            if day.weekday() in self._workdays and day not in self._holidays:
                opens, closes = self._instant(day, self._start), self._instant(day, self._end)
                if closes > opens:  # a day whose hours vanish in a clock change is closed
                    starts.append(opens)
                    ends.append(closes)
                    before.append(sum_so_far)
                    sum_so_far += closes - opens
                    through.append(sum_so_far)
            day += timedelta(days=1)
        return _Year(starts, ends, before, through)

    def _instant(self, day: date, at: time) -> int:
        """A local wall time as an instant. A time the clocks skip counts with the offset
        before the change; a time they repeat with its standard-time (not daylight
        saving) reading: what pytz's localize did for businesstimedelta."""
        first = datetime.combine(day, at, tzinfo=self._zone)
        second = first.replace(fold=1)
        if first.utcoffset() == second.utcoffset():
            return _micros(first)
        repeated = _exists(first) and _exists(second)
        if repeated:
            standard = [c for c in (first, second) if not c.dst()]
            return _micros(standard[0] if len(standard) == 1 else first)
        return _micros(first)


def _exists(wall: datetime) -> bool:
    """Whether the wall time really occurs (it does not in the gap of a clock change)."""
    back = wall.astimezone(UTC).astimezone(wall.tzinfo)
    return back.replace(tzinfo=None, fold=0) == wall.replace(tzinfo=None, fold=0)
