"""Booking services: create, confirm, cancel and expire bookings; seats are counted under a lock."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone

from bookings import emails
from bookings.conf import booking_setting
from bookings.exceptions import BookingError, SoldOut
from bookings.models import Booking, Event
from payments import money
from payments import selectors as payment_selectors
from payments import services as payment_services
from payments.exceptions import IllegalTransition, ProviderError, RefundNotAllowed
from payments.queue import enqueue
from payments.services import PaymentResult, PaymentTerms
from payments.states import REFUNDABLE_STATUSES, PaymentStatus

logger = logging.getLogger(__name__)

_TRANSITIONS = {
    Booking.Status.PENDING: {
        Booking.Status.CONFIRMED,
        Booking.Status.CANCELLED,
        Booking.Status.EXPIRED,
    },
    Booking.Status.CONFIRMED: {Booking.Status.CANCELLED},
    # A payment that lands after its hold ran out still confirms, if the seats are there; one for
    # an attempt that was canceled is refunded, which cancels the booking for good.
    Booking.Status.EXPIRED: {Booking.Status.CONFIRMED, Booking.Status.CANCELLED},
    Booking.Status.CANCELLED: set(),
}


def _lock_event(event_id: int) -> Event:
    return Event.objects.select_for_update().get(pk=event_id)


def _lock_booking(booking_id: int) -> Booking:
    return Booking.objects.select_for_update(of=("self",)).get(pk=booking_id)


def _holds_seats(booking: Booking) -> bool:
    """A pending booking whose hold has not run out (what Booking.objects.holding_seats counts)."""
    return booking.status == Booking.Status.PENDING and (
        booking.expires_at is None or booking.expires_at > timezone.now()
    )


def _move(booking: Booking, target: str) -> None:
    if target not in _TRANSITIONS[booking.status]:
        raise BookingError(f"A {booking.status} booking cannot become {target}.")
    booking.status = target


def booking_quote(*, event: Event, quantity: int) -> tuple[int, int, int]:
    """(subtotal, fee, total) in minor units for `quantity` seats, validated against the limits."""
    subtotal = event.price * quantity
    fee = money.compute_fee(subtotal, event.currency)
    total = subtotal + fee
    money.validate_amount(total, event.currency)
    return subtotal, fee, total


def _validate_quantity(quantity) -> int:
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise ValidationError("Quantity must be a whole number.", code="invalid_quantity")
    limit = booking_setting("MAX_SEATS_PER_BOOKING")
    if not 1 <= quantity <= limit:
        raise ValidationError(f"Quantity must be between 1 and {limit}.", code="invalid_quantity")
    return quantity


@transaction.atomic
def booking_create(*, user, event_id: int, quantity: int) -> Booking:
    """Hold `quantity` seats for `user`; the amounts come from the event, never from the caller."""
    quantity = _validate_quantity(quantity)
    try:
        event = _lock_event(event_id)
    except Event.DoesNotExist as exc:
        raise ValidationError("No such event.", code="invalid_event") from exc
    if event.starts_at <= timezone.now():
        raise ValidationError("This event has already started.", code="event_past")
    currency = money.normalize_currency(event.currency)
    subtotal, fee, total = booking_quote(event=event, quantity=quantity)
    if event.seats_left() < quantity:
        raise SoldOut(f"Only {event.seats_left()} seats are left.")
    _check_holds(user, quantity)
    booking = Booking.objects.create(
        user=user,
        event=event,
        quantity=quantity,
        subtotal=subtotal,
        fee=fee,
        total=total,
        currency=currency,
        expires_at=timezone.now() + timedelta(minutes=booking_setting("HOLD_MINUTES")),
    )
    logger.info("booking created", extra={"booking_id": booking.pk, "event_id": event.pk})
    return booking


def _check_holds(user, quantity: int) -> None:
    """Refuse a new hold past the user's cap of unpaid holds and held seats (409)."""
    # The user's row serialises their own concurrent bookings.
    get_user_model()._default_manager.select_for_update().filter(pk=user.pk).values_list("pk").get()
    held = Booking.objects.filter(user=user, status=Booking.Status.PENDING, expires_at__gt=timezone.now())
    holds = held.aggregate(count=Count("pk"), seats=Sum("quantity"))
    if holds["count"] >= booking_setting("MAX_OPEN_HOLDS"):
        raise BookingError(
            "You have too many unpaid bookings: pay or cancel one first.", code="too_many_holds"
        )
    if (holds["seats"] or 0) + quantity > booking_setting("MAX_HELD_SEATS"):
        raise BookingError(
            "You hold too many unpaid seats: pay or cancel a booking first.", code="too_many_holds"
        )


@transaction.atomic
def booking_confirm(*, booking_id: int) -> Booking:
    """Mark a paid booking confirmed; idempotent for an already confirmed one."""
    booking = _lock_booking(booking_id)
    if booking.status == Booking.Status.CONFIRMED:
        return booking
    if booking.status == Booking.Status.EXPIRED or not _holds_seats(booking):
        # Its hold ran out (expired, or pending past it): its seats may have been sold since.
        event = _lock_event(booking.event_id)
        if event.seats_left() < booking.quantity:
            logger.error(
                "paid booking has no seats left; it needs a refund",
                extra={"booking_id": booking.pk},
            )
            raise SoldOut("The hold expired and the seats were sold; the payment needs a refund.")
    _move(booking, Booking.Status.CONFIRMED)
    booking.confirmed_at = timezone.now()
    booking.expires_at = None
    booking.save(update_fields=["status", "confirmed_at", "expires_at", "updated_at"])
    # The emails are recorded with the confirmation itself (an outbox): a lost enqueue is swept.
    emails.email_queue(booking=booking, kind="confirmed")
    emails.email_queue(booking=booking, kind="host_confirmed")
    logger.info("booking confirmed", extra={"booking_id": booking.pk})
    return booking


@transaction.atomic
def bookings_confirm(*, booking_ids: list[int]) -> dict[int, BookingError]:
    """Mark many paid bookings confirmed at once (a batch of payments); idempotent. Returns the
    bookings that cannot be, with why (their seats were sold after the hold ran out, or they were
    cancelled): their payments need a refund.

    Pending bookings, the usual case, are confirmed and their emails recorded with a few queries for
    all of them; any other is left to booking_confirm, one by one."""
    bookings = list(
        Booking.objects.select_for_update(of=("self",))
        .select_related("event__host", "user")
        .filter(pk__in=booking_ids)
        .order_by("pk")
    )
    # Within their hold: their seats are theirs. Past it, booking_confirm checks the seats.
    pending = [booking for booking in bookings if _holds_seats(booking)]
    if pending:
        now = timezone.now()
        Booking.objects.filter(pk__in=[booking.pk for booking in pending]).update(
            status=Booking.Status.CONFIRMED, confirmed_at=now, expires_at=None, updated_at=now
        )
        for booking in pending:
            _move(booking, Booking.Status.CONFIRMED)
            booking.confirmed_at, booking.expires_at, booking.updated_at = now, None, now
            logger.info("booking confirmed", extra={"booking_id": booking.pk})
        # The emails are recorded with the confirmation itself (an outbox): a lost enqueue is swept.
        emails.emails_queue(
            [(booking, kind) for booking in pending for kind in ("confirmed", "host_confirmed")]
        )
    refused: dict[int, BookingError] = {}
    for booking in bookings:
        if booking.status != Booking.Status.CONFIRMED:
            try:
                booking_confirm(booking_id=booking.pk)
            except BookingError as error:
                refused[booking.pk] = error
    return refused


@transaction.atomic
def booking_cancel(*, booking_id: int) -> Booking:
    """Cancel a booking and release its seats; idempotent for an already cancelled one."""
    booking = _lock_booking(booking_id)
    if booking.status == Booking.Status.CANCELLED:
        return booking
    _move(booking, Booking.Status.CANCELLED)
    booking.cancelled_at = timezone.now()
    booking.save(update_fields=["status", "cancelled_at", "updated_at"])
    logger.info("booking cancelled", extra={"booking_id": booking.pk})
    return booking


@transaction.atomic
def booking_expire(*, booking_id: int, release_now: bool = False) -> Booking:
    """Release the seats of an unpaid booking whose hold ran out (or, with `release_now`, at once)."""
    booking = _lock_booking(booking_id)
    if booking.status != Booking.Status.PENDING:
        return booking
    if not release_now and booking.expires_at and booking.expires_at > timezone.now():
        raise BookingError("This booking's hold has not run out yet.")
    _move(booking, Booking.Status.EXPIRED)
    booking.save(update_fields=["status", "updated_at"])
    # The booker hears of a failed payment only now, when the hold ends unpaid: an attempt that
    # a retry fixed a minute later is not worth an email.
    if payment_selectors.payments_of(booking).exclude(last_error_code="").exists():
        emails.email_queue(booking=booking, kind="unpaid")
    logger.info("booking expired", extra={"booking_id": booking.pk})
    return booking


@transaction.atomic
def booking_flag_dispute(*, booking_id: int) -> Booking:
    """Mark a booking whose payment is disputed, for staff to look at."""
    booking = _lock_booking(booking_id)
    if booking.disputed_at is None:
        booking.disputed_at = timezone.now()
        booking.save(update_fields=["disputed_at", "updated_at"])
        logger.warning("booking payment disputed", extra={"booking_id": booking.pk})
    return booking


def _payable_booking(booking_id: int, *, loaded: Booking | None = None) -> Booking:
    """The booking to pay for, if it can be paid (`loaded`: the caller read it in this request)."""
    booking = loaded if loaded is not None and loaded.pk == booking_id else None
    if booking is None:
        booking = Booking.objects.select_related("event", "user").get(pk=booking_id)
    if booking.status != Booking.Status.PENDING:
        raise BookingError(
            f"A {booking.get_status_display().lower()} booking cannot be paid.", code="not_payable"
        )
    if booking.expires_at and booking.expires_at <= timezone.now():
        raise BookingError("This booking's hold has run out; book again.", code="hold_expired")
    return booking


def _payment_terms(booking: Booking) -> PaymentTerms:
    """What the payments app is told about a booking: its owner and amounts, never the client's."""
    return PaymentTerms(
        payable=booking,
        owner=booking.user,
        subtotal=booking.subtotal,
        fee=booking.fee,
        total=booking.total,
        currency=booking.currency,
        description=booking.payment_description,
    )


def booking_pay(
    *,
    booking_id: int,
    payment_method_id: str = "",
    confirm: bool = False,
    save_payment_method: bool = False,
    loaded: Booking | None = None,
) -> PaymentResult:
    """Start (or resume) paying for a pending booking; the amount is the booking's own (`loaded`:
    the booking as the caller read it in this request, its user with it, saving a read)."""
    booking = _payable_booking(booking_id, loaded=loaded)
    return payment_services.payment_start(
        terms=_payment_terms(booking),
        payment_method_id=payment_method_id,
        confirm=confirm,
        save_payment_method=save_payment_method,
    )


def booking_retry(*, booking_id: int, payment_method_id: str = "") -> PaymentResult:
    """A new attempt after a failed one, for a booking that can still be paid."""
    booking = _payable_booking(booking_id)
    payment = payment_selectors.latest_payment(booking)
    if payment is None:
        raise BookingError("No payment has been started for this booking yet.", code="no_payment")
    return payment_services.payment_retry(payment=payment, payment_method_id=payment_method_id)


def booking_checkout(*, booking_id: int, success_url: str, cancel_url: str):
    """Start paying for a pending booking on Stripe's hosted page."""
    booking = _payable_booking(booking_id)
    return payment_services.payment_checkout_start(
        terms=_payment_terms(booking), success_url=success_url, cancel_url=cancel_url
    )


def booking_cancel_by_owner(*, booking_id: int, user, refund_amount: int | None = None) -> Booking:
    """The booker cancels: an unpaid booking releases its seats; a paid one is refunded first.

    The refund follows the payments refund policy (within the window, up to the owner's limit):
    `refund_amount` (minor units) when the booker was shown one, else as much as it allows.
    """
    booking = Booking.objects.select_related("event").get(pk=booking_id, user=user)
    if booking.status in (Booking.Status.CANCELLED, Booking.Status.EXPIRED):
        return booking
    payments = payment_selectors.payments_of(booking)
    for unpaid in payments.unpaid():
        payment_services.payment_cancel(payment=unpaid)
    paid = payments.sales().filter(status__in=REFUNDABLE_STATUSES).first()
    if paid is not None:
        try:
            payment_services.refund_request(
                payment=paid, user=user, amount=refund_amount, reason="requested_by_customer",
                deadline=booking.event.starts_at,
            )  # fmt: skip
        except RefundNotAllowed as error:
            if error.code not in ("refund_window_closed", "nothing_to_refund"):
                raise
            raise BookingError(
                "This booking can no longer be cancelled with a refund.", code="refund_window_closed"
            ) from error
    return booking_cancel(booking_id=booking.pk)


def _confirm_paid_hold(booking: Booking, sale) -> bool:
    """Confirm a paid booking whose hold ran out before its confirmation came; if its seats were
    sold meanwhile, release it and refund the payment (as a late success does)."""
    refused = bookings_confirm(booking_ids=[booking.pk])
    if not refused:
        logger.warning("paid booking confirmed by the expiry sweep", extra={"booking_id": booking.pk})
        return True
    logger.error("paid hold ran out and its seats were sold: refunding", extra={"booking_id": booking.pk})
    with transaction.atomic():
        locked = _lock_booking(booking.pk)
        if locked.status == Booking.Status.PENDING:
            # Released without the "not paid" email: it was paid, and its refund email follows.
            _move(locked, Booking.Status.EXPIRED)
            locked.save(update_fields=["status", "updated_at"])
        enqueue("bookings.tasks.refund_unseated_payment", sale.pk)
    return False


def booking_expire_due() -> dict[str, int]:
    """Expire unpaid bookings past their hold: cancel their open intents, release their seats.

    A paid one is confirmed instead: its success signal was lost (the process died between the
    payment's commit and the signal) or is on its way (confirming is idempotent). A booking whose
    payment is already going through (or whose cancel Stripe did not answer) is left for the
    next run.
    """
    outcome = {"expired": 0, "skipped": 0, "confirmed": 0}
    due = Booking.objects.filter(status=Booking.Status.PENDING, expires_at__lte=timezone.now()).order_by("pk")
    for booking in due[:500]:
        # A sale the money of which is still with us (a fully refunded one releases the seats).
        sale = payment_selectors.payments_of(booking).sales().exclude(status=PaymentStatus.REFUNDED).first()
        if sale is not None:
            try:
                confirmed = _confirm_paid_hold(booking, sale)
            except Exception:  # one booking must not stop the sweep for every later one
                logger.exception("paid hold not settled by the sweep", extra={"booking_id": booking.pk})
                outcome["skipped"] += 1
                continue
            outcome["confirmed" if confirmed else "expired"] += 1
            continue
        try:
            for unpaid in payment_selectors.payments_of(booking).unpaid():
                payment_services.payment_cancel(payment=unpaid, reason="expired")
        except (IllegalTransition, ProviderError):
            outcome["skipped"] += 1
            continue
        booking_expire(booking_id=booking.pk)
        outcome["expired"] += 1
    return outcome
