"""A second installation of the site for tests: its own database, the same Stripe emulator.

Run as `python -m tests.second_installation <booking id> <user id> <event id>` with
DATABASE_URL naming an empty database and STRIPE_API_BASE the emulator: it migrates, makes a
booking with those ids, pays it with a card and prints what it got as JSON.
"""

import json
import os
import sys

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.test_settings")
    django.setup()
    from django.core.management import call_command

    from bookings.services import booking_pay
    from payments.models import Installation, Payment
    from tests.factories import BookingFactory, EventFactory, UserFactory

    booking_id, user_id, event_id = (int(arg) for arg in sys.argv[1:4])
    call_command("migrate", verbosity=0)
    user = UserFactory(pk=user_id, username=f"second-{user_id}")
    booking = BookingFactory(pk=booking_id, user=user, event=EventFactory(pk=event_id, host=user))
    card = sys.argv[4]
    result = booking_pay(booking_id=booking.pk, payment_method_id=card, confirm=True)
    payment = Payment.objects.get(pk=result.payment.pk)
    print(
        json.dumps(
            {
                "installation": Installation.current_id(),
                "booking_id": booking.pk,
                "intent_id": payment.stripe_payment_intent_id,
                "status": payment.status,
                "idempotency_key": payment.idempotency_key,
            }
        )
    )


if __name__ == "__main__":
    main()
