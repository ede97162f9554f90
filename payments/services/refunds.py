"""Refunds: asked for (the one rule), reserved, submitted to the provider with their own key,
given up on, and applied from the provider's view."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.db import transaction

from payments import metrics, money, policy
from payments.exceptions import (
    ProviderError,
    RefundNotAllowed,
)
from payments.gateway import get_gateway
from payments.gateway.base import (
    RefundInfo,
)
from payments.models import Installation, Payment, Refund
from payments.queue import enqueue
from payments.services.base import (
    _lock_payment,
    _log_extra,
    _payment_metadata,
    _record_status,
    _recorded_call,
    logger,
    payment_id_for,
)
from payments.services.transitions import _reserve_refund, _settle_refunds
from payments.states import (
    RefundStatus,
    refund_can_move,
)


def refund_create(
    *, payment: Payment, amount: int | None = None, reason: str = "", requested_by: Any = None
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


def refund_request(
    *,
    payment: Payment,
    user: Any,
    amount: int | None = None,
    reason: str = "",
    deadline: datetime | None = None,
) -> Refund:
    """A person asks for a refund: the one rule for the API and a host's own flows (a booking
    cancelled by its booker; staff in the admin refund through refund_create). Staff with the
    refund permission may refund what is left at any time; the owner up to their limit, until
    REFUND_CUTOFF before `deadline`. `amount` None means as much as they may. Refusals raise
    RefundNotAllowed: `refund_window_closed`, `nothing_to_refund`, or `not_refundable` (too much)."""
    allowed, limit = policy.refund_allowed(user=user, payment=payment, starts_at=deadline)
    if not allowed:
        raise RefundNotAllowed("The refund window has closed.", code="refund_window_closed")
    amount = limit if amount is None else amount
    if limit <= 0:
        raise RefundNotAllowed("Nothing is left to refund.", code="nothing_to_refund")
    if amount > limit:
        raise RefundNotAllowed(f"At most {money.format_amount(limit, payment.currency)} can be refunded.")
    return refund_create(payment=payment, amount=amount, reason=reason, requested_by=user)


def refund_submit(*, refund: Refund) -> Refund:
    """Send a pending refund to the provider with its own key (safe to call again after a failure).

    A retryable failure leaves the refund pending and raises; anything else marks it failed.
    """
    refund = Refund.objects.select_related("payment").get(pk=refund.pk)
    if refund.stripe_refund_id or refund.status != RefundStatus.PENDING:
        return refund
    try:
        with _recorded_call(refund.payment, refund=refund):
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
    previous, refund.status = refund.status, RefundStatus.FAILED
    refund.failure_reason = reason[:255]
    refund.save()
    _record_status(refund.payment, previous, refund.status, refund=refund)
    metrics.inc_on_commit(metrics.REFUNDS, outcome=RefundStatus.FAILED)
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
        metrics.inc_on_commit(metrics.REFUNDS, outcome=metrics.label(info.status))
        _record_status(payment, "", refund.status, refund=refund)
        logger.info("refund imported", extra=_log_extra(payment, stripe_refund=info.id, amount=info.amount))
    else:
        refund = Refund.objects.select_for_update().get(pk=refund.pk)
        # Final only when Stripe said so: one we gave up on (no answer) may have reached Stripe.
        known = bool(refund.stripe_refund_id)
        refund.stripe_refund_id = refund.stripe_refund_id or info.id
        # Stripe is the truth, within the refund's lifecycle (states.REFUND_TRANSITIONS): an older
        # refund.updated arriving after refund.failed changes nothing.
        if refund_can_move(refund.status, info.status, known_to_provider=known):
            if refund.status != info.status or not known:
                metrics.inc_on_commit(metrics.REFUNDS, outcome=metrics.label(info.status))
            if refund.status != info.status:
                _record_status(payment, refund.status, info.status, refund=refund)
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
