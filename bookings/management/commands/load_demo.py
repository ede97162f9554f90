"""Load demo data: a host with upcoming events, a booker, and staff who may refund. Safe to run again."""

from datetime import timedelta

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.utils import timezone

from bookings.models import Event

USERS = [
    # username, password, email, is_staff
    ("host", "host-pass-123", "host@example.com", False),
    ("booker", "booker-pass-123", "booker@example.com", False),
    ("staff", "staff-pass-123", "staff@example.com", True),
]
EVENTS = [
    ("Jazz at the Harbour", "Harbour Hall", 3, 2500, 40, "An evening of quartet jazz by the water."),
    ("Intro to Pottery", "Clay Studio", 7, 4500, 8, "Two hours at the wheel; all materials included."),
    ("Django Meetup", "Tech Hub, Room 2", 10, 1000, 60, "Talks on payments, async views and admin tricks."),
    ("Sunday Trail Run", "North Park Gate", 14, 1500, 25, "A guided 10 km trail run at an easy pace."),
]
STAFF_PERMISSIONS = [
    "refund_payment",
    "view_payment",
    "view_refund",
    "view_webhookevent",
    "change_webhookevent",
    "view_dispute",
    "view_customer",
    "view_booking",
    "view_event",
    "change_event",
    "view_emaillog",
]


class Command(BaseCommand):
    help = "Create demo users and upcoming events (idempotent)."

    def handle(self, *args, **options):
        users = {}
        model = get_user_model()
        for username, password, email, is_staff in USERS:
            user, created = model.objects.get_or_create(username=username, defaults={"email": email})
            if created:
                user.set_password(password)
            user.email, user.is_staff = email, is_staff
            user.save()
            users[username] = user
        users["staff"].user_permissions.add(*Permission.objects.filter(codename__in=STAFF_PERMISSIONS))
        now = timezone.now().replace(minute=0, second=0, microsecond=0)
        for title, venue, days, price, capacity, description in EVENTS:
            Event.objects.update_or_create(
                title=title,
                defaults={
                    "venue": venue,
                    "starts_at": now + timedelta(days=days, hours=19 - now.hour),
                    "price": price,
                    "currency": "usd",
                    "capacity": capacity,
                    "host": users["host"],
                    "description": description,
                },
            )
        self.stdout.write("Demo users (username / password):")
        for username, password, _, is_staff in USERS:
            role = (
                "staff, may refund in admin"
                if is_staff
                else ("event host" if username == "host" else "booker")
            )
            self.stdout.write(f"  {username} / {password}  ({role})")
        self.stdout.write(f"{len(EVENTS)} upcoming events.")
        if apps.is_installed("credits"):
            call_command("load_credit_packages", stdout=self.stdout)
