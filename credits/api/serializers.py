"""Serializers of the credits API."""

from __future__ import annotations

from rest_framework import serializers

from credits.models import CreditPackage, CreditPurchase, WalletEntry
from payments import money
from payments.api.serializers import IntentRequestSerializer, IntentResponseSerializer


class CreditPackageSerializer(serializers.ModelSerializer):
    price_display = serializers.SerializerMethodField()

    class Meta:
        model = CreditPackage
        fields = ["id", "name", "credits", "price", "currency", "price_display"]

    def get_price_display(self, package: CreditPackage) -> str:
        return money.format_amount(package.price, package.currency)


class CreditPurchaseSerializer(serializers.ModelSerializer):
    package = CreditPackageSerializer(read_only=True)

    class Meta:
        model = CreditPurchase
        fields = ["id", "package", "credits", "price", "currency", "status", "created_at", "paid_at"]


class PurchaseCreateSerializer(IntentRequestSerializer):
    """The package, and optionally a card to charge at once (as a booking's intent/ takes)."""

    package = serializers.IntegerField(min_value=1)


class PurchaseStartedSerializer(IntentResponseSerializer):
    """The purchase, and the same payment contract as a booking's intent/ answer."""

    purchase = CreditPurchaseSerializer()


class WalletEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = WalletEntry
        fields = [
            "id",
            "kind",
            "amount",
            "balance_after",
            "purchase",
            "shortfall",
            "reference",
            "reason",
            "created_at",
        ]


class WalletQuerySerializer(serializers.Serializer):
    before = serializers.IntegerField(min_value=1, required=False, help_text="entries older than this id")


class WalletSerializer(serializers.Serializer):
    balance = serializers.IntegerField()
    entries = WalletEntrySerializer(many=True)
    next = serializers.CharField(allow_null=True)


class SpendRequestSerializer(serializers.Serializer):
    amount = serializers.IntegerField(min_value=1, max_value=10**9)
    reason = serializers.CharField(max_length=255, allow_blank=True, default="")
    reference = serializers.CharField(max_length=100, allow_blank=True, default="")


class SpendResponseSerializer(serializers.Serializer):
    balance = serializers.IntegerField()
    entry = WalletEntrySerializer()
