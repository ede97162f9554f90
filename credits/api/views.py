"""Views of the credits API: thin wrappers around the credit and payment services."""

from __future__ import annotations

from contextlib import contextmanager

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from credits import services
from credits.api.serializers import (
    CreditPackageSerializer,
    CreditPurchaseSerializer,
    PurchaseCreateSerializer,
    PurchaseStartedSerializer,
    SpendRequestSerializer,
    SpendResponseSerializer,
    WalletEntrySerializer,
    WalletQuerySerializer,
    WalletSerializer,
)
from credits.exceptions import CreditsError
from credits.models import CreditPackage, CreditPurchase, WalletEntry
from payments.api.errors import ErrorSerializer, exception_handler
from payments.api.throttles import PaymentRateThrottle
from payments.api.views import (
    ERRORS,
    PAY_ERRORS,
    PayablePaymentHistoryViewSet,
    PayablePaymentViewSet,
    intent_response_body,
)
from payments.exceptions import PaymentError

WALLET_PAGE = 20


class CreditPackageViewSet(viewsets.ReadOnlyModelViewSet):
    """The packages on sale."""

    serializer_class = CreditPackageSerializer
    permission_classes = [permissions.AllowAny]
    queryset = CreditPackage.objects.filter(active=True)
    pagination_class = None


class CreditPurchaseViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """The user's purchases; creating one starts paying for it."""

    serializer_class = CreditPurchaseSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return CreditPurchase.objects.none()
        return CreditPurchase.objects.filter(user=self.request.user).select_related("package")

    def get_throttles(self):
        if self.action == "create":
            return [PaymentRateThrottle()]
        return super().get_throttles()

    @extend_schema(request=PurchaseCreateSerializer, responses={201: PurchaseStartedSerializer, **PAY_ERRORS})
    def create(self, request: Request, *args, **kwargs) -> Response:
        """Buy a package: the purchase and its payment, as a booking's payment/intent/ answers."""
        body = PurchaseCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            purchase = services.purchase_create(user=request.user, package_id=body.validated_data["package"])
        except CreditsError as error:
            raise ValidationError({"package": [error.message]}) from None
        try:
            result = services.purchase_pay(
                purchase_id=purchase.pk,
                payment_method_id=body.validated_data.get("payment_method_id", ""),
                confirm=body.validated_data["confirm_immediately"],
                save_payment_method=body.validated_data["save_payment_method"],
            )
        except PaymentError as error:
            # The purchase exists: the answer names it, so the payer can confirm, retry or ask its status.
            answer = exception_handler(error, {"view": self})
            answer.data["purchase"] = CreditPurchaseSerializer(purchase).data
            return answer
        purchase.refresh_from_db()
        answer = {"purchase": CreditPurchaseSerializer(purchase).data, **intent_response_body(result)}
        return Response(answer, status=status.HTTP_201_CREATED)


PURCHASE_PK = OpenApiParameter(
    "purchase_pk", OpenApiTypes.INT, OpenApiParameter.PATH, description="The purchase's id"
)


@extend_schema(parameters=[PURCHASE_PK])
class PurchasePaymentViewSet(PayablePaymentViewSet):
    """/api/credits/purchases/{purchase_pk}/payment/<action>/"""

    payable_lookup = "purchase_pk"

    def get_payable_queryset(self, *, any_owner: bool = False):
        purchases = CreditPurchase.objects.select_related("package", "user")
        return purchases if any_owner else purchases.filter(user=self.request.user)

    def start_payment(self, payable, **options):
        return services.purchase_pay(purchase_id=payable.pk, **options)

    def retry_payment(self, payable, *, payment_method_id: str = ""):
        return services.purchase_retry(purchase_id=payable.pk, payment_method_id=payment_method_id)

    def start_checkout(self, payable, *, success_url, cancel_url):
        return services.purchase_checkout(
            purchase_id=payable.pk, success_url=success_url, cancel_url=cancel_url
        )

    def checkout_return_urls(self, payable):
        base = settings.SITE_URL.rstrip("/")
        return f"{base}/credits/?session_id={{CHECKOUT_SESSION_ID}}", f"{base}/credits/?canceled=1"

    @contextmanager
    def refund_guard(self, payable, payment, *, user, amount):
        """The refund's credits are held before Stripe is asked (no spend can use them meanwhile)
        and taken by the refund's own entry after. Staff force a refund of spent credits with
        {"force": true}."""
        force = self.request.data.get("force") is True
        hold = services.refund_hold(purchase=payable, payment=payment, user=user, amount=amount, force=force)
        try:
            yield
        finally:
            # The refund's own entry takes the held credits (or, refused, they go back).
            services.credits_settle(purchase_id=payable.pk)
            if hold is not None:
                services.hold_release(hold_id=hold.pk)


@extend_schema(parameters=[PURCHASE_PK])
class PurchasePaymentHistoryViewSet(PayablePaymentHistoryViewSet):
    """/api/credits/purchases/{purchase_pk}/payments/"""

    payable_lookup = "purchase_pk"

    def get_payable_queryset(self):
        return CreditPurchase.objects.filter(user=self.request.user)


class WalletView(APIView):
    """The balance and the latest entries, newest first (`?before=<entry id>` for older ones)."""

    @extend_schema(parameters=[WalletQuerySerializer], responses={200: WalletSerializer, **ERRORS})
    def get(self, request: Request) -> Response:
        query = WalletQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        wallet = services.wallet_of(request.user)
        entries = WalletEntry.objects.filter(wallet__user=request.user)
        if "before" in query.validated_data:
            entries = entries.filter(pk__lt=query.validated_data["before"])
        page = list(entries.order_by("-id")[: WALLET_PAGE + 1])
        more = len(page) > WALLET_PAGE
        page = page[:WALLET_PAGE]
        following = (
            request.build_absolute_uri(f"{request.path}?before={page[-1].pk}") if more and page else None
        )
        return Response(
            {
                "balance": wallet.balance,
                "entries": WalletEntrySerializer(page, many=True).data,
                "next": following,
            }
        )


class SpendView(APIView):
    """Spend credits (for example to pay for something on the site); never more than the balance."""

    @extend_schema(
        request=SpendRequestSerializer,
        responses={200: SpendResponseSerializer, 409: ErrorSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        body = SpendRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        entry = services.credits_spend(user=request.user, **body.validated_data)
        balance = services.wallet_of(request.user).balance  # now, also when a retry returns the first spend
        return Response({"balance": balance, "entry": WalletEntrySerializer(entry).data})
