"""Forms of the booking pages."""

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm

from bookings.conf import booking_setting


class BookingForm(forms.Form):
    quantity = forms.IntegerField(
        min_value=1, max_value=booking_setting("MAX_SEATS_PER_BOOKING"), initial=1, label="Seats"
    )


class SignupForm(UserCreationForm):
    email = forms.EmailField(required=True, help_text="Your booking confirmations are sent here.")

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")
