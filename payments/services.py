"""Payment services: the only code that writes payment state. Atomic and row-locked.

Every call that moves money follows the same three steps: (1) under a lock, record
what is about to happen with an idempotency key derived from the operation, and
commit; (2) call the provider with that key, holding no lock; (3) under a lock,
apply what the provider answered, only ever moving state forward. A crash, a retry
or a double click between any two steps repeats the same provider call with the
same key, which the provider answers with the same object.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, models, transaction
from django.db.models import Max
from django.dispatch import Signal
from django.utils import timezone

from payments import money, signals
from payments.conf import payments_settings
from payments.exceptions import (
    CardError,
    IllegalTransition,
    NotFound,
    PaymentError,
    ProviderError,
    RefundNotAllowed,
)
from payments.gateway import get_gateway
from payments.gateway.base import (
    ChargeInfo,
    CheckoutInfo,
    DisputeInfo,
    IntentInfo,
    PaymentMethodInfo,
    RefundInfo,
    SetupIntentInfo,
)
from payments.models import Customer, Dispute, Installation, Payment, Refund
from payments.queue import enqueue
from payments.states import (
    OPEN_STATUSES,
    PAID_STATUSES,
    REFUND_REVERSALS,
    REFUNDABLE_STATUSES,
    PaymentStatus,
    RefundStatus,
    can_transition,
    check_transition,
)

logger = logging.getLogger(__name__)

_STATUS_SIGNALS: dict[str, Signal] = {
    PaymentStatus.SUCCEEDED: signals.payment_succeeded,
    PaymentStatus.FAILED: signals.payment_failed,
    PaymentStatus.CANCELED: signals.payment_canceled,
}
_HOLDING_REFUND = (RefundStatus.PENDING, RefundStatus.REQUIRES_ACTION, RefundStatus.SUCCEEDED)
_FINAL_REFUND = (RefundStatus.FAILED, RefundStatus.CANCELED)
# Stripe refuses a Checkout Session that expires sooner than 30 minutes after it is created.
CHECKOUT_MIN_AHEAD = timedelta(minutes=31)
# The reason recorded on the automatic refund of a payment that arrived after its attempt was canceled.
PAID_AFTER_CANCEL_REASON = "paid_after_cancel"


@dataclass(frozen=True)
class PaymentTerms:
    """What the host app asks to be paid: for what, by whom, how much (minor units) and why.

    Checked on creation: a known currency, a chargeable total, and total = subtotal + fee.
    """

    payable: models.Model
    owner: Any
    subtotal: int
    fee: int
    total: int
    currency: str
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "currency", money.normalize_currency(self.currency))
        money.validate_amount(self.total, self.currency)
        if self.subtotal + self.fee != self.total or self.subtotal < 0 or self.fee < 0:
            raise PaymentError("The total must be the subtotal plus the fee.", code="invalid_amount")

    @classmethod
    def of(cls, payment: Payment) -> PaymentTerms:
        """The terms an earlier attempt was made on (for a retry)."""
        if payment.payable is None:
            raise IllegalTransition("What this payment was for no longer exists.")
        return cls(
            payable=payment.payable,
            owner=payment.owner,
            subtotal=payment.subtotal,
            fee=payment.fee,
            total=payment.total,
            currency=payment.currency,
            description=payment.description,
        )


@dataclass(frozen=True)
class PaymentResult:
    """A payment and the provider's view of its intent (None when nothing was asked of it)."""

    payment: Payment
    intent: IntentInfo | None = None


def _log_extra(payment: Payment, **fields) -> dict:
    return {
        "payment_id": payment.pk,
        "payable": payment.payable_reference,
        "payment_intent": payment.stripe_payment_intent_id,
        **fields,
    }


def is_foreign(metadata: dict[str, str] | None) -> bool:
    """True for an object another installation made: its metadata names another installation.

    Objects without the mark (made in the dashboard, or before it existed) are not foreign; they
    are matched by the Stripe ids stored on our rows only, never by their metadata.
    """
    other = (metadata or {}).get("installation")
    return bool(other) and other != Installation.current_id()


def _payment_metadata(payment: Payment) -> dict[str, str]:
    """What every Stripe object made for a payment carries: whose it is, in this installation."""
    return {
        "installation": Installation.current_id(),
        "payment_uid": str(payment.uid),
        "payment_id": str(payment.pk),
        "payable": payment.payable_reference,
    }


def _send_on_commit(signal, **kwargs) -> None:
    # robust: a failing receiver (an email that cannot be queued) is logged, never undoes the payment.
    transaction.on_commit(lambda: signal.send_robust(sender=Payment, **kwargs) and None, robust=True)


def _lock_payment(payment_id: int) -> Payment:
    return Payment.objects.select_for_update(of=("self",)).get(pk=payment_id)


def _set_status(payment: Payment, target: str, *, reason: str = "") -> None:
    """Move a locked payment to `target`, or raise IllegalTransition and change nothing."""
    previous = payment.status
    check_transition(previous, target)
    unwanted = ""
    if target == PaymentStatus.SUCCEEDED and previous != PaymentStatus.DISPUTED:
        _lock_payable_of(payment)
        unwanted = _unwanted_payment_reason(payment, previous)
    elif target in OPEN_STATUSES and previous not in OPEN_STATUSES:
        # A failed attempt moving again (another card): as a start, under the payable's lock.
        _lock_payable_of(payment)
    payment.status = target
    payment.unwanted_reason = unwanted or payment.unwanted_reason
    if target == PaymentStatus.SUCCEEDED and payment.succeeded_at is None:
        payment.succeeded_at = timezone.now()
    payment.save()
    logger.info("payment status changed", extra=_log_extra(payment, previous=previous, status=target))
    if unwanted:
        _refund_unwanted_payment(payment, reason=unwanted)
        return
    signal = _STATUS_SIGNALS.get(target)
    # A won dispute returns a payment to succeeded: that is not a new success.
    if signal and not (target == PaymentStatus.SUCCEEDED and previous == PaymentStatus.DISPUTED):
        _send_on_commit(signal, payment=payment, reason=reason)


def _unwanted_payment_reason(payment: Payment, previous: str) -> str:
    """Why money that just arrived is not a sale: its attempt was canceled (the payable expired or
    was cancelled while the payer was paying), or another attempt already paid for the payable."""
    if previous == PaymentStatus.CANCELED:
        return PAID_AFTER_CANCEL_REASON
    others = Payment.objects.filter(content_type_id=payment.content_type_id, object_id=payment.object_id)
    if others.exclude(pk=payment.pk).sales().exists():
        return "duplicate"
    return ""


def _refund_unwanted_payment(payment: Payment, *, reason: str) -> None:
    """Record a refund of what is left of an unwanted payment in this transaction and submit it
    once it commits (never a sale: no success signal; the refund's own signal tells the host)."""
    if payment.refundable_amount() <= 0:
        return  # refunded already (in the dashboard, before we heard of the payment)
    refund = _reserve_refund(payment_id=payment.pk, amount=None, reason=reason, requested_by=None)
    logger.error(
        "unwanted payment: refunding what is left of it",
        extra=_log_extra(payment, refund_id=refund.pk, amount=refund.amount, reason=reason),
    )
    enqueue("payments.tasks.retry_refund", refund.pk)


@transaction.atomic
def payment_transition(*, payment: Payment, status: str) -> Payment:
    """Move a payment to `status` under a row lock; raise IllegalTransition if not allowed."""
    locked = _lock_payment(payment.pk)
    _set_status(locked, status)
    return locked


# Customers ----------------------------------------------------------------------------


def customer_get_or_create(*, user) -> Customer:
    """The user's Stripe customer, created at Stripe once (the key is derived from the user)."""
    try:
        customer, _ = Customer.objects.get_or_create(user=user)
    except IntegrityError:
        customer = Customer.objects.get(user=user)
    if customer.stripe_customer_id:
        return customer
    stripe_id = get_gateway().create_customer(
        email=getattr(user, "email", "") or "",
        name=(user.get_full_name() if hasattr(user, "get_full_name") else "") or "",
        metadata={"installation": Installation.current_id(), "user_id": str(user.pk)},
        idempotency_key=f"customer:{customer.uid}",
    )
    Customer.objects.filter(pk=customer.pk, stripe_customer_id="").update(stripe_customer_id=stripe_id)
    customer.refresh_from_db()
    return customer


def payment_methods_list(*, user) -> list[PaymentMethodInfo]:
    """The user's saved cards (none before their first payment)."""
    customer = Customer.objects.filter(user=user).exclude(stripe_customer_id="").first()
    if customer is None:
        return []
    return get_gateway().list_payment_methods(customer.stripe_customer_id)


def payment_method_detach(*, user, payment_method_id: str) -> None:
    """Remove one of the user's saved cards; a card that is not theirs is 'not found'."""
    if payment_method_id not in {m.id for m in payment_methods_list(user=user)}:
        raise NotFound("No such saved card.")
    get_gateway().detach_payment_method(
        payment_method_id, idempotency_key=f"detach:{Installation.current_id()}:{payment_method_id}"
    )
    logger.info("payment method detached", extra={"user_id": user.pk, "payment_method": payment_method_id})


def setup_intent_create(*, user) -> SetupIntentInfo:
    """Start saving a card for the user (Stripe.js confirms it with the card element)."""
    customer = customer_get_or_create(user=user)
    with transaction.atomic():
        locked = Customer.objects.select_for_update().get(pk=customer.pk)
        locked.setup_intents_created += 1
        locked.save(update_fields=["setup_intents_created"])
    return get_gateway().create_setup_intent(
        customer_id=locked.stripe_customer_id,
        idempotency_key=f"setup:{locked.stripe_customer_id}:{locked.setup_intents_created}",
    )


# Starting a payment ------------------------------------------------------------------


def _lock_payable(payable: models.Model) -> None:
    """Serialise payment starts and successes for one payable on the payable's own row."""
    type(payable)._default_manager.select_for_update().filter(pk=payable.pk).values_list("pk").get()


def _lock_payable_of(payment: Payment) -> None:
    """The same lock, taken by a success: after the payment's own row (a start never waits for a
    payment row while holding this one, so the order cannot deadlock)."""
    model = payment.content_type.model_class()
    if model is not None:
        model._default_manager.select_for_update().filter(pk=payment.object_id).values_list("pk").first()


@transaction.atomic
def _open_attempt(terms: PaymentTerms, *, save_payment_method: bool = False) -> Payment:
    """The payable's open attempt, or a new one; refuses what is already paid.

    Under the payable's lock, which every success also takes: "already paid?" and "make a new
    attempt" cannot interleave with a success being applied. Payment rows are read, not locked.
    """
    payable = terms.payable
    _lock_payable(payable)
    payments = Payment.objects.for_payable(payable)
    if payments.sales().exists():
        raise IllegalTransition("This has already been paid.", code="already_paid")
    existing = payments.filter(status__in=OPEN_STATUSES).first()
    if existing is not None:
        if (existing.total, existing.currency) != (terms.total, terms.currency):
            raise IllegalTransition("Another payment of a different amount is open; cancel it first.")
        return existing
    attempt = (payments.aggregate(n=Max("attempt"))["n"] or 0) + 1
    content_type = ContentType.objects.get_for_model(payable)
    uid = uuid.uuid4()
    payment = Payment.objects.create(
        content_type=content_type,
        object_id=str(payable.pk),
        owner=terms.owner,
        description=terms.description[:255],
        subtotal=terms.subtotal,
        fee=terms.fee,
        total=terms.total,
        currency=terms.currency,
        attempt=attempt,
        save_payment_method=save_payment_method,
        uid=uid,
        idempotency_key=f"payment:{uid}",
    )
    logger.info("payment attempt created", extra=_log_extra(payment, attempt=attempt, total=terms.total))
    return payment


def payment_start(
    *,
    terms: PaymentTerms,
    payment_method_id: str = "",
    confirm: bool = False,
    save_payment_method: bool = False,
) -> PaymentResult:
    """Start (or resume) paying on `terms`: a double click gets the same intent back."""
    _ensure_payers_card(payment_method_id=payment_method_id, owner=terms.owner)
    payment = _open_attempt(terms, save_payment_method=save_payment_method)
    gateway = get_gateway()
    if payment.stripe_payment_intent_id:
        intent = gateway.retrieve_intent(payment.stripe_payment_intent_id)
    else:
        customer = customer_get_or_create(user=terms.owner)
        # The card is part of the key: after Stripe refuses one, another card is a new request
        # (never the refused one's key with other parameters); the same card clicked twice
        # replays. A second intent made this way is never confirmed: the first one stored is.
        card_part = f":{payment_method_id}" if payment_method_id else ""
        intent = gateway.create_intent(
            amount=payment.total,
            currency=payment.currency,
            idempotency_key=f"{payment.idempotency_key}:create{card_part}",
            metadata=_payment_metadata(payment),
            description=payment.description,
            customer_id=customer.stripe_customer_id,
            payment_method_id=payment_method_id,
            save_payment_method=payment.save_payment_method,
        )
    payment = payment_sync_intent(intent=intent, payment_id=payment.pk) or payment
    if confirm and payment.status in (PaymentStatus.CREATED, PaymentStatus.FAILED):
        # The intent may carry this card already (set at creation): don't set it twice.
        new_method = "" if payment_method_id == intent.payment_method_id else payment_method_id
        return payment_confirm(payment=payment, payment_method_id=new_method)
    return PaymentResult(payment=payment, intent=intent)


def _ensure_payers_card(*, payment_method_id: str, owner) -> None:
    """A card given by id is a new one (Stripe.js made it; no customer yet) or one the payer
    saved; another customer's saved card answers "not found", never a charge."""
    if not payment_method_id:
        return
    method = get_gateway().retrieve_payment_method(payment_method_id)
    if not method.customer_id:
        return
    own = Customer.objects.filter(user=owner).values_list("stripe_customer_id", flat=True).first()
    if method.customer_id != own:
        logger.warning("card of another customer refused", extra={"user_id": owner.pk})
        raise NotFound("No such card.")


# Confirming, retrying, cancelling ----------------------------------------------------


@transaction.atomic
def _next_confirmation(payment_id: int) -> Payment:
    payment = _lock_payment(payment_id)
    if payment.status in PAID_STATUSES or payment.status == PaymentStatus.PROCESSING:
        raise IllegalTransition("This payment is already paid or being processed.", code="already_paid")
    if payment.status == PaymentStatus.CANCELED:
        raise IllegalTransition("This payment was canceled.")
    if not payment.stripe_payment_intent_id:
        raise IllegalTransition("This payment has not been started.")
    payment.confirmations += 1
    payment.save(update_fields=["confirmations", "updated_at"])
    return payment


def payment_confirm(*, payment: Payment, payment_method_id: str = "") -> PaymentResult:
    """Charge the payment's intent, with a new card if given; reports 3-D Secure as requires_action.

    A declined card records the decline on the payment and raises CardError.
    """
    if payment.status == PaymentStatus.REQUIRES_ACTION and not payment_method_id:
        intent = get_gateway().retrieve_intent(payment.stripe_payment_intent_id)
        return PaymentResult(payment=payment_sync_intent(intent=intent) or payment, intent=intent)
    _ensure_payers_card(payment_method_id=payment_method_id, owner=payment.owner)
    payment = _next_confirmation(payment.pk)
    gateway = get_gateway()
    key = f"{payment.idempotency_key}:confirm:{payment.confirmations}"
    intent_id = payment.stripe_payment_intent_id
    try:
        if payment_method_id:
            gateway.set_intent_payment_method(
                intent_id, payment_method_id=payment_method_id, idempotency_key=f"{key}:set-method"
            )
        intent = gateway.confirm_intent(intent_id, idempotency_key=key)
    except CardError as error:
        _record_decline(payment.pk, error)
        raise
    except ProviderError as error:
        # Stripe's 409 while another request holds the intent (a double click) clears by itself.
        if error.retryable and error.code != "provider_busy":
            raise
        # A second click racing the first finds the intent already moving: report that.
        intent = gateway.retrieve_intent(intent_id)
        if intent.status not in (
            PaymentStatus.PROCESSING,
            PaymentStatus.SUCCEEDED,
            PaymentStatus.REQUIRES_ACTION,
        ):
            raise
    return PaymentResult(payment=payment_sync_intent(intent=intent) or payment, intent=intent)


@transaction.atomic
def _record_decline(payment_id: int, error: CardError) -> None:
    payment = _lock_payment(payment_id)
    payment.last_error_code = error.code or ""
    payment.last_error_decline_code = error.decline_code or ""
    payment.last_error_message = error.message[:500]
    if can_transition(payment.status, PaymentStatus.FAILED):
        _set_status(payment, PaymentStatus.FAILED)
    else:
        payment.save()
    logger.info(
        "card declined", extra=_log_extra(payment, error_code=error.code, decline_code=error.decline_code)
    )


def payment_retry(*, payment: Payment, payment_method_id: str = "") -> PaymentResult:
    """After a failure: cancel the failed intent and start a new attempt, charged to
    `payment_method_id` when given, else returned unconfirmed for Stripe.js to confirm.

    A decline Stripe.js saw may not have reached us yet: an open attempt is asked about first.
    """
    payment = payment_refresh(payment=payment)
    terms = PaymentTerms.of(payment)
    if payment.status in OPEN_STATUSES:
        # Not failed after all (a browser error, not a decline): carry on with the same attempt.
        return payment_start(
            terms=terms, payment_method_id=payment_method_id, confirm=bool(payment_method_id)
        )
    if payment.status not in (PaymentStatus.FAILED, PaymentStatus.CANCELED):
        raise IllegalTransition("Only a failed payment can be retried.")
    # A canceled latest attempt: an earlier retry canceled it but could not start the next one.
    payment_cancel(payment=payment)
    return payment_start(
        terms=terms,
        payment_method_id=payment_method_id,
        confirm=bool(payment_method_id),
        save_payment_method=payment.save_payment_method,
    )


def payment_cancel(*, payment: Payment, reason: str = "") -> Payment:
    """Cancel an unpaid attempt, at the provider too; a paid one raises IllegalTransition.

    `reason` travels with the payment_canceled signal ("expired" releases a booking's seats).
    """
    payment = Payment.objects.get(pk=payment.pk)
    if payment.status == PaymentStatus.CANCELED:
        return payment
    check_transition(payment.status, PaymentStatus.CANCELED)
    if payment.stripe_checkout_session_id:
        # Close the hosted page first, or the payer could still pay for what is gone.
        payment = _expire_checkout(payment, reason=reason)
        if payment.status == PaymentStatus.CANCELED:
            return payment
        if payment.status not in OPEN_STATUSES:
            raise IllegalTransition("The payment could not be canceled: it is already being paid.")
    if payment.stripe_payment_intent_id:
        gateway = get_gateway()
        try:
            intent = gateway.cancel_intent(
                payment.stripe_payment_intent_id, idempotency_key=f"{payment.idempotency_key}:cancel"
            )
        except ProviderError as error:
            if error.retryable and error.code != "provider_busy":
                raise
            intent = gateway.retrieve_intent(payment.stripe_payment_intent_id)
            if error.retryable and intent.status != PaymentStatus.CANCELED:
                raise  # busy with another request that did not cancel it: try again later
        synced = payment_sync_intent(intent=intent, reason=reason)
        if synced is not None and synced.status != PaymentStatus.CANCELED:
            raise IllegalTransition("The payment could not be canceled: it is already being paid.")
        return synced or payment
    with transaction.atomic():
        locked = _lock_payment(payment.pk)
        _set_status(locked, PaymentStatus.CANCELED, reason=reason)
    return locked


def _expire_checkout(payment: Payment, *, reason: str) -> Payment:
    """Expire the payment's Checkout Session at the provider and apply what it then says."""
    gateway = get_gateway()
    try:
        session = gateway.expire_checkout_session(
            payment.stripe_checkout_session_id, idempotency_key=f"{payment.idempotency_key}:expire"
        )
    except ProviderError as error:
        if error.retryable:
            raise
        # No longer open: paid, or expired already.
        session = gateway.retrieve_checkout_session(payment.stripe_checkout_session_id)
    return payment_sync_checkout(session=session, reason=reason) or payment


def payments_expire_stale(*, older_than) -> dict[str, int]:
    """Cancel open attempts untouched for `older_than` (a timedelta); returns what happened."""
    cutoff = timezone.now() - older_than
    outcome = {"canceled": 0, "skipped": 0}
    for payment in Payment.objects.open().filter(updated_at__lt=cutoff).order_by("pk")[:500]:
        try:
            payment_cancel(payment=payment, reason="expired")
            outcome["canceled"] += 1
        except (IllegalTransition, ProviderError) as error:
            # Paid meanwhile, or Stripe unreachable: the next run looks again.
            outcome["skipped"] += 1
            logger.info("stale payment not canceled", extra=_log_extra(payment, error_code=error.code))
    return outcome


def payment_refresh(*, payment: Payment) -> Payment:
    """Ask the provider about a payment that is still moving; settled ones are returned as they are."""
    payment = Payment.objects.get(pk=payment.pk)
    gateway = get_gateway()
    if payment.status in OPEN_STATUSES and payment.stripe_payment_intent_id:
        return (
            payment_sync_intent(intent=gateway.retrieve_intent(payment.stripe_payment_intent_id)) or payment
        )
    if payment.status in OPEN_STATUSES and payment.stripe_checkout_session_id:
        return (
            payment_sync_checkout(
                session=gateway.retrieve_checkout_session(payment.stripe_checkout_session_id)
            )
            or payment
        )
    return payment


# Hosted checkout ------------------------------------------------------------------------


def payment_checkout_start(
    *, terms: PaymentTerms, success_url: str, cancel_url: str
) -> tuple[Payment, CheckoutInfo]:
    """Start paying on Stripe's hosted page; an open session is reused, a card attempt replaced."""
    payment = _open_attempt(terms)
    gateway = get_gateway()
    if payment.stripe_checkout_session_id:
        session = gateway.retrieve_checkout_session(payment.stripe_checkout_session_id)
        if session.status == "open":
            return payment, session
        # Expired (or paid) meanwhile: apply that; a new attempt gets a session of its own.
        payment_sync_checkout(session=session)
        payment = _open_attempt(terms)
    if payment.stripe_payment_intent_id and not payment.stripe_checkout_session_id:
        payment_cancel(payment=payment)
        payment = _open_attempt(terms)
    expires_at = _checkout_expiry(payment.pk)
    if expires_at is None:
        # An earlier try of this attempt went unanswered too long ago to repeat it: start afresh
        # (a session it may have made belongs to the canceled attempt, refunded if ever paid).
        payment_cancel(payment=payment)
        payment = _open_attempt(terms)
        expires_at = _checkout_expiry(payment.pk)
        if expires_at is None:  # a new attempt's expiry is always ahead; never reached
            raise IllegalTransition("This payment could not be restarted.")
    customer = customer_get_or_create(user=terms.owner)
    session = gateway.create_checkout_session(
        amount=payment.total,
        currency=payment.currency,
        product_name=payment.description or "Payment",
        success_url=success_url,
        cancel_url=cancel_url,
        client_reference_id=str(payment.uid),
        metadata=_payment_metadata(payment),
        expires_at=expires_at,
        idempotency_key=f"{payment.idempotency_key}:checkout",
        customer_id=customer.stripe_customer_id,
    )
    with transaction.atomic():
        locked = _lock_payment(payment.pk)
        locked.stripe_checkout_session_id = session.id
        locked.stripe_customer_id = customer.stripe_customer_id
        locked.save()
    logger.info("checkout session created", extra=_log_extra(locked, checkout_session=session.id))
    return locked, session


@transaction.atomic
def _checkout_expiry(payment_id: int) -> datetime | None:
    """When the attempt's Checkout Session expires, fixed at its first try so that a retry sends
    Stripe the same parameters under the same key; None once that is too close to repeat."""
    payment = _lock_payment(payment_id)
    now = timezone.now()
    if payment.checkout_expires_at is None:
        payment.checkout_expires_at = now + payments_settings.CHECKOUT_EXPIRES_AFTER
        payment.save(update_fields=["checkout_expires_at", "updated_at"])
    elif payment.checkout_expires_at < now + CHECKOUT_MIN_AHEAD:
        return None
    return payment.checkout_expires_at


def payment_id_for(
    *, intent_id: str = "", session_id: str = "", charge_id: str = "", metadata: dict[str, str] | None = None
) -> int | None:
    """The id of the payment a provider object belongs to: by the Stripe ids stored on our rows,
    else (an object whose id we have not stored yet) by this installation's mark in its metadata."""
    for field, value in (
        ("stripe_charge_id", charge_id),
        ("stripe_payment_intent_id", intent_id),
        ("stripe_checkout_session_id", session_id),
    ):
        if value:
            found = Payment.objects.filter(**{field: value}).values_list("pk", flat=True).first()
            if found:
                return found
    metadata = metadata or {}
    if metadata.get("installation") != Installation.current_id():
        return None
    try:
        uid = uuid.UUID(metadata.get("payment_uid") or "")
    except ValueError:
        return None
    return Payment.objects.filter(uid=uid).values_list("pk", flat=True).first()


@transaction.atomic
def payment_sync_checkout(
    *, session: CheckoutInfo, failed: bool = False, reason: str | None = None
) -> Payment | None:
    """Apply a checkout session's state: link its intent; paid -> succeeded; expired -> canceled.

    `failed` is set for an asynchronous payment method that failed after the session completed;
    `reason` goes with a cancellation ("expired" when the session ran out by itself).
    """
    payment_id = payment_id_for(session_id=session.id, metadata=session.metadata)
    if payment_id is None:
        logger.warning("checkout session for no known payment", extra={"checkout_session": session.id})
        return None
    payment = _lock_payment(payment_id)
    if payment.stripe_checkout_session_id and payment.stripe_checkout_session_id != session.id:
        # Ours by its metadata, but not the session this attempt made: never applied.
        logger.error("checkout session is not the payment's own", extra=_log_extra(payment, other=session.id))
        return payment
    paid = session.payment_status == "paid" and not failed
    if paid and (session.amount_total, session.currency) != (payment.total, payment.currency):
        # Never mark paid what was paid for another amount: reconciliation reports it.
        logger.error(
            "checkout session amount differs from the payment's",
            extra=_log_extra(payment, checkout_session=session.id, session_amount=session.amount_total),
        )
        return payment
    if not payment.stripe_checkout_session_id:
        payment.stripe_checkout_session_id = session.id
    if session.intent_id and not payment.stripe_payment_intent_id:
        payment.stripe_payment_intent_id = session.intent_id
    if session.customer_id and not payment.stripe_customer_id:
        payment.stripe_customer_id = session.customer_id
    payment.save()
    target = {"paid": PaymentStatus.SUCCEEDED}.get(session.payment_status)
    if failed:
        target = PaymentStatus.FAILED
    if session.status == "expired":
        target = PaymentStatus.CANCELED
    if reason is None:
        reason = "expired" if session.status == "expired" else ""
    if target and payment.status != target and can_transition(payment.status, target):
        _set_status(payment, target, reason=reason)
        if target == PaymentStatus.SUCCEEDED:
            _settle_refunds(payment, None, notify=False)
    return payment


# Syncing from the provider -------------------------------------------------------------


@transaction.atomic
def payment_sync_intent(
    *, intent: IntentInfo, payment_id: int | None = None, reason: str = ""
) -> Payment | None:
    """Apply the provider's view of an intent, only ever moving the payment forward.

    Used after every provider call, by webhooks and by reconciliation. Returns None
    when the intent belongs to no payment of ours.
    """
    found = payment_id or payment_id_for(intent_id=intent.id, metadata=intent.metadata)
    if found is None:
        logger.warning("intent for no known payment", extra={"payment_intent": intent.id})
        return None
    payment = _lock_payment(found)
    if payment.stripe_payment_intent_id and payment.stripe_payment_intent_id != intent.id:
        logger.warning("intent does not match the payment's", extra=_log_extra(payment, other=intent.id))
        return payment
    payment.stripe_payment_intent_id = intent.id
    payment.stripe_status = intent.provider_status or payment.stripe_status
    payment.stripe_charge_id = intent.charge_id or payment.stripe_charge_id
    payment.stripe_customer_id = intent.customer_id or payment.stripe_customer_id
    payment.card_brand = intent.card_brand or payment.card_brand
    payment.card_last4 = intent.card_last4 or payment.card_last4
    if intent.error_code or intent.error_message:
        payment.last_error_code = intent.error_code
        payment.last_error_decline_code = intent.decline_code
        payment.last_error_message = intent.error_message[:500]
    target = intent.status
    if target == PaymentStatus.SUCCEEDED and (intent.amount, intent.currency) != (
        payment.total,
        payment.currency,
    ):
        # Never mark paid what was paid for another amount: reconciliation reports it.
        logger.error(
            "intent amount differs from the payment's",
            extra=_log_extra(payment, intent_amount=intent.amount, total=payment.total),
        )
        payment.save()
        return payment
    # An intent stays succeeded through a dispute: only the dispute's outcome ends one.
    moves = payment.status != PaymentStatus.DISPUTED
    if moves and target != payment.status and can_transition(payment.status, target):
        _set_status(payment, target, reason=reason)
        if target == PaymentStatus.SUCCEEDED:
            # Refunds that arrived before the success now count.
            _settle_refunds(payment, None, notify=False)
    else:
        if target != payment.status:
            logger.info(
                "older provider state ignored",
                extra=_log_extra(payment, status=payment.status, provider=target),
            )
        payment.save()
    return payment


# Refunds -------------------------------------------------------------------------------


@transaction.atomic
def _reserve_refund(*, payment_id: int, amount: int | None, reason: str, requested_by) -> Refund:
    """Record a pending refund, checking the refundable balance under the payment's lock."""
    payment = _lock_payment(payment_id)
    if payment.status not in REFUNDABLE_STATUSES:
        raise RefundNotAllowed("Only a paid payment can be refunded.")
    refundable = payment.refundable_amount()
    amount = refundable if amount is None else amount
    if amount <= 0 or amount > refundable:
        raise RefundNotAllowed(
            f"At most {money.format_amount(refundable, payment.currency)} can be refunded."
            if refundable
            else "Nothing is left to refund."
        )
    unit = money.chargeable_unit(payment.currency)
    if amount % unit:
        raise RefundNotAllowed(
            f"{payment.currency.upper()} refunds must be a multiple of "
            f"{money.format_amount(unit, payment.currency)}."
        )
    uid = uuid.uuid4()
    refund = Refund.objects.create(
        payment=payment,
        amount=amount,
        currency=payment.currency,
        reason=reason[:255],
        requested_by=requested_by,
        uid=uid,
        idempotency_key=f"refund:{uid}",
    )
    logger.info("refund reserved", extra=_log_extra(payment, refund_id=refund.pk, amount=amount))
    return refund


def refund_create(
    *, payment: Payment, amount: int | None = None, reason: str = "", requested_by=None
) -> Refund:
    """Refund `amount` (all that is left when None) of a paid payment; never more than was paid.

    When Stripe cannot be reached the refund stays pending (its amount reserved) and a task
    submits it later with the same idempotency key; the pending refund is returned.
    """
    refund = _reserve_refund(payment_id=payment.pk, amount=amount, reason=reason, requested_by=requested_by)
    try:
        return refund_submit(refund=refund)
    except ProviderError as error:
        if not error.retryable:
            raise
        enqueue("payments.tasks.retry_refund", refund.pk)
        logger.warning("refund deferred: provider unavailable", extra={"refund_id": refund.pk})
        return Refund.objects.get(pk=refund.pk)


def refund_submit(*, refund: Refund) -> Refund:
    """Send a pending refund to the provider with its own key (safe to call again after a failure).

    A retryable failure leaves the refund pending and raises; anything else marks it failed.
    """
    refund = Refund.objects.select_related("payment").get(pk=refund.pk)
    if refund.stripe_refund_id or refund.status != RefundStatus.PENDING:
        return refund
    try:
        info = get_gateway().create_refund(
            intent_id=refund.payment.stripe_payment_intent_id,
            amount=refund.amount,
            reason=refund.reason,
            metadata={
                **_payment_metadata(refund.payment),
                "refund_uid": str(refund.uid),
                "refund_id": str(refund.pk),
            },
            idempotency_key=refund.idempotency_key,
        )
    except ProviderError as error:
        if not error.retryable:
            _fail_refund(refund.pk, error.message)
        raise
    return refund_sync(info=info, refund_id=refund.pk) or Refund.objects.get(pk=refund.pk)


def refund_give_up(*, refund_id: int, reason: str) -> None:
    """After the last retry: mark a never-submitted refund failed so staff see it."""
    _fail_refund(refund_id, f"Gave up: {reason}")


@transaction.atomic
def _fail_refund(refund_id: int, reason: str) -> None:
    refund = Refund.objects.select_for_update().get(pk=refund_id)
    if refund.status != RefundStatus.PENDING or refund.stripe_refund_id:
        return  # Stripe has it (a webhook got here first): Stripe's word stands
    refund.status = RefundStatus.FAILED
    refund.failure_reason = reason[:255]
    refund.save()
    logger.warning("refund failed", extra={"refund_id": refund.pk, "payment_id": refund.payment_id})


@transaction.atomic
def refund_sync(*, info: RefundInfo, refund_id: int | None = None) -> Refund | None:
    """Apply the provider's view of a refund; refunds made in the dashboard are imported."""
    payment_id = payment_id_for(intent_id=info.intent_id, charge_id=info.charge_id, metadata=info.metadata)
    if payment_id is None:
        logger.warning("refund for no known payment", extra={"stripe_refund": info.id})
        return None
    payment = _lock_payment(payment_id)
    refund = (
        (Refund.objects.filter(pk=refund_id).first() if refund_id else None)
        or Refund.objects.filter(stripe_refund_id=info.id).first()
        or _refund_by_metadata(info.metadata, payment)
    )
    newly_recorded = refund is None or not refund.stripe_refund_id
    if refund is None:
        refund = Refund.objects.create(
            payment=payment,
            amount=info.amount,
            currency=info.currency or payment.currency,
            reason=info.reason,
            status=info.status,
            stripe_refund_id=info.id,
            idempotency_key=f"refund:stripe:{info.id}",
        )
        logger.info("refund imported", extra=_log_extra(payment, stripe_refund=info.id, amount=info.amount))
    else:
        refund = Refund.objects.select_for_update().get(pk=refund.pk)
        # Final only when Stripe said so: one we gave up on (no answer) may have reached Stripe.
        final = refund.status in _FINAL_REFUND and bool(refund.stripe_refund_id)
        refund.stripe_refund_id = refund.stripe_refund_id or info.id
        # Stripe is the truth, except that a settled refund never goes back to pending and a
        # failed or canceled one is final (an older refund.updated may arrive after refund.failed).
        if not final and (
            info.status not in (RefundStatus.PENDING, RefundStatus.REQUIRES_ACTION)
            or refund.status in (RefundStatus.PENDING, RefundStatus.REQUIRES_ACTION)
        ):
            refund.status = info.status
        refund.failure_reason = info.failure_reason or refund.failure_reason
        refund.save()
    _settle_refunds(payment, refund, notify=newly_recorded)
    return refund


def _refund_by_metadata(metadata: dict[str, str], payment: Payment) -> Refund | None:
    """Our refund row for a provider refund we made but whose id we have not stored yet."""
    if metadata.get("installation") != Installation.current_id():
        return None
    try:
        uid = uuid.UUID(metadata.get("refund_uid") or "")
    except ValueError:
        return None
    return Refund.objects.filter(uid=uid, payment=payment).first()


def _settle_refunds(payment: Payment, refund: Refund | None, *, notify: bool) -> None:
    """Move a locked payment to (partially_)refunded from its refunds, or back when one failed;
    tell the host of a new refund."""
    held = payment.refunds.filter(status__in=_HOLDING_REFUND, stripe_refund_id__gt="")
    refunded = held.aggregate(total=models.Sum("amount"))["total"] or 0
    if refunded >= payment.total:
        target = PaymentStatus.REFUNDED
    elif refunded > 0:
        target = PaymentStatus.PARTIALLY_REFUNDED
    else:
        target = PaymentStatus.SUCCEEDED
    if refunded and payment.status != target and can_transition(payment.status, target):
        _set_status(payment, target)
    elif target in REFUND_REVERSALS.get(payment.status, ()):
        # A refund failed after it succeeded: the money is ours again and refundable again.
        previous, payment.status = payment.status, target
        payment.save(update_fields=["status", "updated_at"])
        logger.error(
            "a refund failed at the provider: the payment holds its money again",
            extra=_log_extra(payment, previous=previous, status=target, refunded=refunded),
        )
        if refund is not None:
            _send_on_commit(signals.payment_refund_failed, payment=payment, refund=refund)
    if notify and refund is not None and refund.status in _HOLDING_REFUND:
        _send_on_commit(
            signals.payment_refunded,
            payment=payment,
            refund=refund,
            fully_refunded=payment.status == PaymentStatus.REFUNDED,
        )


@transaction.atomic
def payment_sync_charge(*, charge: ChargeInfo) -> Payment | None:
    """Apply a charge: its id and card, success if it was paid, and the refunds it lists."""
    payment_id = payment_id_for(intent_id=charge.intent_id, charge_id=charge.id)
    if payment_id is None:
        logger.warning("charge for no known payment", extra={"charge": charge.id})
        return None
    payment = _lock_payment(payment_id)
    payment.stripe_charge_id = payment.stripe_charge_id or charge.id
    payment.card_brand = charge.card_brand or payment.card_brand
    payment.card_last4 = charge.card_last4 or payment.card_last4
    payment.save()
    paid = charge.status == "succeeded" and charge.paid
    matches = (charge.amount, charge.currency) == (payment.total, payment.currency)
    if paid and matches and can_transition(payment.status, PaymentStatus.SUCCEEDED):
        _set_status(payment, PaymentStatus.SUCCEEDED)
    for refund in charge.refunds or []:
        refund_sync(info=refund)
    payment.refresh_from_db()
    return payment


_DISPUTE_CLOSED_IN_OUR_FAVOUR = frozenset({"won", "warning_closed"})


@transaction.atomic
def dispute_sync(*, dispute: DisputeInfo) -> Dispute | None:
    """Record a dispute and flag the payment; a dispute closed in our favour restores it."""
    payment_id = payment_id_for(intent_id=dispute.intent_id, charge_id=dispute.charge_id)
    if payment_id is None:
        logger.warning("dispute for no known payment", extra={"dispute": dispute.id})
        return None
    payment = _lock_payment(payment_id)
    row, created = Dispute.objects.select_for_update().get_or_create(
        stripe_dispute_id=dispute.id,
        defaults={
            "payment": payment,
            "amount": dispute.amount,
            "currency": dispute.currency,
            "reason": dispute.reason,
            "status": dispute.status,
            "evidence_due_by": dispute.evidence_due_by,
        },
    )
    changed = created or row.status != dispute.status
    if not created:
        row.status = dispute.status
        row.evidence_due_by = dispute.evidence_due_by or row.evidence_due_by
        row.save()
    if dispute.status in _DISPUTE_CLOSED_IN_OUR_FAVOUR:
        if payment.status == PaymentStatus.DISPUTED:
            refunded = payment.refunded_amount()
            _set_status(payment, PaymentStatus.PARTIALLY_REFUNDED if refunded else PaymentStatus.SUCCEEDED)
    elif can_transition(payment.status, PaymentStatus.DISPUTED):
        _set_status(payment, PaymentStatus.DISPUTED)
    if changed:
        logger.warning(
            "dispute recorded", extra=_log_extra(payment, dispute=dispute.id, status=dispute.status)
        )
        _send_on_commit(signals.payment_disputed, payment=payment, dispute=row)
    return row
