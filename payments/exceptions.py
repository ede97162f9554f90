"""Exceptions of the payments app, each with the meaning a caller can act on."""

from __future__ import annotations

from typing import Any


class PaymentError(Exception):
    """Base class: `code` is stable for clients; `message` is safe to show a user."""

    code = "payment_error"
    default_message = "The payment could not be processed."
    http_status = 400

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        self.message = message or self.default_message
        if code:
            self.code = code
        super().__init__(self.message)


class IllegalTransition(PaymentError):
    """The payment (or refund) is not in a state that allows this operation."""

    code = "illegal_state"
    default_message = "The payment is not in a state that allows this."
    http_status = 409


class RefundNotAllowed(IllegalTransition):
    """A refund was asked for more than is refundable, or of a payment that cannot be refunded."""

    code = "not_refundable"
    default_message = "This payment cannot be refunded for that amount."


class ProviderError(PaymentError):
    """The provider refused or failed the call.

    `retryable` says whether the same call (with the same idempotency key) may succeed
    later; `decline_code` and `param` come from the provider when it gave them.
    """

    code = "provider_error"
    default_message = "The payment provider could not complete the request."
    http_status = 502

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        decline_code: str | None = None,
        param: str | None = None,
        retryable: bool = False,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.decline_code = decline_code
        self.param = param
        self.retryable = retryable
        if http_status:
            self.http_status = http_status


class CardError(ProviderError):
    """The card was declined or could not be charged; the message is meant for the payer."""

    code = "card_declined"
    default_message = "Your card was declined."
    http_status = 402


class ProviderUnavailable(ProviderError):
    """The provider could not be reached or asked us to slow down; retrying may help."""

    code = "provider_unavailable"
    default_message = "The payment service is unavailable. Please try again shortly."
    http_status = 503

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("retryable", True)
        super().__init__(message, **kwargs)


class WebhookSignatureError(PaymentError):
    """A webhook's signature or timestamp did not verify against any configured secret."""

    code = "invalid_signature"
    default_message = "The webhook signature could not be verified."
    http_status = 400


class WebhookPayloadError(WebhookSignatureError):
    """A correctly signed webhook whose body is not a Stripe event we can store (HTTP 400)."""

    code = "invalid_payload"
    default_message = "The webhook body is not a Stripe event."


class NotFound(PaymentError):
    """The object does not exist, or does not belong to the caller (never say which)."""

    code = "not_found"
    default_message = "Not found."
    http_status = 404


class EventPruned(IllegalTransition):
    """The stored event's payload was pruned (retention): it can no longer be processed again."""

    code = "event_pruned"
    default_message = "This event's payload was pruned; it can no longer be replayed."
