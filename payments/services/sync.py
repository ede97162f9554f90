"""Applying the provider's view of an intent, a Checkout Session, a charge or a dispute, only ever
moving state forward."""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence

from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from payments import metrics, signals
from payments.gateway.base import (
    CHECKOUT_INTENT_MARK,
    ChargeInfo,
    ChargeStatus,
    CheckoutInfo,
    CheckoutPaymentStatus,
    CheckoutStatus,
    DisputeInfo,
    IntentInfo,
)
from payments.models import Dispute, Payment, PaymentEvent, Refund
from payments.rows import update_rows
from payments.services.base import (
    _lock_payment,
    _log_extra,
    _send_on_commit,
    _success_on_commit,
    logger,
    payment_id_for,
)
from payments.services.refunds import refund_sync
from payments.services.transitions import _set_status, _settle_refunds
from payments.states import (
    PaymentStatus,
    can_transition,
)

# The statuses a plain success moves from: open or failed attempts. From canceled the money is
# unwanted (refunded); from disputed only the dispute's outcome moves a payment.
_PLAIN_SUCCESS_FROM = tuple(
    s
    for s in PaymentStatus
    if can_transition(s, PaymentStatus.SUCCEEDED)
    and s not in (PaymentStatus.CANCELED, PaymentStatus.DISPUTED)
)
# What a plain success writes on the payment row.
_SUCCESS_FIELDS = (
    "status", "succeeded_at", "stripe_status", "stripe_charge_id", "stripe_customer_id", "card_brand",
    "card_last4", "last_error_code", "last_error_decline_code", "last_error_message", "updated_at",
)  # fmt: skip


def _copy_intent(payment: Payment, intent: IntentInfo) -> None:
    """What the provider says of the intent, onto the payment (what it does not say is kept)."""
    payment.stripe_status = intent.provider_status or payment.stripe_status
    payment.stripe_charge_id = intent.charge_id or payment.stripe_charge_id
    payment.stripe_customer_id = intent.customer_id or payment.stripe_customer_id
    payment.card_brand = intent.card_brand or payment.card_brand
    payment.card_last4 = intent.card_last4 or payment.card_last4
    if intent.error_code or intent.error_message:
        payment.last_error_code = intent.error_code
        payment.last_error_decline_code = intent.decline_code
        payment.last_error_message = intent.error_message[:500]


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
    card_took_it = not payment.stripe_checkout_session_id and payment.stripe_payment_intent_id not in (
        "",
        session.intent_id,
    )
    if card_took_it:
        # A session made for an attempt a card start took meanwhile (another tab), closed at once
        # and never shown: never applied (its expiry would cancel the card's attempt).
        log = logger.error if session.payment_status == CheckoutPaymentStatus.PAID else logger.warning
        log(
            "checkout session of an attempt a card took",
            extra=_log_extra(payment, checkout_session=session.id),
        )
        return payment
    if payment.stripe_checkout_session_id and payment.stripe_checkout_session_id != session.id:
        # Ours by its metadata, but not the session this attempt made: never applied.
        logger.error("checkout session is not the payment's own", extra=_log_extra(payment, other=session.id))
        return payment
    paid = session.payment_status == CheckoutPaymentStatus.PAID and not failed
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
    target = {CheckoutPaymentStatus.PAID: PaymentStatus.SUCCEEDED}.get(session.payment_status)
    if failed:
        target = PaymentStatus.FAILED
    if session.status == CheckoutStatus.EXPIRED:
        target = PaymentStatus.CANCELED
    if reason is None:
        reason = "expired" if session.status == CheckoutStatus.EXPIRED else ""
    if target and payment.status != target and can_transition(payment.status, target):
        _set_status(payment, target, reason=reason)
        if target == PaymentStatus.SUCCEEDED:
            _settle_refunds(payment, None, notify=False)
    return payment


# Syncing from the provider -------------------------------------------------------------


def intent_may_pay(payment: Payment, intent: IntentInfo) -> bool:
    """False for a card start's intent found (by its metadata) for an attempt the hosted page
    took meanwhile (another tab): an attempt with a Checkout Session and no intent yet is paid
    only by an intent a Checkout Session made (CHECKOUT_INTENT_MARK), its own."""
    if not payment.stripe_checkout_session_id or payment.stripe_payment_intent_id:
        return True
    return (intent.metadata or {}).get(CHECKOUT_INTENT_MARK[0]) == CHECKOUT_INTENT_MARK[1]


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
    if not intent_may_pay(payment, intent):
        logger.warning(
            "card intent of an attempt paid on its hosted page", extra=_log_extra(payment, other=intent.id)
        )
        return payment
    payment.stripe_payment_intent_id = intent.id
    _copy_intent(payment, intent)
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


def payments_sync_succeeded(intents: Sequence[tuple[IntentInfo, str]]) -> set[int]:
    """Apply many succeeded intents at once, each with the cause its timeline entry names, in the
    caller's transaction; returns the positions in `intents` of those applied.

    Only plain successes are applied here, with a handful of queries for all of them: the payment
    found by its intent id and still open (or failed), the amount and currency its own, no refund
    recorded yet, and no other sale for its payable (in the database or earlier in `intents`);
    with them, the later events in `intents` that tell the same success again.
    The rest are left for payment_sync_intent, one by one, which decides them as always; the
    outcome of either is the same (the status moved, the timeline entry, the signals on commit).
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("payments_sync_succeeded runs inside the caller's transaction")
    wanted: dict[str, tuple[int, IntentInfo, str]] = {}
    # The same success told again (Stripe sends charge.succeeded beside payment_intent.succeeded):
    # applied after the first, on the payment it made succeeded, as one by one would.
    again: dict[str, list[tuple[int, IntentInfo]]] = {}
    for index, (intent, cause) in enumerate(intents):
        if intent.status != PaymentStatus.SUCCEEDED:
            continue
        if intent.id in wanted:
            again.setdefault(intent.id, []).append((index, intent))
        else:
            wanted[intent.id] = (index, intent, cause)
    if not wanted:
        return set()
    locked = list(
        Payment.objects.select_for_update(of=("self",))
        .filter(stripe_payment_intent_id__in=wanted, status__in=_PLAIN_SUCCESS_FROM)
        .order_by("pk")
    )
    # Read after the locks are held (a refund committed while we waited counts): a payment with
    # refunds is settled one by one.
    refunded = set(
        Refund.objects.filter(payment__in=[row.pk for row in locked]).values_list("payment_id", flat=True)
    )
    payments: list[Payment] = []
    for row in locked:
        intent = wanted[row.stripe_payment_intent_id][1]
        if row.pk not in refunded and (row.total, row.currency) == (intent.amount, intent.currency):
            payments.append(row)
    if not payments:
        return set()
    # The payables' rows, locked after the payments' (as one success at a time takes them), in
    # order: the one-sale-per-payable rule is decided under these locks.
    payables: dict[int, set[str]] = {}
    for payment in payments:
        payables.setdefault(payment.content_type_id, set()).add(payment.object_id)
    for type_id, keys in sorted(payables.items()):
        model = ContentType.objects.get_for_id(type_id).model_class()
        if model is not None:
            ids = sorted(model._meta.pk.to_python(key) for key in keys)
            list(
                model._default_manager.select_for_update().filter(pk__in=ids).order_by("pk").values_list("pk")
            )
    sold = set(
        Payment.objects.filter(
            functools.reduce(
                operator.or_,
                (Q(content_type_id=type_id, object_id__in=keys) for type_id, keys in payables.items()),
            )
        )
        .exclude(pk__in=[payment.pk for payment in payments])
        .sales()
        .values_list("content_type_id", "object_id")
    )
    plain: list[Payment] = []
    for payment in payments:
        payable = (payment.content_type_id, payment.object_id)
        if payable not in sold:
            sold.add(payable)  # a second payment for it in this batch is a duplicate: one by one
            plain.append(payment)
    now = timezone.now()
    entries = []
    applied: set[int] = set()
    for payment in plain:
        index, intent, cause = wanted[payment.stripe_payment_intent_id]
        applied.add(index)
        previous = payment.status
        payment.status = PaymentStatus.SUCCEEDED
        payment.succeeded_at = payment.succeeded_at or now
        payment.updated_at = now
        _copy_intent(payment, intent)
        for later, told_again in again.get(intent.id, []):
            # Once succeeded, a success event only adds what it says (payment_sync_intent and
            # payment_sync_charge): no status change, no entry, no signal. Another amount is
            # left to them, which report it.
            if (told_again.amount, told_again.currency) == (payment.total, payment.currency):
                _copy_intent(payment, told_again)
                applied.add(later)
        entries.append(
            PaymentEvent(
                payment=payment,
                kind=PaymentEvent.Kind.STATUS,
                from_status=previous,
                to_status=PaymentStatus.SUCCEEDED,
                cause=cause[:255],
            )
        )
        logger.info(
            "payment status changed",
            extra=_log_extra(payment, previous=previous, status=PaymentStatus.SUCCEEDED),
        )
        _success_on_commit(payment, "")
    update_rows(plain, _SUCCESS_FIELDS)
    PaymentEvent.objects.bulk_create(entries)
    if plain:
        metrics.inc_on_commit(metrics.PAYMENTS_SUCCEEDED, by=len(plain))
    return applied


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
    paid = charge.status == ChargeStatus.SUCCEEDED and charge.paid
    matches = (charge.amount, charge.currency) == (payment.total, payment.currency)
    # As an intent's success: a dispute only ends by its outcome, and refunds that arrived
    # before the success count once it lands.
    moves = payment.status != PaymentStatus.DISPUTED
    if paid and matches and moves and can_transition(payment.status, PaymentStatus.SUCCEEDED):
        _set_status(payment, PaymentStatus.SUCCEEDED)
        if payment.status == PaymentStatus.SUCCEEDED:
            _settle_refunds(payment, None, notify=False)
    for refund in charge.refunds or []:
        refund_sync(info=refund)
    payment.refresh_from_db()
    return payment


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
    if dispute.closed_in_our_favour:
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
