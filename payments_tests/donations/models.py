"""A donation: a payable that is not a booking."""

from django.conf import settings
from django.db import models


class Donation(models.Model):
    donor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3, default="usd")
    # The donor's number in the charity's own records: a host's field named like one the
    # payments app could use for itself (its queries must never clash with a payable's fields).
    customer_id = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"Donation {self.pk}"
