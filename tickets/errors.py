"""One root for the domain's errors."""


class TicketError(Exception):
    """A request the domain refuses; the message is meant for the person who asked."""


class InvalidTransition(TicketError):
    pass


class TicketNotFound(TicketError):
    pass
