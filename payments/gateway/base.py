"""The provider contract: what services may ask of a payment provider, in provider-neutral shapes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

# The provider's words for the states services act on, named once here: a gateway maps its own
# vocabulary into these (a value it does not know becomes the one that acts on nothing).


class CheckoutStatus(StrEnum):
    OPEN = "open"
    COMPLETE = "complete"
    EXPIRED = "expired"


class CheckoutPaymentStatus(StrEnum):
    PAID = "paid"
    UNPAID = "unpaid"
    NO_PAYMENT_REQUIRED = "no_payment_required"


class ChargeStatus(StrEnum):
    SUCCEEDED = "succeeded"
    PENDING = "pending"
    FAILED = "failed"


# In the metadata of an intent a Checkout Session made: an attempt paid on the hosted page takes
# only such an intent (a card start that lost the attempt to the page leaves one that is not).
CHECKOUT_INTENT_MARK = ("made_by", "checkout_session")


@dataclass(frozen=True)
class IntentInfo:
    """A payment intent as the provider last reported it; `status` is a PaymentStatus value."""

    id: str
    status: str
    provider_status: str
    amount: int
    currency: str
    client_secret: str = ""
    customer_id: str = ""
    charge_id: str = ""
    payment_method_id: str = ""
    card_brand: str = ""
    card_last4: str = ""
    error_code: str = ""
    decline_code: str = ""
    error_message: str = ""
    next_action: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    amount_refunded: int | None = None


@dataclass(frozen=True)
class RefundInfo:
    """A refund as the provider reports it; `status` is a RefundStatus value."""

    id: str
    status: str
    amount: int
    currency: str
    intent_id: str = ""
    charge_id: str = ""
    reason: str = ""
    failure_reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ChargeInfo:
    """A charge: the money movement behind a successful intent."""

    id: str
    intent_id: str
    status: ChargeStatus
    paid: bool
    amount: int
    amount_refunded: int
    currency: str
    card_brand: str = ""
    card_last4: str = ""
    refunds: list[RefundInfo] | None = None  # None when the object did not include them


@dataclass(frozen=True)
class CheckoutInfo:
    """A hosted checkout session."""

    id: str
    url: str
    status: CheckoutStatus
    payment_status: CheckoutPaymentStatus
    intent_id: str = ""
    client_reference_id: str = ""
    customer_id: str = ""
    expires_at: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    amount_total: int | None = None
    currency: str = ""


@dataclass(frozen=True)
class PaymentMethodInfo:
    """A saved card."""

    id: str
    brand: str = ""
    last4: str = ""
    exp_month: int | None = None
    exp_year: int | None = None
    customer_id: str = ""


@dataclass(frozen=True)
class SetupIntentInfo:
    """A SetupIntent used to save a card for later."""

    id: str
    client_secret: str
    status: str


@dataclass(frozen=True)
class DisputeInfo:
    """A dispute (chargeback) of a charge."""

    id: str
    charge_id: str
    intent_id: str
    amount: int
    currency: str
    reason: str
    status: str  # the provider's own word, kept for staff (needs_response, won, lost, ...)
    evidence_due_by: datetime | None = None
    closed_in_our_favour: bool = False  # the money stays with us


@dataclass(frozen=True)
class EventInfo:
    """A provider event: `object` is the raw object the event is about."""

    id: str
    type: str
    created: int
    api_version: str
    livemode: bool
    object: dict[str, Any]
    raw: dict[str, Any]


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list; pass `next_cursor` back to get the next one."""

    items: list[T]
    has_more: bool
    next_cursor: str | None


class PaymentGateway(ABC):
    """A payment provider.

    Every method that changes something at the provider takes an `idempotency_key`
    derived from the business operation: calling it twice with the same key must
    never move money twice. On failure each method raises one of the app's
    exceptions, never the provider SDK's: `CardError` for a declined card,
    `ProviderUnavailable` when retrying later may help (network, 5xx, 429), and
    `ProviderError` for anything else (with `retryable` set).
    """

    # Payment intents --------------------------------------------------------

    @abstractmethod
    def create_intent(
        self,
        *,
        amount: int,
        currency: str,
        idempotency_key: str,
        metadata: dict[str, str],
        description: str = "",
        customer_id: str = "",
        payment_method_id: str = "",
        confirm: bool = False,
        save_payment_method: bool = False,
    ) -> IntentInfo:
        """Create a card payment intent; with `confirm`, also try to charge `payment_method_id`."""

    @abstractmethod
    def retrieve_intent(self, intent_id: str) -> IntentInfo:
        """The intent's current state."""

    @abstractmethod
    def set_intent_payment_method(
        self, intent_id: str, *, payment_method_id: str, idempotency_key: str
    ) -> IntentInfo:
        """Attach a payment method to an unconfirmed intent (moves no money)."""

    @abstractmethod
    def confirm_intent(self, intent_id: str, *, idempotency_key: str) -> IntentInfo:
        """Confirm (charge) the intent with its payment method; may need 3-D Secure."""

    @abstractmethod
    def cancel_intent(self, intent_id: str, *, idempotency_key: str) -> IntentInfo:
        """Cancel an unpaid intent; nothing can be charged on it afterwards."""

    @abstractmethod
    def list_intents(
        self, *, created_gte: int | None = None, cursor: str | None = None, limit: int = 100
    ) -> Page[IntentInfo]:
        """Intents newest first, a page at a time (items are IntentInfo)."""

    @abstractmethod
    def intent_from_object(self, obj: dict[str, Any]) -> IntentInfo:
        """Read an intent from a raw provider object (a webhook's payload)."""

    # Hosted checkout ----------------------------------------------------------

    @abstractmethod
    def create_checkout_session(
        self,
        *,
        amount: int,
        currency: str,
        product_name: str,
        success_url: str,
        cancel_url: str,
        client_reference_id: str,
        metadata: dict[str, str],
        expires_at: datetime,
        idempotency_key: str,
        customer_id: str = "",
    ) -> CheckoutInfo:
        """Create a hosted payment page for one line item of `amount`. The intent it makes carries
        `metadata` and CHECKOUT_INTENT_MARK (a card start's intents never do)."""

    @abstractmethod
    def retrieve_checkout_session(self, session_id: str) -> CheckoutInfo:
        """The session's current state."""

    @abstractmethod
    def expire_checkout_session(self, session_id: str, *, idempotency_key: str) -> CheckoutInfo:
        """Close an open session so that nobody can pay on it any more; raises ProviderError
        (not retryable) when it is no longer open."""

    @abstractmethod
    def checkout_from_object(self, obj: dict[str, Any]) -> CheckoutInfo:
        """Read a checkout session from a raw provider object."""

    # Refunds ------------------------------------------------------------------

    @abstractmethod
    def create_refund(
        self,
        *,
        intent_id: str,
        amount: int,
        reason: str,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> RefundInfo:
        """Send `amount` of the intent's charge back to the payer."""

    @abstractmethod
    def list_refunds(
        self,
        *,
        intent_id: str | None = None,
        created_gte: int | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[RefundInfo]:
        """Refunds newest first, optionally one intent's or created since a time (items are RefundInfo)."""

    @abstractmethod
    def refund_from_object(self, obj: dict[str, Any]) -> RefundInfo:
        """Read a refund from a raw provider object."""

    @abstractmethod
    def dispute_from_object(self, obj: dict[str, Any]) -> DisputeInfo:
        """Read a dispute from a raw provider object."""

    @abstractmethod
    def charge_from_object(self, obj: dict[str, Any]) -> ChargeInfo:
        """Read a charge from a raw provider object."""

    # Customers and saved cards --------------------------------------------------

    @abstractmethod
    def create_customer(
        self, *, email: str, name: str, metadata: dict[str, str], idempotency_key: str
    ) -> str:
        """Create a customer; returns its id."""

    @abstractmethod
    def list_payment_methods(self, customer_id: str) -> list[PaymentMethodInfo]:
        """The customer's saved cards."""

    @abstractmethod
    def retrieve_payment_method(self, payment_method_id: str) -> PaymentMethodInfo:
        """One payment method."""

    @abstractmethod
    def detach_payment_method(self, payment_method_id: str, *, idempotency_key: str) -> None:
        """Remove a saved payment method from its customer."""

    @abstractmethod
    def create_setup_intent(self, *, customer_id: str, idempotency_key: str) -> SetupIntentInfo:
        """Start saving a card for later use without charging it."""

    # Events -------------------------------------------------------------------------

    @abstractmethod
    def list_events(
        self, *, created_gt: int | None = None, cursor: str | None = None, limit: int = 100
    ) -> Page[EventInfo]:
        """Events newest first (items are EventInfo)."""

    @abstractmethod
    def check_reachable(self) -> None:
        """Make one cheap read; raise ProviderUnavailable when the provider does not answer."""

    @abstractmethod
    def event_from_payload(self, payload: dict[str, Any]) -> EventInfo:
        """Read a stored event payload (as verify_webhook accepted it) back into an EventInfo."""

    @abstractmethod
    def verify_webhook(self, payload: bytes, signature_header: str) -> EventInfo:
        """Check the signature against every configured secret; raise WebhookSignatureError."""
