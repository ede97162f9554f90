"""Serializers of the payments API: amounts are integers in minor units with their currency."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from payments import money
from payments.conf import payments_settings
from payments.models import Payment, Refund
from payments.states import REFUNDABLE_STATUSES


@extend_schema_field({"type": "string", "pattern": r"^\d+(\.\d+)?$", "example": "50.00"})
class MajorUnitAmountField(serializers.Field):
    """A decimal string in the currency's major unit ("50.00"); converted exactly by the view."""

    default_error_messages = {"not_a_string": 'Give the amount as a decimal string, such as "50.00".'}

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str):
            self.fail("not_a_string")
        return data.strip()

    def to_representation(self, value: object) -> str:
        return str(value)


class JSONBooleanField(serializers.BooleanField):
    """true or false, as JSON writes them; "0", "yes" or 1 are not what the schema promises."""

    def to_internal_value(self, data: object) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


def _payment_method_id(value: str) -> None:
    if value and not value.startswith(("pm_", "card_", "src_")):
        raise serializers.ValidationError("This is not a payment method id (pm_...).")


class RefundSerializer(serializers.ModelSerializer):
    class Meta:
        model = Refund
        fields = [
            "id",
            "amount",
            "currency",
            "reason",
            "status",
            "stripe_refund_id",
            "failure_reason",
            "created_at",
        ]
        read_only_fields = fields


class LastErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    decline_code = serializers.CharField()
    message = serializers.CharField()


class PaymentSerializer(serializers.ModelSerializer):
    refunded = serializers.SerializerMethodField()
    refundable = serializers.SerializerMethodField()
    last_error = serializers.SerializerMethodField()
    refunds = RefundSerializer(many=True, read_only=True)
    payment_intent = serializers.CharField(source="stripe_payment_intent_id", read_only=True)
    checkout_session = serializers.CharField(source="stripe_checkout_session_id", read_only=True)

    class Meta:
        model = Payment
        fields = [
            "id",
            "status",
            "stripe_status",
            "attempt",
            "subtotal",
            "fee",
            "total",
            "currency",
            "refunded",
            "refundable",
            "card_brand",
            "card_last4",
            "last_error",
            "payment_intent",
            "checkout_session",
            "refunds",
            "created_at",
            "updated_at",
            "succeeded_at",
        ]
        read_only_fields = fields

    def get_refunded(self, payment: Payment) -> int:
        return payment.refunded_amount()

    def get_refundable(self, payment: Payment) -> int:
        return payment.refundable_amount() if payment.status in REFUNDABLE_STATUSES else 0

    @extend_schema_field(LastErrorSerializer(allow_null=True))
    def get_last_error(self, payment: Payment) -> dict | None:
        if not payment.last_error_code and not payment.last_error_message:
            return None
        return {
            "code": payment.last_error_code,
            "decline_code": payment.last_error_decline_code,
            "message": payment.last_error_message,
        }


class IntentRequestSerializer(serializers.Serializer):
    payment_method_id = serializers.CharField(
        required=False, allow_blank=True, max_length=255, validators=[_payment_method_id]
    )
    confirm_immediately = JSONBooleanField(required=False, default=False)
    save_payment_method = JSONBooleanField(required=False, default=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("confirm_immediately") and not attrs.get("payment_method_id"):
            raise serializers.ValidationError({"payment_method_id": "Needed to confirm immediately."})
        return attrs


class ConfirmRequestSerializer(serializers.Serializer):
    payment_method_id = serializers.CharField(
        required=False, allow_blank=True, max_length=255, validators=[_payment_method_id]
    )


class RetryRequestSerializer(serializers.Serializer):
    # Without a card the new attempt is returned unconfirmed, for Stripe.js to confirm.
    payment_method_id = serializers.CharField(
        required=False, allow_blank=True, max_length=255, validators=[_payment_method_id]
    )


class RefundRequestSerializer(serializers.Serializer):
    amount = MajorUnitAmountField(
        required=False, help_text='Major units as a string ("50.00"); all when absent.'
    )
    reason = serializers.CharField(required=False, allow_blank=True, max_length=255, default="")

    def amount_in_minor_units(self, currency: str) -> int | None:
        raw = self.validated_data.get("amount")
        if raw is None:
            return None
        try:
            return money.to_minor(raw, currency)
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"amount": exc.messages[0]}, code=exc.code) from None


def _same_site(url: str) -> None:
    """Return URLs only to this site: never an open redirect through Stripe.

    Browsers read a URL more loosely than urlsplit (a backslash is a slash, tabs and newlines are
    dropped): anything they could read differently, or with credentials in it, is refused.
    """
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or "@" in parts.netloc
        or any(c == "\\" or c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url)
    ):
        raise serializers.ValidationError("Return URLs must be plain http(s) addresses of this site.")
    host = parts.hostname or ""
    allowed = {urlsplit(payments_settings.SITE_URL).hostname, *settings.ALLOWED_HOSTS} - {None, ""}
    if host not in allowed and "*" not in allowed:
        raise serializers.ValidationError("Return URLs must point at this site.")


class CheckoutRequestSerializer(serializers.Serializer):
    success_url = serializers.URLField(required=False, max_length=1000, validators=[_same_site])
    cancel_url = serializers.URLField(required=False, max_length=1000, validators=[_same_site])


class IntentResponseSerializer(serializers.Serializer):
    payment = PaymentSerializer()
    client_secret = serializers.CharField()
    requires_action = serializers.BooleanField()
    next_action = serializers.JSONField(allow_null=True)
    publishable_key = serializers.CharField()


class CheckoutResponseSerializer(serializers.Serializer):
    payment = PaymentSerializer()
    session_id = serializers.CharField()
    url = serializers.URLField()


class RefundResponseSerializer(serializers.Serializer):
    refund = RefundSerializer()
    payment = PaymentSerializer()


class PaymentConfigSerializer(serializers.Serializer):
    publishable_key = serializers.CharField()
    currency = serializers.CharField()
    fee_rate = serializers.CharField()
    fee_fixed = serializers.IntegerField()
    min_amount = serializers.IntegerField()
    max_amount = serializers.IntegerField()
    refund_cutoff_hours = serializers.FloatField()
    refund_fee = serializers.BooleanField()


class PaymentMethodSerializer(serializers.Serializer):
    id = serializers.CharField()
    brand = serializers.CharField()
    last4 = serializers.CharField()
    exp_month = serializers.IntegerField(allow_null=True)
    exp_year = serializers.IntegerField(allow_null=True)


class SetupIntentSerializer(serializers.Serializer):
    id = serializers.CharField()
    client_secret = serializers.CharField()
    status = serializers.CharField()
    publishable_key = serializers.CharField()
