"""Payment records: payments of any payable, refunds, disputes, webhook events, Stripe customers."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, models
from django.db.models import Q, Sum
from django.db.models.functions import Coalesce

from payments.states import (
    OPEN_STATUSES,
    PAID_STATUSES,
    REFUND_HOLDS_MONEY,
    PaymentStatus,
    RefundStatus,
    refund_reason_label,
)


class Installation(models.Model):
    """This database's identity at Stripe: one row, made when the app is migrated.

    Every idempotency key and every object the app creates at Stripe carries it (or a row's
    own UUID), so two installations on one Stripe account (staging and production, two
    developers, a database reset) never collide or apply each other's objects.
    """

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    _current: str | None = None

    def __str__(self) -> str:
        return f"installation {self.uid}"

    @classmethod
    def current_id(cls) -> str:
        """This installation's id (read once per process; it never changes)."""
        if cls._current is None:
            row = cls.objects.order_by("pk").first()
            if row is None:
                try:
                    row = cls.objects.create(pk=1)
                except IntegrityError:
                    row = cls.objects.get(pk=1)
            cls._current = str(row.uid)
        return cls._current


class Customer(models.Model):
    """The Stripe customer of one user, created once."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payments_customer"
    )
    stripe_customer_id = models.CharField(max_length=255, blank=True, db_index=True)
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Numbers each SetupIntent so its idempotency key follows from the operation.
    setup_intents_created = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.stripe_customer_id or f"customer of user {self.user_id}"


class PaymentQuerySet(models.QuerySet):
    def for_payable(self, payable: models.Model) -> PaymentQuerySet:
        return self.filter(content_type=ContentType.objects.get_for_model(payable), object_id=str(payable.pk))

    def open(self) -> PaymentQuerySet:
        return self.filter(status__in=OPEN_STATUSES)

    def sales(self) -> PaymentQuerySet:
        """Paid attempts that count as the payable's payment (not money refunded as unwanted)."""
        return self.filter(status__in=PAID_STATUSES, unwanted_reason="")

    def unpaid(self) -> PaymentQuerySet:
        """Attempts that could still take money: open ones, and failed ones (a failed intent or an
        open Checkout Session can still be paid) until they are canceled."""
        return self.filter(status__in=OPEN_STATUSES | {PaymentStatus.FAILED})


class Payment(models.Model):
    """One attempt to collect a payable's total; a retry after a failure is a new attempt."""

    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT)
    object_id = models.CharField(max_length=64)
    payable = GenericForeignKey("content_type", "object_id")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payments")
    description = models.CharField(max_length=255, blank=True)

    subtotal = models.BigIntegerField(help_text="Minor units.")
    fee = models.BigIntegerField(default=0, help_text="Minor units.")
    total = models.BigIntegerField(help_text="Minor units; what is charged.")
    currency = models.CharField(max_length=3)

    status = models.CharField(max_length=32, choices=PaymentStatus.choices, default=PaymentStatus.CREATED)
    attempt = models.PositiveIntegerField(default=1)
    # Unique to this attempt in every installation: its idempotency keys and Stripe metadata use it.
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    idempotency_key = models.CharField(max_length=255, unique=True)

    stripe_payment_intent_id = models.CharField(max_length=255, blank=True)
    stripe_checkout_session_id = models.CharField(max_length=255, blank=True)
    # Fixed at the first try of a Checkout Session, so a retry sends Stripe the same parameters.
    checkout_expires_at = models.DateTimeField(null=True, blank=True)
    stripe_charge_id = models.CharField(max_length=255, blank=True)
    stripe_customer_id = models.CharField(max_length=255, blank=True)
    stripe_status = models.CharField(max_length=64, blank=True)

    card_brand = models.CharField(max_length=32, blank=True)
    card_last4 = models.CharField(max_length=4, blank=True)
    last_error_code = models.CharField(max_length=64, blank=True)
    last_error_decline_code = models.CharField(max_length=64, blank=True)
    last_error_message = models.CharField(max_length=500, blank=True)

    # Why money that arrived is not a sale (refunded in full at once): "paid_after_cancel" for an
    # attempt canceled while its payer was paying, "duplicate" when another attempt already paid.
    unwanted_reason = models.CharField(max_length=32, blank=True)
    save_payment_method = models.BooleanField(default=False)
    # Counts confirmations so that each one gets its own idempotency key: a card that
    # failed 3-D Secure may be confirmed again, and must not get the old answer replayed.
    confirmations = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
    succeeded_at = models.DateTimeField(null=True, blank=True)
    # When the card details and the error text were removed (retention); ids, amounts, statuses
    # and times stay for accounting and reconciliation.
    personal_data_pruned_at = models.DateTimeField(null=True, blank=True)

    objects = PaymentQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("refund_payment", "Can refund payments")]
        indexes = [
            models.Index(fields=["content_type", "object_id"]),
            models.Index(fields=["status"]),
            models.Index(fields=["stripe_payment_intent_id"]),
            models.Index(fields=["stripe_checkout_session_id"]),
            models.Index(fields=["stripe_charge_id"]),
            models.Index(fields=["stripe_customer_id"]),
            models.Index(fields=["owner", "-created_at"]),
            models.Index(fields=["-created_at", "-id"]),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(subtotal__gte=0) & Q(fee__gte=0) & Q(total__gt=0),
                name="payment_amounts_positive",
            ),
            models.UniqueConstraint(
                fields=["content_type", "object_id", "attempt"], name="payment_attempt_unique"
            ),
            models.UniqueConstraint(
                fields=["stripe_payment_intent_id"],
                condition=~Q(stripe_payment_intent_id=""),
                name="payment_intent_unique",
            ),
            # A payable has at most one sale: the backstop behind the payable's lock.
            models.UniqueConstraint(
                fields=["content_type", "object_id"],
                condition=Q(
                    status__in=[
                        PaymentStatus.SUCCEEDED,
                        PaymentStatus.PARTIALLY_REFUNDED,
                        PaymentStatus.DISPUTED,
                    ],
                    unwanted_reason="",
                ),
                name="payment_one_sale",
            ),
            # A payable has at most one open attempt: the backstop behind the row lock.
            models.UniqueConstraint(
                fields=["content_type", "object_id"],
                condition=Q(status__in=sorted(OPEN_STATUSES)),
                name="payment_one_open_attempt",
            ),
        ]

    def __str__(self) -> str:
        # Only what never changes: admin's history and "Recent actions" keep this text.
        what = f": {self.description[:60]}" if self.description else ""
        return f"Payment {self.pk}{what}"

    @property
    def payable_reference(self) -> str:
        # get_for_id: from ContentType's own cache, not a query per payment.
        kind = ContentType.objects.get_for_id(self.content_type_id)
        return f"{kind.app_label}.{kind.model}:{self.object_id}"

    def refunded_amount(self) -> int:
        """Minor units refunded or on their way back (pending refunds hold their amount)."""
        holding = REFUND_HOLDS_MONEY
        prefetched = getattr(self, "_prefetched_objects_cache", {}).get("refunds")
        if prefetched is not None:  # a list page prefetched them: no query per payment
            return sum(refund.amount for refund in prefetched if refund.status in holding)
        return self.refunds.filter(status__in=holding).aggregate(total=Sum("amount"))["total"] or 0

    def refundable_amount(self) -> int:
        return max(self.total - self.refunded_amount(), 0)

    def mark_without_refunds(self) -> None:
        """Known to have no refunds (an attempt just made): reading them costs no query."""
        none = Refund.objects.none()
        none._result_cache = []  # as prefetch_related leaves a fetched queryset (no SQL compiled)
        self._prefetched_objects_cache = {"refunds": none}


class RefundQuerySet(models.QuerySet):
    def with_numbers(self) -> RefundQuerySet:
        """Each refund's place among its payment's refunds, counted in the same query."""
        earlier = (
            Refund.objects.filter(payment_id=models.OuterRef("payment_id"))
            .filter(
                Q(created_at__lt=models.OuterRef("created_at"))
                | Q(created_at=models.OuterRef("created_at"), pk__lt=models.OuterRef("pk"))
            )
            .order_by()
            .values("payment_id")
            .annotate(n=models.Count("pk"))
            .values("n")
        )
        return self.annotate(
            earlier_refunds=Coalesce(models.Subquery(earlier, output_field=models.IntegerField()), 0)
        )


class Refund(models.Model):
    """Money sent back for a payment, made here or imported from Stripe."""

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    amount = models.BigIntegerField(help_text="Minor units.")
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=32, choices=RefundStatus.choices, default=RefundStatus.PENDING)
    stripe_refund_id = models.CharField(max_length=255, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    idempotency_key = models.CharField(max_length=255, unique=True)
    failure_reason = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RefundQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status"])]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive"),
            models.UniqueConstraint(
                fields=["stripe_refund_id"],
                condition=~Q(stripe_refund_id=""),
                name="refund_stripe_id_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"Refund {self.number} of payment {self.payment_id}"

    @property
    def number(self) -> int:
        """1 for a payment's first refund, 2 for its second (by creation, then id); lists read
        it from RefundQuerySet.with_numbers()' annotation, one query for the page."""
        annotated = getattr(self, "earlier_refunds", None)
        if annotated is not None:
            return annotated + 1
        if self.pk is None:
            return self.payment.refunds.count() + 1 if self.payment_id else 1
        earlier = Refund.objects.filter(payment_id=self.payment_id).filter(
            Q(created_at__lt=self.created_at) | Q(created_at=self.created_at, pk__lt=self.pk)
        )
        return earlier.count() + 1

    @property
    def reason_display(self) -> str:
        return refund_reason_label(self.reason)


class Dispute(models.Model):
    """A chargeback opened by the payer's bank."""

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="disputes")
    stripe_dispute_id = models.CharField(max_length=255, unique=True)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=64, db_index=True)
    evidence_due_by = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Dispute {self.stripe_dispute_id}"


class WebhookEvent(models.Model):
    """A Stripe event as received: stored before it is processed, unique by Stripe's id."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PROCESSED = "processed", "Processed"
        IGNORED = "ignored", "Ignored"
        FAILED = "failed", "Failed"

    stripe_event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=128, db_index=True)
    api_version = models.CharField(max_length=64, blank=True)
    livemode = models.BooleanField(default=False)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # When the raw payload was replaced by a stub (retention); the event can no longer be replayed.
    payload_pruned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.type} {self.stripe_event_id}"


class ReconcileState(models.Model):
    """Where the last reconciliation started, so the next one reads only what changed since."""

    name = models.CharField(max_length=64, unique=True, default="default")
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)
    last_unresolved = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"reconcile {self.name} at {self.last_started_at}"


class ReconcileListedIntent(models.Model):
    """An intent Stripe listed during one reconciliation run: what the run compares its local
    successes against at the end, kept here rather than in memory (a run's rows are deleted when
    it ends; a crashed run's a day later)."""

    run = models.UUIDField(db_index=True)
    intent_id = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "intent_id"], name="one_listed_intent_per_run")]

    def __str__(self) -> str:
        return f"{self.intent_id} (run {self.run})"


class PaymentEvent(models.Model):
    """One thing that happened to a payment or its refund, never edited: a Stripe call that wrote
    at Stripe, or a status change, each with its cause (payments.timeline)."""

    class Kind(models.TextChoices):
        STRIPE_CALL = "stripe_call", "Stripe call"
        STATUS = "status", "Payment status"
        REFUND_STATUS = "refund_status", "Refund status"

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="events")
    refund = models.ForeignKey(Refund, null=True, blank=True, on_delete=models.PROTECT, related_name="events")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    operation = models.CharField(max_length=64, blank=True)
    idempotency_key = models.CharField(max_length=255, blank=True)
    outcome = models.CharField(max_length=64, blank=True)
    request_id = models.CharField(max_length=255, blank=True)
    from_status = models.CharField(max_length=32, blank=True)
    to_status = models.CharField(max_length=32, blank=True)
    cause = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["payment", "id"], name="payment_event_order")]

    def __str__(self) -> str:
        if self.kind == self.Kind.STRIPE_CALL:
            return f"{self.operation} {self.outcome}"
        return f"{self.from_status or 'new'} → {self.to_status}"
