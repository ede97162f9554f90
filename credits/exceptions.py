"""Exceptions of the credits domain."""


class CreditsError(Exception):
    """A credits operation the wallet or the purchase does not allow (HTTP 409)."""

    code = "illegal_state"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        self.message = message
        if code:
            self.code = code
        super().__init__(message)


class InsufficientCredits(CreditsError):
    """The wallet holds fewer credits than asked for."""

    code = "insufficient_credits"
