"""Server-rendered booking pages; they call the same services and selectors as the API."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_POST, require_safe

from bookings import selectors, services
from bookings.exceptions import BookingError
from bookings.forms import BookingForm, SignupForm
from bookings.models import Booking
from config.checkout import render_checkout
from payments import money
from payments.conf import payments_settings
from payments.exceptions import PaymentError
from payments.policy import refund_allowed

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


def event_detail(request, pk: int):
    event = get_object_or_404(selectors.upcoming_events(), pk=pk)
    form = BookingForm(request.POST or None)
    if request.method == "POST":
        if not request.user.is_authenticated:
            return redirect(f"{reverse('login')}?next={request.path}")
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
    return render(request, "bookings/event_detail.html", {"event": event, "form": form})


def _amounts(booking: Booking) -> dict[str, str]:
    return {
        "subtotal": money.format_amount(booking.subtotal, booking.currency),
        "fee": money.format_amount(booking.fee, booking.currency),
        "total": money.format_amount(booking.total, booking.currency),
    }


@login_required
def booking_pay(request, pk: int):
    """The checkout page: amounts, the card field, 3-D Secure; the script drives the payment API."""
    booking = get_object_or_404(Booking.objects.select_related("event"), pk=pk, user=request.user)
    if booking.status != Booking.Status.PENDING:
        return redirect("booking-payment-result", pk=booking.pk)
    latest = selectors.bookings_of(request.user)
    payment = next((b.payment for b in latest if b.pk == booking.pk), None)
    config = {
        "publishableKey": payments_settings.PUBLISHABLE_KEY,
        "api": f"/api/bookings/{booking.pk}/payment/",
        "resultUrl": reverse("booking-payment-result", args=[booking.pk]),
        "paymentStatus": payment.status if payment else None,
    }
    return render_checkout(
        request, "bookings/checkout.html", {"booking": booking, "config": config, **_amounts(booking)}
    )


@login_required
def payment_result(request, pk: int):
    """Where the payer lands after paying; it follows the payment until the webhook confirms it."""
    booking = get_object_or_404(Booking.objects.select_related("event"), pk=pk, user=request.user)
    config = {
        "statusUrl": f"/api/bookings/{booking.pk}/payment/status/",
        "objectUrl": f"/api/bookings/{booking.pk}/",
        "doneStatus": Booking.Status.CONFIRMED,
        "doneText": "Your booking is confirmed. A confirmation email is on its way.",
        "failedText": "The payment did not go through.",
    }
    return render(
        request, "bookings/payment_result.html", {"booking": booking, "config": config, **_amounts(booking)}
    )


@login_required
def my_bookings(request):
    rows = []
    for booking in selectors.bookings_of(request.user):
        payment = booking.payment
        paid = payment is not None and payment.status in ("succeeded", "partially_refunded")
        refundable = (
            paid and refund_allowed(user=request.user, payment=payment, starts_at=booking.event.starts_at)[0]
        )
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
                "can_cancel": booking.status == Booking.Status.PENDING
                or (booking.status == Booking.Status.CONFIRMED and refundable),
                "refund_on_cancel": booking.status == Booking.Status.CONFIRMED,
                **_amounts(booking),
            }
        )
    return render(request, "bookings/my_bookings.html", {"rows": rows})


@login_required
@require_POST
def booking_cancel(request, pk: int):
    booking = get_object_or_404(Booking, pk=pk, user=request.user)
    try:
        services.booking_cancel_by_owner(booking_id=booking.pk, user=request.user)
    except (BookingError, PaymentError) as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Booking {booking.reference} is cancelled.")
    return redirect("my-bookings")


def signup(request):
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.get_username()}.")
        return redirect("event-list")
    return render(request, "registration/signup.html", {"form": form})
