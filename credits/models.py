"""Credit packages, their purchases (the payable) and each user's wallet, kept as a ledger."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from config.outbox import OutboxEmail


class CreditPackage(models.Model):
    """What is on sale: so many credits for a price (minor units)."""

    name = models.CharField(max_length=100)
    credits = models.PositiveIntegerField()
    price = models.BigIntegerField(help_text="Minor units.")
    currency = models.CharField(max_length=3, default="usd")
    active = models.BooleanField(default=True)
    sort_order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["sort_order", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(price__gt=0), name="credit_package_price_positive"),
            models.CheckConstraint(condition=Q(credits__gt=0), name="credit_package_credits_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from payments import money

        money.validate_amount(self.price or 0, self.currency)  # chargeable in its currency


class CreditPurchase(models.Model):
    """One purchase of a package: the payable the payments app charges for. The credits and the
    price are copied from the package, so later changes to it never change a purchase."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending payment"
        PAID = "paid", "Paid"
        REFUNDED = "refunded", "Refunded"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="credit_purchases"
    )
    package = models.ForeignKey(CreditPackage, on_delete=models.PROTECT, related_name="purchases")
    credits = models.PositiveIntegerField()
    price = models.BigIntegerField(help_text="Minor units.")
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.credits} credits ({self.package.name}) for {self.user}"

    @property
    def payment_description(self) -> str:
        return f"{self.credits} credits ({self.package.name}), purchase {self.pk}"


class Wallet(models.Model):
    """A user's credits. The balance always equals the sum of the wallet's entries: both are
    written together, under this row's lock, and it never goes below zero."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="credit_wallet"
    )
    balance = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        permissions = [("adjust_wallet", "Can adjust a wallet's credits")]
        constraints = [
            models.CheckConstraint(condition=Q(balance__gte=0), name="wallet_balance_not_negative")
        ]

    def __str__(self) -> str:
        return f"{self.user}: {self.balance} credits"


class WalletEntry(models.Model):
    """One change of a wallet, never edited or deleted. `amount` is signed (credits in or out)."""

    class Kind(models.TextChoices):
        PURCHASE = "purchase", "Purchase"
        REFUND = "refund", "Refund reversal"
        REFUND_REVERSED = "refund_reversed", "Refund failed: credits back"
        # While a refund is asked of Stripe its credits are held (out of reach of a spend), then
        # released as the refund's own entry takes them.
        REFUND_HOLD = "refund_hold", "Held for a refund"
        HOLD_RELEASED = "hold_released", "Hold released"
        SPEND = "spend", "Spend"
        ADJUSTMENT = "adjustment", "Staff adjustment"

    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.BigIntegerField()
    balance_after = models.BigIntegerField()
    purchase = models.ForeignKey(
        CreditPurchase, null=True, blank=True, on_delete=models.PROTECT, related_name="entries"
    )
    # The payments app's refund this entry reverses (its id; None for a refund imported without one).
    refund_id = models.BigIntegerField(null=True, blank=True)
    # Credits a forced refund could not take back because they were spent.
    shortfall = models.BigIntegerField(default=0)
    # A spend's reference, given by the caller so that a retried request spends once.
    reference = models.CharField(max_length=100, blank=True)
    reason = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "wallet entries"
        indexes = [models.Index(fields=["wallet", "-id"], name="wallet_entry_latest")]
        constraints = [
            models.UniqueConstraint(
                fields=["purchase"], condition=Q(kind="purchase"), name="one_credit_entry_per_purchase"
            ),
            models.UniqueConstraint(
                fields=["kind", "refund_id"],
                condition=Q(refund_id__isnull=False),
                name="one_credit_entry_per_refund_and_kind",
            ),
            models.UniqueConstraint(
                fields=["wallet", "reference"], condition=~Q(reference=""), name="one_spend_per_reference"
            ),
            models.CheckConstraint(
                condition=Q(balance_after__gte=0), name="wallet_entry_balance_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.amount:+d}"


class CreditEmail(OutboxEmail):
    """One email about a purchase, sent at most once per kind (purchased, refund:<refund id>)."""

    purchase = models.ForeignKey(CreditPurchase, on_delete=models.CASCADE, related_name="emails")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["purchase", "kind"], name="email_once_per_purchase_kind")
        ]

    def __str__(self) -> str:
        return f"{self.kind} email for purchase {self.purchase_id} ({self.status})"
