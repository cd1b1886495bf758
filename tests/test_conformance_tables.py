"""Shared scoring for the conformance tests: per-field tallies, printed as a table.

The conformance modules compare `parsers.parse` with what other projects' suites expect of
the same public mails (../shared/corpus). Each prints its table (run pytest with -s to see
it; it is also in the failure message) and fails below a floor set from the measured
figure; CONFORMANCE.md records the figures.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field


def normalise_text(text: str) -> str:
    """Whitespace-insensitive, NFC form: line endings and wrapping are not what we score."""
    return " ".join(unicodedata.normalize("NFC", text).split())


@dataclass
class Scoreboard:
    """Per field: how many mails agree, how many differ by design, and which differ."""

    title: str
    agree: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    total: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    known: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    misses: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def score(self, name: str, field_name: str, ok: bool, known_reason: str | None = None) -> None:
        self.total[field_name] += 1
        if ok:
            self.agree[field_name] += 1
        elif known_reason:
            self.known[field_name].append(f"{name} ({known_reason})")
        else:
            self.misses[field_name].append(name)

    def accuracy(self, field_name: str) -> float:
        """Agreeing mails over all scored mails; a deliberate deviation counts as a miss."""
        return self.agree[field_name] / self.total[field_name] if self.total[field_name] else 1.0

    def accuracy_by_design(self, field_name: str) -> float:
        """As `accuracy`, with buzón's deliberate differences counted as agreement."""
        agreed = self.agree[field_name] + len(self.known[field_name])
        return agreed / self.total[field_name] if self.total[field_name] else 1.0

    def table(self) -> str:
        lines = [
            f"\n{self.title}",
            f"{'field':<14}{'agree':>6}{'of':>5}{'exact':>8}{'+design':>9}  differs",
        ]
        for name in self.total:
            differs = self.misses[name] + [f"[by design] {item}" for item in self.known[name]]
            lines.append(
                f"{name:<14}{self.agree[name]:>6}{self.total[name]:>5}"
                f"{self.accuracy(name):>8.1%}{self.accuracy_by_design(name):>9.1%}  "
                f"{', '.join(differs)}"
            )
        return "\n".join(lines)

    def check(self, floors: dict[str, float]) -> None:
        table = self.table()
        print(table)
        low = {
            name: f"{self.accuracy(name):.3f} < {floor}"
            for name, floor in floors.items()
            if self.accuracy(name) < floor
        }
        assert not low, f"below the floor: {low}\n{table}"


def test_scoreboard_counts_known_deviations_apart() -> None:
    board = Scoreboard("self-test")
    board.score("a", "subject", True)
    board.score("b", "subject", False, "RFC 2047 says so")
    board.score("c", "subject", False)
    assert board.accuracy("subject") == 1 / 3
    assert "[by design] b (RFC 2047 says so)" in board.table()
    assert normalise_text("a\r\n  e\u0301") == "a \u00e9"
