"""Viewsets of the payments API; PayablePaymentViewSet is the base a host nests under its payable."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db.models import Model, QuerySet, prefetch_related_objects
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from payments import money, policy, services
from payments.api.errors import ErrorSerializer
from payments.api.serializers import (
    CheckoutRequestSerializer,
    CheckoutResponseSerializer,
    ConfirmRequestSerializer,
    IntentRequestSerializer,
    IntentResponseSerializer,
    PaymentConfigSerializer,
    PaymentMethodSerializer,
    PaymentSerializer,
    RefundRequestSerializer,
    RefundResponseSerializer,
    RetryRequestSerializer,
    SetupIntentSerializer,
)
from payments.api.throttles import PaymentRateThrottle, StatusRateThrottle
from payments.conf import payments_settings
from payments.exceptions import IllegalTransition
from payments.gateway.base import CheckoutInfo
from payments.models import Payment, PaymentEvent
from payments.services import PaymentResult
from payments.states import PaymentStatus

logger = logging.getLogger(__name__)

ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid input"),
    401: OpenApiResponse(ErrorSerializer, description="Not authenticated"),
    404: OpenApiResponse(ErrorSerializer, description="Not found, or not yours"),
}
PAY_ERRORS = {
    **ERRORS,
    402: OpenApiResponse(ErrorSerializer, description="Card declined"),
    409: OpenApiResponse(ErrorSerializer, description="Not possible in the current state"),
    429: OpenApiResponse(ErrorSerializer, description="Throttled"),
    503: OpenApiResponse(ErrorSerializer, description="Stripe unavailable"),
}


def intent_response_body(result: PaymentResult) -> dict:
    """The payment contract every payment-starting answer carries (IntentResponseSerializer):
    for a host endpoint that creates its payable and starts paying in one request."""
    intent = result.intent
    # The refunds once, for both the list and the refunded amount.
    prefetch_related_objects([result.payment], "refunds")
    return {
        "payment": PaymentSerializer(result.payment).data,
        "client_secret": intent.client_secret if intent else "",
        "requires_action": result.payment.status == PaymentStatus.REQUIRES_ACTION,
        "next_action": intent.next_action if intent else None,
        "publishable_key": payments_settings.PUBLISHABLE_KEY,
    }


# A page polling the status asks Stripe at most this often; in between it reads the database.
STATUS_REFRESH_EVERY = timedelta(seconds=3)


def _may_ask_stripe_about(payment: Payment) -> bool:
    """True at most once per STATUS_REFRESH_EVERY for a payment (and whenever the cache is down)."""
    try:
        return cache.add(f"payments:status-refresh:{payment.pk}", 1, STATUS_REFRESH_EVERY.total_seconds())
    except Exception:  # a cache outage must not fail the status page: ask Stripe
        logger.warning(
            "cache unavailable: status refreshed from the provider", extra={"payment_id": payment.pk}
        )
        return True


class PayablePaymentViewSet(viewsets.GenericViewSet):
    """Payment actions for one payable, nested under the host's route for it.

    Routes (detail=False actions): intent/, confirm/, status/, refund/, retry/, checkout/.
    A host subclasses this, sets `payable_lookup` to its nested URL kwarg and implements
    the hooks below; it never writes payment state itself.
    """

    payable_lookup = "payable_pk"
    serializer_class = PaymentSerializer
    permission_classes = [permissions.IsAuthenticated]

    # Hooks for the host -------------------------------------------------------------------

    def get_payable_queryset(self, *, any_owner: bool = False) -> QuerySet[Model]:
        """The payables the request's user may act on (all of them when `any_owner`)."""
        raise NotImplementedError

    def start_payment(self, payable: Model, **options: Any) -> PaymentResult:
        """Start paying for `payable` through payments.services.payment_start."""
        raise NotImplementedError

    def retry_payment(self, payable: Model, *, payment_method_id: str = "") -> PaymentResult:
        """After a failure, a new attempt through payments.services.payment_retry, once the host
        has checked that `payable` can still be paid."""
        raise NotImplementedError

    def start_checkout(
        self, payable: Model, *, success_url: str, cancel_url: str
    ) -> tuple[Payment, CheckoutInfo]:
        """Start a hosted checkout through payments.services.payment_checkout_start."""
        raise NotImplementedError

    def refund_deadline(self, payable: Model) -> datetime | None:
        """When the payable's owner may no longer refund it themselves (None: never)."""
        return None

    def checkout_return_urls(self, payable: Model) -> tuple[str, str]:
        """Default (success_url, cancel_url) for a hosted checkout."""
        raise NotImplementedError

    def refund_guard(
        self, payable: Model, payment: Payment, *, user: Any, amount: int | None
    ) -> AbstractContextManager[None]:
        """What the refund of `payable` runs inside: a host that must refuse a refund (raise an
        error the API maps) or do its own side of it in the same transaction returns a context
        manager, for example `transaction.atomic()` with its locks and checks around the refund
        and its own writes after it. `amount` None means as much as the user may refund."""
        return nullcontext()

    # Helpers ------------------------------------------------------------------------------

    def get_payable(self, *, any_owner: bool = False) -> Model:
        key = self.kwargs[self.payable_lookup]
        if not str(key).isdigit():
            raise Http404
        return self.get_payable_queryset(any_owner=any_owner).get(pk=key)

    def latest_payment(self, payable: Model) -> Payment:
        """The payable's sale when it has one (a later, refunded duplicate is not "the" payment),
        else its latest attempt."""
        payments = Payment.objects.for_payable(payable).order_by("-attempt")
        payment = payments.sales().first() or payments.first()
        if payment is None:
            raise IllegalTransition("No payment has been started for this yet.", code="no_payment")
        return payment

    # Actions ------------------------------------------------------------------------------

    @extend_schema(request=IntentRequestSerializer, responses={200: IntentResponseSerializer, **PAY_ERRORS})
    @action(detail=False, methods=["post"], throttle_classes=[PaymentRateThrottle])
    def intent(self, request: Request, **kwargs: Any) -> Response:
        """Create (or return the open) PaymentIntent; the amount comes from the payable."""
        body = IntentRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        payable = self.get_payable()
        result = self.start_payment(
            payable,
            payment_method_id=body.validated_data.get("payment_method_id", ""),
            confirm=body.validated_data["confirm_immediately"],
            save_payment_method=body.validated_data["save_payment_method"],
        )
        return Response(intent_response_body(result))

    @extend_schema(request=ConfirmRequestSerializer, responses={200: IntentResponseSerializer, **PAY_ERRORS})
    @action(detail=False, methods=["post"], throttle_classes=[PaymentRateThrottle])
    def confirm(self, request: Request, **kwargs: Any) -> Response:
        """Confirm the open payment, optionally with a new card; may answer requires_action."""
        body = ConfirmRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        payable = self.get_payable()
        payment = self.latest_payment(payable)
        method = body.validated_data.get("payment_method_id", "")
        if payment.status == PaymentStatus.CREATED and not payment.stripe_payment_intent_id:
            # Making the intent failed (Stripe unreachable): trying again starts it with the
            # attempt's key, through the host's checks (the payable may no longer be payable).
            result = self.start_payment(
                payable,
                payment_method_id=method,
                confirm=bool(method),
                save_payment_method=payment.save_payment_method,
            )
        else:
            result = services.payment_confirm(payment=payment, payment_method_id=method)
        return Response(intent_response_body(result))

    @extend_schema(request=None, responses={200: PaymentSerializer, **PAY_ERRORS})
    @action(detail=False, methods=["get"], throttle_classes=[StatusRateThrottle])
    def status(self, request: Request, **kwargs: Any) -> Response:
        """The payment's state, asked of Stripe while it is still moving (at most every few seconds)."""
        payable = self.get_payable(any_owner=policy.is_refund_staff(request.user))
        payment = self.latest_payment(payable)
        if _may_ask_stripe_about(payment):
            payment = services.payment_refresh(payment=payment)
        return Response(PaymentSerializer(payment).data)

    @extend_schema(
        request=RefundRequestSerializer,
        responses={201: RefundResponseSerializer, 403: ErrorSerializer, **PAY_ERRORS},
    )
    @action(detail=False, methods=["post"], throttle_classes=[PaymentRateThrottle])
    def refund(self, request: Request, **kwargs: Any) -> Response:
        """Refund in full (no amount) or in part ("50.00"); owners within the refund window."""
        body = RefundRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        payable = self.get_payable(any_owner=policy.is_refund_staff(request.user))
        payment = self.latest_payment(payable)
        amount = body.amount_in_minor_units(payment.currency)
        with self.refund_guard(payable, payment, user=request.user, amount=amount):
            refund = services.refund_request(
                payment=payment,
                user=request.user,
                amount=amount,
                reason=body.validated_data["reason"],
                deadline=self.refund_deadline(payable),
            )
        payment.refresh_from_db()
        return Response(
            {
                "refund": RefundResponseSerializer().fields["refund"].to_representation(refund),
                "payment": PaymentSerializer(payment).data,
            },
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(request=RetryRequestSerializer, responses={200: IntentResponseSerializer, **PAY_ERRORS})
    @action(detail=False, methods=["post"], throttle_classes=[PaymentRateThrottle])
    def retry(self, request: Request, **kwargs: Any) -> Response:
        """After a failure: a new attempt, charged to the card given, or left for Stripe.js to confirm."""
        body = RetryRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = self.retry_payment(
            self.get_payable(), payment_method_id=body.validated_data.get("payment_method_id", "")
        )
        return Response(intent_response_body(result))

    @extend_schema(
        request=CheckoutRequestSerializer, responses={200: CheckoutResponseSerializer, **PAY_ERRORS}
    )
    @action(detail=False, methods=["post"], throttle_classes=[PaymentRateThrottle])
    def checkout(self, request: Request, **kwargs: Any) -> Response:
        """Pay on Stripe's hosted page: returns the session id and the URL to send the payer to."""
        body = CheckoutRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        payable = self.get_payable()
        success_url, cancel_url = self.checkout_return_urls(payable)
        payment, session = self.start_checkout(
            payable,
            success_url=body.validated_data.get("success_url", success_url),
            cancel_url=body.validated_data.get("cancel_url", cancel_url),
        )
        return Response(
            {"payment": PaymentSerializer(payment).data, "session_id": session.id, "url": session.url}
        )


class PayablePaymentHistoryViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Every attempt to pay for one payable; the host sets `payable_lookup` and the queryset hook."""

    payable_lookup = "payable_pk"
    serializer_class = PaymentSerializer
    pagination_class = None

    def get_payable_queryset(self) -> QuerySet[Model]:
        raise NotImplementedError

    def get_queryset(self) -> QuerySet[Payment]:
        key = self.kwargs.get(self.payable_lookup, "")
        if getattr(self, "swagger_fake_view", False):
            return Payment.objects.none()
        if not str(key).isdigit():
            raise Http404
        payable = self.get_payable_queryset().get(pk=key)
        return Payment.objects.for_payable(payable).order_by("-attempt").prefetch_related("refunds")

    @extend_schema(responses={200: PaymentSerializer(many=True), **ERRORS})
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)


class PaymentViewSet(viewsets.ReadOnlyModelViewSet):
    """The user's own payments, newest first."""

    serializer_class = PaymentSerializer

    def get_queryset(self) -> QuerySet[Payment]:
        if getattr(self, "swagger_fake_view", False):
            return Payment.objects.none()
        return Payment.objects.filter(owner_id=self.request.user.pk).prefetch_related("refunds")

    @extend_schema(responses={200: PaymentSerializer, **ERRORS})
    @action(detail=False, methods=["get"], url_path=r"checkout/(?P<session_id>[A-Za-z0-9_]+)")
    def checkout_status(self, request: Request, session_id: str) -> Response:
        """The payment behind a Checkout Session (the page Stripe returns to knows only its id)."""
        payment = self.get_queryset().filter(stripe_checkout_session_id=session_id).first()
        if payment is None:
            raise Http404
        return Response(PaymentSerializer(services.payment_refresh(payment=payment)).data)


class PaymentConfigView(APIView):
    """What a front end needs to show prices and load Stripe.js."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(responses={200: PaymentConfigSerializer})
    def get(self, request: Request) -> Response:
        currency = payments_settings.CURRENCY
        low, high = money.amount_limits(currency)
        return Response(
            {
                "publishable_key": payments_settings.PUBLISHABLE_KEY,
                "currency": currency,
                "fee_rate": str(payments_settings.FEE_RATE),
                "fee_fixed": money.fixed_fee(currency),
                "min_amount": low,
                "max_amount": high,
                "refund_cutoff_hours": payments_settings.REFUND_CUTOFF.total_seconds() / 3600,
                "refund_fee": bool(payments_settings.REFUND_FEE),
            }
        )


class PaymentMethodViewSet(viewsets.ViewSet):
    """The user's saved cards at Stripe."""

    lookup_value_regex = r"[A-Za-z0-9_]+"

    @extend_schema(responses={200: PaymentMethodSerializer(many=True), **ERRORS})
    def list(self, request: Request) -> Response:
        methods = services.payment_methods_list(user=request.user)
        return Response(PaymentMethodSerializer(methods, many=True).data)

    @extend_schema(responses={204: None, **ERRORS, 503: ErrorSerializer})
    def destroy(self, request: Request, pk: str) -> Response:
        services.payment_method_detach(user=request.user, payment_method_id=pk)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={201: SetupIntentSerializer, **ERRORS, 503: ErrorSerializer})
    @action(detail=False, methods=["post"], url_path="setup", throttle_classes=[PaymentRateThrottle])
    def setup_intent(self, request: Request) -> Response:
        """A SetupIntent for saving a card with Stripe.js (confirmCardSetup)."""
        intent = services.setup_intent_create(user=request.user)
        return Response(
            {
                "id": intent.id,
                "client_secret": intent.client_secret,
                "status": intent.status,
                "publishable_key": payments_settings.PUBLISHABLE_KEY,
            },
            status=status.HTTP_201_CREATED,
        )


class PaymentEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = PaymentEvent
        fields = [
            "id", "kind", "refund", "operation", "idempotency_key", "outcome", "request_id",
            "from_status", "to_status", "cause", "created_at",
        ]  # fmt: skip


class PaymentTimelineView(APIView):
    """A payment's timeline, oldest first: staff who may view payments only."""

    @extend_schema(responses={200: PaymentEventSerializer(many=True), **ERRORS})
    def get(self, request: Request, pk: int) -> Response:
        if not (request.user.is_staff and request.user.has_perm("payments.view_payment")):
            raise exceptions.PermissionDenied("Staff who may view payments only.")
        payment = Payment.objects.filter(pk=pk).first()
        if payment is None:
            raise Http404
        events = PaymentEvent.objects.filter(payment=payment).order_by("id")
        return Response(PaymentEventSerializer(events, many=True).data)
