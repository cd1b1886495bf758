"""One root for the notifier's errors; delivery failures split into retry vs give up."""

from __future__ import annotations


class NotifierError(Exception):
    """Something the notifier refuses or cannot do; the message is one line for people."""


class OutboxError(NotifierError):
    """A request about an outbox row that cannot be honoured (unknown id, already sent)."""


class DeliveryError(NotifierError):
    """A mail could not be handed to the relay."""


class TransientDeliveryError(DeliveryError):
    """Try again later: 4xx, connection refused or dropped, timeout, relay down."""


class PermanentDeliveryError(DeliveryError):
    """5xx: retrying cannot help. `bouncing` lists the recipients the relay refused."""

    def __init__(self, message: str, bouncing: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.bouncing = bouncing
