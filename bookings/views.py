"""Server-rendered booking pages."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render

from bookings.models import Booking


@login_required
def payment_result(request, pk: int):
    """Where Stripe Checkout returns to; the page follows the payment until it settles."""
    booking = get_object_or_404(Booking.objects.select_related("event"), pk=pk, user=request.user)
    return render(request, "bookings/payment_result.html", {"booking": booking})
