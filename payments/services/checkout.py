"""Paying on Stripe's hosted Checkout page."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from payments.conf import payments_settings
from payments.exceptions import (
    IllegalTransition,
)
from payments.gateway import get_gateway
from payments.gateway.base import CheckoutInfo, CheckoutStatus
from payments.models import Payment
from payments.services.attempts import _open_attempt, payment_cancel
from payments.services.base import (
    CHECKOUT_MIN_AHEAD,
    PaymentTerms,
    _lock_payment,
    _log_extra,
    _payment_metadata,
    _recorded_call,
    logger,
)
from payments.services.customers import customer_get_or_create
from payments.services.sync import payment_sync_checkout

# Hosted checkout ------------------------------------------------------------------------


def payment_checkout_start(
    *, terms: PaymentTerms, success_url: str, cancel_url: str
) -> tuple[Payment, CheckoutInfo]:
    """Start paying on Stripe's hosted page; an open session is reused, a card attempt replaced."""
    payment = _open_attempt(terms)
    gateway = get_gateway()
    if payment.stripe_checkout_session_id:
        session = gateway.retrieve_checkout_session(payment.stripe_checkout_session_id)
        if session.status == CheckoutStatus.OPEN:
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
    with _recorded_call(payment):
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
        raced = bool(locked.stripe_payment_intent_id) and not locked.stripe_checkout_session_id
        if not raced:
            locked.stripe_checkout_session_id = session.id
            locked.stripe_customer_id = customer.stripe_customer_id
            locked.save()
    if raced:
        # A card payment of this attempt started meanwhile (another tab, a double click): it
        # keeps the attempt; the page just made is closed, so only one of them can be paid.
        gateway.expire_checkout_session(session.id, idempotency_key=f"{payment.idempotency_key}:expire-raced")
        raise IllegalTransition("A card payment for this is already under way.", code="payment_in_progress")
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
