"""Server-rendered booking pages; they call the same services and selectors as the API."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe

from bookings import selectors, services
from bookings.conf import booking_setting
from bookings.exceptions import BookingError
from bookings.forms import BookingForm, SignupForm
from bookings.models import Booking
from bookings.templatetags.booking_tags import event_time
from config.checkout import failure_text, render_checkout, saved_cards
from payments import money
from payments import selectors as payment_selectors
from payments.conf import payments_settings
from payments.exceptions import PaymentError
from payments.policy import refund_allowed
from payments.states import REFUNDABLE_STATUSES

# The site's icon: a ticket in the accent colour (every browser asks for /favicon.ico, admin
# pages included; an answer keeps 404s out of the log).
FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<rect x="2" y="7" width="28" height="18" rx="4" fill="#3b5bdb"/>'
    '<path d="M21 7v18" stroke="#fff" stroke-width="2" stroke-dasharray="2 2"/>'
    '<circle cx="11" cy="16" r="4" fill="#fff"/></svg>'
)


@require_safe
@cache_control(max_age=86400, public=True)
def favicon(request):
    return HttpResponse(FAVICON, content_type="image/svg+xml")


def event_list(request):
    return render(request, "bookings/event_list.html", {"events": selectors.upcoming_events()})


def _chosen_seats(request, data=None) -> int:
    """The seat count the booker chose (kept through logging in), or 1 when there is none."""
    field = BookingForm.base_fields["quantity"]
    try:
        seats = int((data if data is not None else request.GET).get("quantity", 1))
    except (TypeError, ValueError):
        return 1
    return seats if field.min_value <= seats <= field.max_value else 1


def event_detail(request, pk: int):
    event = get_object_or_404(selectors.upcoming_events(), pk=pk)
    form = BookingForm(request.POST or None, initial={"quantity": _chosen_seats(request)})
    if request.method == "POST":
        if not request.user.is_authenticated:
            # Log in, then back here with the seats still chosen.
            seats = _chosen_seats(request, request.POST)
            back = f"{request.path}?{urlencode({'quantity': seats})}"
            return redirect(f"{reverse('login')}?{urlencode({'next': back})}")
        if form.is_valid():
            try:
                booking = services.booking_create(
                    user=request.user, event_id=event.pk, quantity=form.cleaned_data["quantity"]
                )
            except ValidationError as exc:
                form.add_error(None, exc.messages[0])
            except BookingError as exc:
                form.add_error(None, exc.message)
            else:
                return redirect("booking-pay", pk=booking.pk)
    return render(
        request,
        "bookings/event_detail.html",
        {"event": event, "form": form, "hold_minutes": booking_setting("HOLD_MINUTES")},
    )


def _amounts(booking: Booking) -> dict[str, str]:
    return {
        "subtotal": money.format_amount(booking.subtotal, booking.currency),
        "fee": money.format_amount(booking.fee, booking.currency),
        "total": money.format_amount(booking.total, booking.currency),
    }


def _booking(request, pk: int) -> Booking:
    return get_object_or_404(Booking.objects.select_related("event"), pk=pk, user=request.user)


@login_required
def booking_pay(request, pk: int):
    """The checkout page: amounts, the card field (3-D Secure), a saved card, Stripe's page."""
    booking = _booking(request, pk)
    if booking.status != Booking.Status.PENDING:
        return redirect("booking-payment-result", pk=booking.pk)
    payment = payment_selectors.latest_payment(booking)
    config = {
        "publishableKey": payments_settings.PUBLISHABLE_KEY,
        "api": f"/api/bookings/{booking.pk}/payment/",
        "resultUrl": reverse("booking-payment-result", args=[booking.pk]),
        "paymentStatus": payment.status if payment else None,
        "hosted": True,
    }
    context = {
        "booking": booking,
        "config": config,
        "saved_cards": saved_cards(request.user),
        "failed": failure_text(payment) if payment and payment.status == "failed" else "",
        **_amounts(booking),
    }
    return render_checkout(request, "bookings/checkout.html", context)


@login_required
def payment_result(request, pk: int):
    """Where the payer lands after paying (by card, or back from Stripe's page); it follows the
    payment until the webhook confirms the booking, and says what to do when it did not."""
    booking = _booking(request, pk)
    payment = payment_selectors.latest_payment(booking)
    state, reason = booking.status, ""
    if booking.status == Booking.Status.PENDING:
        settled_badly = payment is None or payment.status in ("failed", "canceled")
        if (payment is not None and payment.status == "failed") or (
            "failed" in request.GET and settled_badly
        ):
            state, reason = "failed", failure_text(payment)
        elif "canceled" in request.GET and not (payment and payment.status in ("processing", "succeeded")):
            state, reason = "failed", "You left Stripe's page before paying, so nothing was charged."
    config = {
        "statusUrl": f"/api/bookings/{booking.pk}/payment/status/",
        "objectUrl": f"/api/bookings/{booking.pk}/",
        "doneStatus": Booking.Status.CONFIRMED,
        "doneText": "Your booking is confirmed. A confirmation email is on its way.",
        "failedText": "The payment did not go through.",
        "failedUrl": f"{request.path}?failed=1",
    }
    context = {"booking": booking, "state": state, "reason": reason, "config": config, **_amounts(booking)}
    return render(request, "bookings/payment_result.html", context)


def _refund_on_cancel(request, booking: Booking) -> dict:
    """What cancelling `booking` now gives back: {payment, amount, allowed, why_not}, and `minor`
    (the amount in minor units) when a refund is allowed."""
    payments = payment_selectors.payments_of(booking)
    payment = payments.sales().first()
    if payment is None:
        if payments.filter(status__in=("processing", "requires_action")).exists():
            why = "A payment for it is going through right now; try again in a minute."
            return {"payment": None, "amount": "", "allowed": False, "why_not": why}
        return {"payment": None, "amount": "", "allowed": True, "why_not": ""}
    if payment.status not in REFUNDABLE_STATUSES:
        why = f"Its payment is {payment.get_status_display().lower()}; please contact us."
        return {"payment": payment, "amount": "", "allowed": False, "why_not": why}
    allowed, most = refund_allowed(user=request.user, payment=payment, starts_at=booking.event.starts_at)
    why_not = ""
    if not allowed:
        window = payments_settings.REFUND_CUTOFF
        closed = event_time(booking.event, booking.event.starts_at - window)
        why_not = f"Refunds closed {closed}, {_hours(window)} before the event."
    elif most <= 0:
        allowed, why_not = False, "Everything that can be refunded has been refunded already."
    fee_kept = allowed and most < payment.refundable_amount()
    return {
        "payment": payment,
        "minor": most if allowed else None,
        "amount": money.format_amount(most, payment.currency) if allowed else "",
        "fee_kept": money.format_amount(payment.refundable_amount() - most, payment.currency)
        if fee_kept
        else "",
        "allowed": allowed,
        "why_not": why_not,
    }


def _hours(delta) -> str:
    hours = int(delta.total_seconds() // 3600)
    return f"{hours} hour{'s' if hours != 1 else ''}"


@login_required
def booking_detail(request, pk: int):
    """One booking: the event, the seats, what was paid and refunded, attempt by attempt."""
    booking = _booking(request, pk)
    attempts = list(payment_selectors.payments_of(booking).order_by("attempt").prefetch_related("refunds"))
    for payment in attempts:
        payment.numbered_refunds = list(
            enumerate(sorted(payment.refunds.all(), key=lambda r: (r.created_at, r.pk)), 1)
        )
    context = {
        "booking": booking,
        "attempts": attempts,
        "can_pay": booking.status == Booking.Status.PENDING,
        "can_cancel": booking.status in (Booking.Status.PENDING, Booking.Status.CONFIRMED),
        **_amounts(booking),
    }
    return render(request, "bookings/booking_detail.html", context)


@login_required
def my_bookings(request):
    rows = []
    for booking in selectors.bookings_of(request.user):
        payment = booking.payment
        rows.append(
            {
                "booking": booking,
                "paid": money.format_amount(payment.total, payment.currency)
                if payment and payment.succeeded_at
                else "",
                "refunded": money.format_amount(booking.refunded, booking.currency)
                if booking.refunded
                else "",
                "can_pay": booking.status == Booking.Status.PENDING,
                "can_cancel": booking.status in (Booking.Status.PENDING, Booking.Status.CONFIRMED),
                **_amounts(booking),
            }
        )
    return render(request, "bookings/my_bookings.html", {"rows": rows})


@login_required
def booking_cancel(request, pk: int):
    """A confirmation step that says what comes back (or why nothing can), then the cancel."""
    booking = _booking(request, pk)
    if booking.status not in (Booking.Status.PENDING, Booking.Status.CONFIRMED):
        messages.info(
            request, f"Booking {booking.reference} is already {booking.get_status_display().lower()}."
        )
        return redirect("booking-detail", pk=booking.pk)
    refund = _refund_on_cancel(request, booking)
    shown = request.POST.get("refund", "")
    changed = refund["payment"] is not None and shown != str(refund.get("minor"))
    if request.method == "POST" and refund["allowed"] and changed:
        # What comes back changed since the page was shown (a refund by staff meanwhile, the
        # policy): the booker confirms the new amount, never an amount they were not shown.
        messages.warning(request, f"What comes back changed since you looked: now {refund['amount']}.")
    elif request.method == "POST" and refund["allowed"]:
        try:
            services.booking_cancel_by_owner(
                booking_id=booking.pk, user=request.user, refund_amount=refund.get("minor")
            )
        except (BookingError, PaymentError) as exc:
            messages.error(request, exc.message)
        else:
            if refund["payment"] is not None:
                messages.success(
                    request,
                    f"Booking {booking.reference} is cancelled. {refund['amount']} is being refunded "
                    f"to the card you paid with; banks take 5–10 days to show it.",
                )
            else:
                messages.success(request, f"Booking {booking.reference} is cancelled. Nothing was charged.")
        return redirect("booking-detail", pk=booking.pk)
    return render(
        request, "bookings/booking_cancel.html", {"booking": booking, "refund": refund, **_amounts(booking)}
    )


def signup(request):
    form = SignupForm(request.POST or None)
    after = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(
        after, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        after = ""
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.get_username()}.")
        # A path, never a view name: redirect() would try to reverse "foo" and fail.
        return HttpResponseRedirect(after or reverse("event-list"))
    return render(request, "registration/signup.html", {"form": form, "next": after})
