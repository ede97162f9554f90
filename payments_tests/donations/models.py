"""A donation: a payable that is not a booking."""

from django.conf import settings
from django.db import models


class Donation(models.Model):
    donor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3, default="usd")

    def __str__(self) -> str:
        return f"Donation {self.pk}"
