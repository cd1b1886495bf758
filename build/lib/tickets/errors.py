"""One root for the domain's errors."""


class TicketError(Exception):
    """A request the domain refuses; the message is meant for the person who asked."""


class InvalidTransition(TicketError):
    pass


class TicketNotFound(TicketError):
    pass


def describe(exc: BaseException, limit: int = 300) -> str:
    """An exception as one log line: its type and the first line of its message.

    A database error's own text carries the SQL statement and its parameters (a mail's
    body among them); only the driver's first line is kept, so no log line carries mail.
    """
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    first = lines[0][:limit] if lines else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
