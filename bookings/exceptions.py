"""Exceptions of the booking domain."""


class BookingError(Exception):
    """A booking operation that the booking's state does not allow (HTTP 409)."""

    code = "illegal_state"
    http_status = 409

    def __init__(self, message: str, *, code: str | None = None) -> None:
        self.message = message
        if code:
            self.code = code
        super().__init__(message)


class SoldOut(BookingError):
    """Not enough seats are left for the quantity asked."""

    code = "sold_out"
