"""The retry policy the delivery jobs share (the outbox's mail, the webhooks): which job
claims, how many rows a pass takes, and when a failed row is tried again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class RetryPolicy:
    instance: str = "buzon"
    batch_size: int = 50
    max_attempts: int = 10
    retry_base_seconds: float = 60.0
    retry_max_seconds: float = 6 * 3600.0

    def backoff(self, attempts: int) -> timedelta:
        """base, 2×base, 4×base … up to the cap, after the `attempts`-th failed try."""
        seconds = self.retry_base_seconds * 2 ** max(attempts - 1, 0)
        return timedelta(seconds=min(seconds, self.retry_max_seconds))
