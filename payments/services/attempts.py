"""Paying by card: an attempt started, confirmed (3-D Secure included), retried after a
failure, canceled or expired, refreshed."""

from __future__ import annotations

import contextlib
import copy
import uuid
from datetime import timedelta
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, connection, connections, router, transaction
from django.utils import timezone

from payments import metrics
from payments.exceptions import (
    CardError,
    IllegalTransition,
    NotFound,
    ProviderError,
)
from payments.gateway import get_gateway
from payments.gateway.base import IntentInfo
from payments.models import Customer, Payment, PaymentEvent
from payments.rows import insert_and_update
from payments.services.base import (
    PaymentResult,
    PaymentTerms,
    _lock_payable,
    _lock_payment,
    _log_extra,
    _payment_metadata,
    _recorded_call,
    _write_entries,
    logger,
)
from payments.services.customers import customer_get_or_create
from payments.services.sync import payment_sync_checkout, payment_sync_intent
from payments.services.transitions import _set_status
from payments.states import (
    OPEN_STATUSES,
    PAID_STATUSES,
    PaymentStatus,
    can_transition,
    check_transition,
)


@transaction.atomic
def _open_attempt(terms: PaymentTerms, *, save_payment_method: bool = False) -> Payment:
    """The payable's open attempt, or a new one; refuses what is already paid.

    Under the payable's lock, which every success also takes: "already paid?" and "make a new
    attempt" cannot interleave with a success being applied. Payment rows are read, not locked.
    """
    payable = terms.payable
    customer_id = _lock_payable(payable, customer_of=terms.owner)
    # One read for the three questions (a payable has a handful of attempts).
    attempts = list(Payment.objects.for_payable(payable))
    if any(p.status in PAID_STATUSES and not p.unwanted_reason for p in attempts):  # as sales()
        raise IllegalTransition("This has already been paid.", code="already_paid")
    existing = next((p for p in attempts if p.status in OPEN_STATUSES), None)
    if existing is not None:
        if (existing.total, existing.currency) != (terms.total, terms.currency):
            raise IllegalTransition("Another payment of a different amount is open; cancel it first.")
        return existing
    attempt = max((p.attempt for p in attempts), default=0) + 1
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
        stripe_customer_id=customer_id,  # the payer's, when they have one: their intent's customer
    )
    payment.mark_without_refunds()  # the answer need not read them
    logger.info("payment attempt created", extra=_log_extra(payment, attempt=attempt, total=terms.total))
    metrics.inc_on_commit(metrics.PAYMENTS_STARTED)
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
    if payment.stripe_checkout_session_id:
        # The payer left Stripe's hosted page to pay by card here: close that page first, or
        # it could still be paid beside the card (a canceled attempt paid late is refunded).
        payment_cancel(payment=payment)
        payment = _open_attempt(terms, save_payment_method=save_payment_method)
    gateway = get_gateway()
    linked = False
    if payment.stripe_payment_intent_id:
        intent = gateway.retrieve_intent(payment.stripe_payment_intent_id)
    else:
        # The attempt's customer is its owner's (read with the lock); a payer resuming another's
        # attempt pays as their own customer.
        known = payment.stripe_customer_id if payment.owner_id == terms.owner.pk else ""
        customer_id = known or customer_get_or_create(user=terms.owner).stripe_customer_id
        # The card is part of the key: after Stripe refuses one, another card is a new request
        # (never the refused one's key with other parameters); the same card clicked twice
        # replays. A second intent made this way is never confirmed: the first one stored is.
        card_part = f":{payment_method_id}" if payment_method_id else ""
        calls: list[PaymentEvent] = []
        with _recorded_call(payment, into=calls):
            intent = gateway.create_intent(
                amount=payment.total,
                currency=payment.currency,
                idempotency_key=f"{payment.idempotency_key}:create{card_part}",
                metadata=_payment_metadata(payment),
                description=payment.description,
                customer_id=customer_id,
                payment_method_id=payment_method_id,
                save_payment_method=payment.save_payment_method,
            )
        linked = _link_new_intent(payment, intent, calls)
    if not linked:
        payment = payment_sync_intent(intent=intent, payment_id=payment.pk) or payment
        if payment.stripe_checkout_session_id and payment.stripe_payment_intent_id != intent.id:
            # The hosted page took the attempt while this intent was made (another tab): the
            # sync refused the intent (intent_may_pay); the page keeps the attempt.
            _drop_raced_intent(payment, intent.id)
            raise IllegalTransition(
                "A payment on Stripe's page is already under way for this.", code="payment_in_progress"
            )
    if confirm and payment.status in (PaymentStatus.CREATED, PaymentStatus.FAILED):
        # The intent may carry this card already (set at creation): don't set it twice.
        new_method = "" if payment_method_id == intent.payment_method_id else payment_method_id
        return payment_confirm(payment=payment, payment_method_id=new_method)
    return PaymentResult(payment=payment, intent=intent)


def _link_new_intent(payment: Payment, intent: IntentInfo, calls: list[PaymentEvent]) -> bool:
    """Record the call that made the intent and, for an intent still waiting for its card (the
    usual start), link it to the attempt: False when anything else happened (payment_sync_intent
    decides then, as after any call).

    The entry and the link are one statement (one round trip, no transaction around it); if it
    fails, they are written as any entry is, where a timeline that cannot be written never fails
    the payment."""
    if intent.status != PaymentStatus.CREATED or intent.error_code or intent.error_message:
        _write_entries(payment, calls)
        return False
    fields = {
        "stripe_payment_intent_id": intent.id,
        "stripe_status": intent.provider_status or payment.stripe_status,
        "stripe_customer_id": intent.customer_id or payment.stripe_customer_id,
        "card_brand": intent.card_brand or payment.card_brand,
        "card_last4": intent.card_last4 or payment.card_last4,
        "updated_at": timezone.now(),
    }
    # Only the attempt as it was opened: still waiting, linked to no other intent, and not taken
    # meanwhile by a Checkout Session (another tab: the attempt is the hosted page's then).
    waiting = Payment.objects.filter(
        pk=payment.pk,
        status=PaymentStatus.CREATED,
        stripe_payment_intent_id__in=("", intent.id),
        stripe_checkout_session_id="",
    )
    alias = router.db_for_write(Payment)
    database = connections[alias]
    try:
        # Inside a host's transaction, a savepoint keeps a failed statement from spoiling it.
        outside = database.get_autocommit() and not database.in_atomic_block
        with contextlib.nullcontext() if outside else transaction.atomic(using=alias):
            linked = (insert_and_update(calls, waiting, fields) if calls else waiting.update(**fields)) == 1
    except DatabaseError:
        with transaction.atomic(using=alias):
            _write_entries(payment, calls)
            linked = waiting.update(**fields) == 1
    if linked:
        for name, value in fields.items():
            setattr(payment, name, value)
    return linked


def _drop_raced_intent(payment: Payment, intent_id: str) -> None:
    """Cancel at Stripe the intent a card start made for an attempt the hosted page took first.
    Its client secret is never handed out, so nothing can confirm it; cancelling is tidiness,
    and a failure to cancel is only logged. Its events find the attempt by its metadata, and
    payment_sync_intent refuses it there (not made by the attempt's session)."""
    try:
        with _recorded_call(payment):
            get_gateway().cancel_intent(
                intent_id, idempotency_key=f"{payment.idempotency_key}:cancel:{intent_id}"
            )
    except ProviderError:
        logger.warning("raced intent not canceled", extra=_log_extra(payment, other=intent_id))
    logger.info(
        "card start lost the attempt to a checkout session", extra=_log_extra(payment, other=intent_id)
    )


def _ensure_payers_card(*, payment_method_id: str, owner: Any) -> None:
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
        # Making its intent failed (Stripe unreachable): the host starts it again through its own
        # checks (payment_start), as the API's confirm does.
        raise IllegalTransition("This payment has not been started.", code="not_started")
    payment.confirmations += 1
    payment.save(update_fields=["confirmations", "updated_at"])
    return payment


def payment_confirm(*, payment: Payment, payment_method_id: str = "") -> PaymentResult:
    """Charge the payment's intent, with a new card if given; reports 3-D Secure as requires_action.

    A declined card records the decline on the payment and raises CardError.
    """
    if payment.status == PaymentStatus.REQUIRES_ACTION and not payment_method_id:
        # After the bank's challenge: Stripe may have charged the card by now.
        intent = get_gateway().retrieve_intent(payment.stripe_payment_intent_id)
        return PaymentResult(payment=_record_confirmation(payment, intent), intent=intent)
    _ensure_payers_card(payment_method_id=payment_method_id, owner=payment.owner)
    payment = _next_confirmation(payment.pk)
    gateway = get_gateway()
    key = f"{payment.idempotency_key}:confirm:{payment.confirmations}"
    intent_id = payment.stripe_payment_intent_id
    try:
        if payment_method_id:
            with _recorded_call(payment):
                gateway.set_intent_payment_method(
                    intent_id, payment_method_id=payment_method_id, idempotency_key=f"{key}:set-method"
                )
        with _recorded_call(payment):
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
    return PaymentResult(payment=_record_confirmation(payment, intent), intent=intent)


# What Stripe answered to a confirm that a failed local write must not turn into an error: the
# money is taken or on its way, or the bank's challenge is waiting for the payer.
_ANSWERS_TO_PASS_ON = (PaymentStatus.SUCCEEDED, PaymentStatus.PROCESSING, PaymentStatus.REQUIRES_ACTION)


def _record_confirmation(payment: Payment, intent: IntentInfo) -> Payment:
    """The payment with Stripe's answer to its confirm applied.

    If Stripe charged the card but writing that down fails (the database is busy or down), the
    payer must not read an error that asks for another card: the answer says what Stripe said
    (the row is left as it was), and the webhook, the status page's refresh or reconciliation
    records it once the database answers.
    """
    try:
        return payment_sync_intent(intent=intent, payment_id=payment.pk) or payment
    except DatabaseError:
        # Inside a host's transaction that can no longer commit, an answer would hide that the
        # host's own writes are lost: the error goes up.
        if intent.status not in _ANSWERS_TO_PASS_ON or connection.needs_rollback:
            raise
        logger.exception(
            "provider answered but recording it failed: left to the webhook and reconciliation",
            extra=_log_extra(payment, provider=intent.status),
        )
        answered = copy.copy(payment)
        answered.status = intent.status
        return answered


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
            with _recorded_call(payment):
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
        with _recorded_call(payment):
            session = gateway.expire_checkout_session(
                payment.stripe_checkout_session_id, idempotency_key=f"{payment.idempotency_key}:expire"
            )
    except ProviderError as error:
        if error.retryable:
            raise
        # No longer open: paid, or expired already.
        session = gateway.retrieve_checkout_session(payment.stripe_checkout_session_id)
    return payment_sync_checkout(session=session, reason=reason) or payment


def payments_expire_stale(*, older_than: timedelta) -> dict[str, int]:
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
