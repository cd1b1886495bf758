"""Priority from impact × urgency (seed 003): a configurable matrix giving P1…P4."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tickets.errors import TicketError

# The usual ITIL grid: the worse of the two axes dominates, both high is P1.
DEFAULT_MATRIX: dict[str, dict[str, str]] = {
    "high": {"high": "P1", "medium": "P2", "low": "P3"},
    "medium": {"high": "P2", "medium": "P3", "low": "P4"},
    "low": {"high": "P3", "medium": "P4", "low": "P4"},
}

# Agents type what they say: Spanish names are accepted too.
_ALIASES = {
    "alto": "high",
    "alta": "high",
    "medio": "medium",
    "media": "medium",
    "bajo": "low",
    "baja": "low",
}


class InvalidPriority(TicketError):
    pass


@dataclass(frozen=True)
class PriorityMatrix:
    """`grid[impact][urgency]` is the priority; every pair must be present."""

    grid: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: DEFAULT_MATRIX)

    @property
    def impacts(self) -> tuple[str, ...]:
        return tuple(self.grid)

    @property
    def urgencies(self) -> tuple[str, ...]:
        return tuple(next(iter(self.grid.values()), {}))

    def priority(self, impact: str, urgency: str) -> tuple[str, str, str]:
        """(impact, urgency, priority) with the names normalised; refuses unknown names."""
        impact = _normal(impact, self.impacts, "impact")
        urgency = _normal(urgency, self.urgencies, "urgency")
        return impact, urgency, self.grid[impact][urgency]


def _normal(value: str, allowed: tuple[str, ...], what: str) -> str:
    name = value.strip().lower()
    name = name if name in allowed else _ALIASES.get(name, name)
    if name not in allowed:
        raise InvalidPriority(f"unknown {what} {value!r}; one of: {', '.join(allowed)}")
    return name


def validate_matrix(grid: Mapping[str, Mapping[str, str]]) -> None:
    """Raise ValueError unless every impact row has the same urgencies and P1…P4 values."""
    if not grid:
        raise ValueError("the matrix is empty")
    urgencies = set(next(iter(grid.values())))
    for impact, row in grid.items():
        if set(row) != urgencies:
            raise ValueError(f"impact {impact!r} must give a priority for every urgency")
        bad = [p for p in row.values() if p not in ("P1", "P2", "P3", "P4")]
        if bad:
            raise ValueError(f"priorities are P1 to P4, got {bad[0]!r}")
