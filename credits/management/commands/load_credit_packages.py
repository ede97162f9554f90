"""Load the demo credit packages. Safe to run again."""

from django.core.management.base import BaseCommand

from credits.models import CreditPackage

PACKAGES = [
    # name, credits, price (minor units), sort order
    ("Basic: 100 credits", 100, 1000, 1),
    ("Standard: 500 credits (10 % off)", 500, 4500, 2),
    ("Large: 1,200 credits (20 % off)", 1200, 9600, 3),
]


class Command(BaseCommand):
    help = "Create the demo credit packages (idempotent)."

    def handle(self, *args, **options):
        for name, credits, price, order in PACKAGES:
            CreditPackage.objects.update_or_create(
                name=name,
                defaults={"credits": credits, "price": price, "currency": "usd", "sort_order": order},
            )
        self.stdout.write(f"{len(PACKAGES)} credit packages.")
