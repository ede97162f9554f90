"""Django admin for payments: read-only money and provider fields, refunds behind a permission."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.text import smart_split, unescape_string_literal
from django.utils.timezone import localtime

from payments import dashboard, money, services, timeline
from payments.conf import payments_settings
from payments.exceptions import EventPruned, PaymentError
from payments.models import Customer, Dispute, Payment, PaymentEvent, ReconcileState, Refund, WebhookEvent
from payments.policy import REFUND_PERMISSION
from payments.states import REFUNDABLE_STATUSES, PaymentStatus, RefundStatus
from payments.webhooks import HANDLERS, webhook_events_replay


class EstimatedCountPaginator(Paginator):
    """Counts an unfiltered large table from PostgreSQL's statistics instead of COUNT(*)."""

    ESTIMATE_ABOVE = 50_000

    @cached_property
    def count(self) -> int:
        query = getattr(self.object_list, "query", None)
        model = getattr(self.object_list, "model", None)
        if query is not None and model is not None and not query.where and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE relname = %s", [model._meta.db_table]
                )
                row = cursor.fetchone()
            if row and row[0] > self.ESTIMATE_ABOVE:
                return int(row[0])
        return super().count


class CurrencyFilter(admin.SimpleListFilter):
    """By currency, offering the configured ones: Django's own field filter would read
    SELECT DISTINCT currency from every payment on each page load."""

    title = "currency"
    parameter_name = "currency"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        s = payments_settings
        configured = {s.CURRENCY, *dict(s.FEE_FIXED), *dict(s.AMOUNT_LIMITS)}
        return [(code.lower(), code.upper()) for code in sorted(configured)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(currency=value.lower()) if value else queryset


class EventTypeFilter(admin.SimpleListFilter):
    """By event type, offering the types this app handles (no DISTINCT over every stored event)."""

    title = "type"
    parameter_name = "type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(name, name) for name in sorted(HANDLERS)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(type=value) if value else queryset


def stripe_mode() -> str:
    """Where this site's Stripe objects live: "live", "test", or "" when it talks to something
    other than Stripe (the emulator, a stand-in), whose objects have no dashboard page."""
    if payments_settings.API_BASE:
        return ""
    return "live" if (payments_settings.SECRET_KEY or "").startswith(("sk_live_", "rk_live_")) else "test"


def _dashboard(kind: str, stripe_id: str) -> str:
    """A Stripe id, linked to its page in Stripe's dashboard when it lives at Stripe, its mode shown."""
    if not stripe_id:
        return "-"
    mode = stripe_mode()
    if not mode:
        return format_html(
            '<span class="stripe-id" title="Not at Stripe: no dashboard page">{}</span>', stripe_id
        )
    return format_html(
        '<a class="stripe-id" href="https://dashboard.stripe.com/{}{}/{}" target="_blank" '
        'rel="noopener">{}</a> <span class="stripe-mode">({})</span>',
        "" if mode == "live" else "test/",
        kind,
        stripe_id,
        stripe_id,
        mode,
    )


def _short(text: str, size: int) -> str:
    """Long text cut for a list column, whole on hover."""
    if len(text) <= size:
        return text
    return format_html('<span title="{}">{}…</span>', text, text[: size - 1])


def _when(moment: Any) -> str:
    """A compact local time for list columns ("2026-12-01 08:22")."""
    if moment is None:
        return "-"
    return format_html(
        '<span title="{}">{}</span>', moment.isoformat(), localtime(moment).strftime("%Y-%m-%d %H:%M")
    )


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by the services: visible, never added, edited or deleted here."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    class Media:
        css = {"all": ["payments/admin.css"]}

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        # Staff may open these pages (to refund, to replay), but nothing on them is saved here.
        context = {
            "title": f"View {self.opts.verbose_name}",
            **(extra_context or {}),
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "show_save_as_new": False,
            "show_delete": False,
        }
        return super().change_view(request, object_id, form_url, context)

    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        raise PermissionDenied  # a crafted POST to a read-only page saves nothing


class RefundInline(admin.TabularInline):
    model = Refund
    extra = 0
    can_delete = False
    fields = (
        "number",
        "amount_display",
        "status",
        "reason_display",
        "refund_link",
        "requested_by",
        "created_at",
    )
    readonly_fields = fields
    ordering = ("created_at", "id")

    def has_add_permission(self, request: HttpRequest, obj: Payment | None = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.has_perm("payments.view_payment")  # part of the payment's page

    def get_queryset(self, request: HttpRequest) -> QuerySet[Refund]:
        return super().get_queryset(request).with_numbers()  # type: ignore[attr-defined]

    @admin.display(description="refund")
    def number(self, refund: Refund) -> str:
        return f"Refund {refund.number}"

    @admin.display(description="reason")
    def reason_display(self, refund: Refund) -> str:
        return refund.reason_display or "-"

    @admin.display(description="amount")
    def amount_display(self, refund: Refund) -> str:
        return money.format_amount(refund.amount, refund.currency)

    @admin.display(description="Stripe refund")
    def refund_link(self, refund: Refund) -> str:
        return _dashboard("refunds", refund.stripe_refund_id)


class PaymentEventInline(admin.TabularInline):
    """The payment's timeline: Stripe calls and status changes, oldest first, each with its cause."""

    model = PaymentEvent
    verbose_name = "timeline entry"
    verbose_name_plural = "timeline"
    extra = 0
    can_delete = False
    fields = ("created_at", "what", "refund", "cause", "idempotency_key", "request_id")
    readonly_fields = fields
    ordering = ("id",)

    def has_add_permission(self, request: HttpRequest, obj: Payment | None = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.has_perm("payments.view_payment")  # part of the payment's page

    def get_queryset(self, request: HttpRequest) -> QuerySet[PaymentEvent]:
        return super().get_queryset(request).select_related("refund")

    @admin.display(description="what")
    def what(self, event: PaymentEvent) -> str:
        if event.kind == PaymentEvent.Kind.STRIPE_CALL:
            return f"Stripe {event.operation}: {event.outcome}"
        labels = dict(RefundStatus.choices if event.refund_id else PaymentStatus.choices)
        before = labels.get(event.from_status, event.from_status) if event.from_status else "new"
        after = labels.get(event.to_status, event.to_status)
        subject = "refund" if event.refund_id else "payment"
        return f"{subject}: {before} → {after}"


class RefundForm(forms.Form):
    amount = forms.CharField(help_text="In the currency's major unit, e.g. 12.50.")
    reason = forms.ChoiceField(
        choices=[
            ("requested_by_customer", "Requested by customer"),
            ("duplicate", "Duplicate"),
            ("fraudulent", "Fraudulent"),
            ("other", "Other"),
        ],
    )

    def __init__(self, *args: Any, payment: Payment, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.payment = payment

    def clean_amount(self) -> int:
        try:
            minor = money.to_minor(self.cleaned_data["amount"], self.payment.currency)
        except DjangoValidationError as exc:
            raise forms.ValidationError(exc.messages[0]) from None
        refundable = self.payment.refundable_amount()
        if not 0 < minor <= refundable:
            most = money.format_amount(refundable, self.payment.currency)
            raise forms.ValidationError(f"Give an amount above zero and at most {most}.")
        return minor


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ("id", "status", "amount", "owner_email", "what", "intent_link", "created")
    list_filter = ("status", CurrencyFilter, ("created_at", admin.DateFieldListFilter))
    search_fields = (
        "=stripe_payment_intent_id",
        "=stripe_charge_id",
        "=stripe_checkout_session_id",
        "=owner__email",
        "description",
    )
    list_select_related = ("owner",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    ordering = ("-created_at", "-id")
    inlines = (RefundInline, PaymentEventInline)
    actions = ("refund_in_full",)
    readonly_fields = (
        "refund_button",
        "status",
        "unwanted_reason",
        "amount",
        "subtotal_display",
        "fee_display",
        "refunded_display",
        "owner",
        "description",
        "payable_reference",
        "attempt",
        "intent_link",
        "charge_link",
        "checkout_session",
        "customer_link",
        "stripe_status",
        "card_brand",
        "card_last4",
        "last_error_code",
        "last_error_decline_code",
        "last_error_message",
        "idempotency_key",
        "created_at",
        "updated_at",
        "succeeded_at",
    )
    fields = readonly_fields

    # A search term that is plainly a Stripe id or an email uses that column's index alone
    # (OR-ing it with the free-text description would scan the whole table).
    ID_PREFIXES = {
        "pi_": "stripe_payment_intent_id",
        "ch_": "stripe_charge_id",
        "py_": "stripe_charge_id",
        "cs_": "stripe_checkout_session_id",
        "cus_": "stripe_customer_id",
    }

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Payment], search_term: str
    ) -> tuple[QuerySet[Payment], bool]:
        term = search_term.strip()
        for prefix, field in self.ID_PREFIXES.items():
            if term.startswith(prefix) and " " not in term:
                return queryset.filter(**{field: term}), False
        if "@" in term and " " not in term:
            return queryset.filter(owner__email__iexact=term), False
        # Anything else (a booking reference, words of a title) is looked for in the description
        # alone, every word (or "quoted phrase") in it: one OR across the ids and the owner's
        # email would make PostgreSQL scan every row, where each word here is served by the
        # trigram index (migration 0006).
        for word in smart_split(term):
            if word.startswith(('"', "'")) and word[0] == word[-1]:
                word = unescape_string_literal(word)
            queryset = queryset.filter(description__icontains=word)
        return queryset, False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        # Staff may open a payment (to see it and refund it); every field stays read-only.
        return request.user.is_staff and request.user.has_perm("payments.view_payment")

    def has_refund_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(REFUND_PERMISSION)

    @admin.display(description="total", ordering="total")
    def amount(self, payment: Payment) -> str:
        return money.format_amount(payment.total, payment.currency)

    @admin.display(description="subtotal")
    def subtotal_display(self, payment: Payment) -> str:
        return money.format_amount(payment.subtotal, payment.currency)

    @admin.display(description="fee")
    def fee_display(self, payment: Payment) -> str:
        return money.format_amount(payment.fee, payment.currency)

    @admin.display(description="refunded")
    def refunded_display(self, payment: Payment) -> str:
        return money.format_amount(payment.refunded_amount(), payment.currency)

    @admin.display(description="description", ordering="description")
    def what(self, payment: Payment) -> str:
        return _short(payment.description, 44)

    @admin.display(description="created", ordering="created_at")
    def created(self, payment: Payment) -> str:
        return _when(payment.created_at)

    @admin.display(description="owner", ordering="owner__email")
    def owner_email(self, payment: Payment) -> str:
        return payment.owner.email or payment.owner.get_username()

    @admin.display(description="payment intent")
    def intent_link(self, payment: Payment) -> str:
        return _dashboard("payments", payment.stripe_payment_intent_id)

    @admin.display(description="charge")
    def charge_link(self, payment: Payment) -> str:
        return _dashboard("payments", payment.stripe_charge_id)

    @admin.display(description="checkout session")
    def checkout_session(self, payment: Payment) -> str:
        return payment.stripe_checkout_session_id or "-"

    @admin.display(description="customer")
    def customer_link(self, payment: Payment) -> str:
        return _dashboard("customers", payment.stripe_customer_id)

    @admin.display(description="refund")
    def refund_button(self, payment: Payment) -> str:
        if payment.status not in REFUNDABLE_STATUSES:
            return "Not refundable in this state."
        url = reverse("admin:payments_payment_refund", args=[payment.pk])
        return format_html('<a class="button" href="{}">Refund…</a>', url)

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<int:payment_id>/refund/",
                self.admin_site.admin_view(self.refund_view),
                name="payments_payment_refund",
            ),
            path("dashboard/", self.admin_site.admin_view(self.dashboard_view), name="payments_dashboard"),
            *super().get_urls(),
        ]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        """Success rate, revenue, refunds and webhook lag over the last month, the top decline
        reasons and what is stuck, each linking to its list; for staff who may view payments."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Payments dashboard",
            "opts": self.model._meta,
            **dashboard.figures(),
        }
        return TemplateResponse(request, "admin/payments/dashboard.html", context)

    def _log_refund(self, request: HttpRequest, payment: Payment, refund: Refund) -> None:
        assert request.user.is_authenticated  # admin_view lets only active staff in
        LogEntry.objects.log_actions(
            user_id=request.user.pk,
            queryset=[payment],
            action_flag=CHANGE,
            single_object=True,
            change_message=(
                f"Refunded {money.format_amount(refund.amount, refund.currency)} (refund {refund.number}, "
                f"Stripe {refund.stripe_refund_id or 'pending'}, reason {refund.reason})."
            ),
        )

    def refund_view(self, request: HttpRequest, payment_id: int) -> HttpResponse:
        """The refund form, a confirmation step, then the refund service."""
        if not self.has_refund_permission(request):
            raise PermissionDenied
        payment = get_object_or_404(Payment, pk=payment_id)
        change_url = reverse("admin:payments_payment_change", args=[payment.pk])
        refundable = payment.refundable_amount()
        initial = {
            "amount": str(money.to_major(refundable, payment.currency)),
            "reason": "requested_by_customer",
        }
        form = RefundForm(request.POST or None, payment=payment, initial=initial)
        confirming = request.method == "POST" and form.is_valid()
        if confirming and request.POST.get("confirmed") == "yes":
            try:
                with timeline.caused_by(f"admin {request.user.get_username()}"):
                    refund = services.refund_create(
                        payment=payment,
                        amount=form.cleaned_data["amount"],
                        reason=form.cleaned_data["reason"],
                        requested_by=request.user,
                    )
            except PaymentError as error:
                self.message_user(request, f"Refund not made: {error.message}", messages.ERROR)
                return redirect(change_url)
            self._log_refund(request, payment, refund)
            done = "made" if refund.stripe_refund_id else "queued (Stripe did not answer; it will be retried)"
            self.message_user(
                request,
                f"Refund of {money.format_amount(refund.amount, refund.currency)} {done}: "
                f"{refund.stripe_refund_id or 'pending'}.",
                messages.SUCCESS,
            )
            return redirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Refund payment {payment.pk}",
            "opts": self.model._meta,
            "payment": payment,
            "form": form,
            "confirming": confirming,
            "amount_display": money.format_amount(form.cleaned_data["amount"], payment.currency)
            if confirming
            else "",
            "refundable_display": money.format_amount(refundable, payment.currency),
            "total_display": money.format_amount(payment.total, payment.currency),
            "change_url": change_url,
        }
        return TemplateResponse(request, "admin/payments/payment/refund.html", context)

    @admin.action(description="Refund selected payments in full", permissions=["refund"])
    def refund_in_full(self, request: HttpRequest, queryset: QuerySet[Payment]) -> TemplateResponse | None:
        payments = list(queryset.filter(status__in=REFUNDABLE_STATUSES).select_related("owner"))
        if request.POST.get("confirmed") != "yes":
            rows = [(p, money.format_amount(p.refundable_amount(), p.currency)) for p in payments]
            return TemplateResponse(
                request,
                "admin/payments/payment/refund_bulk.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Refund payments in full",
                    "opts": self.model._meta,
                    "rows": rows,
                    "skipped": queryset.count() - len(payments),
                    "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
                },
            )
        made, failed = 0, []
        for payment in payments:
            try:
                with timeline.caused_by(f"admin {request.user.get_username()}"):
                    refund = services.refund_create(
                        payment=payment, reason="requested_by_customer", requested_by=request.user
                    )
            except PaymentError as error:
                failed.append(f"payment {payment.pk}: {error.message}")
                continue
            self._log_refund(request, payment, refund)
            made += 1
        self.message_user(request, f"{made} payment(s) refunded in full.", messages.SUCCESS)
        if failed:
            self.message_user(request, "Not refunded: " + "; ".join(failed), messages.ERROR)
        return None


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = (
        "__str__",
        "amount_display",
        "status",
        "reason_display",
        "refund_link",
        "requested_by",
        "created",
    )
    list_filter = ("status", CurrencyFilter, ("created_at", admin.DateFieldListFilter))
    search_fields = ("=stripe_refund_id", "=payment__stripe_payment_intent_id", "=payment__owner__email")
    list_select_related = ("requested_by",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator

    def get_queryset(self, request: HttpRequest) -> QuerySet[Refund]:
        return super().get_queryset(request).with_numbers()  # type: ignore[attr-defined]

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, refund: Refund) -> str:
        return money.format_amount(refund.amount, refund.currency)

    @admin.display(description="Stripe refund")
    def refund_link(self, refund: Refund) -> str:
        return _dashboard("refunds", refund.stripe_refund_id)

    @admin.display(description="reason", ordering="reason")
    def reason_display(self, refund: Refund) -> str:
        return refund.reason_display or "-"

    @admin.display(description="created", ordering="created_at")
    def created(self, refund: Refund) -> str:
        return _when(refund.created_at)


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = ("stripe_event_id", "type", "status", "attempts", "error", "received", "processed")
    list_filter = ("status", EventTypeFilter, ("received_at", admin.DateFieldListFilter))
    search_fields = ("=stripe_event_id", "type")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    actions = ("replay",)
    readonly_fields = (
        "stripe_event_id",
        "type",
        "status",
        "attempts",
        "last_error",
        "api_version",
        "livemode",
        "received_at",
        "processed_at",
        "payload",
    )

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.is_staff and request.user.has_perm("payments.view_webhookevent")

    @admin.display(description="last error")
    def error(self, event: WebhookEvent) -> str:
        return _short(event.last_error, 40)

    @admin.display(description="received", ordering="received_at")
    def received(self, event: WebhookEvent) -> str:
        return _when(event.received_at)

    @admin.display(description="processed", ordering="processed_at")
    def processed(self, event: WebhookEvent) -> str:
        return _when(event.processed_at)

    @admin.action(description="Replay selected events", permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> None:
        try:
            results = webhook_events_replay(events=list(queryset))
        except EventPruned as error:
            self.message_user(request, error.message, messages.ERROR)
            return
        failed = [e.stripe_event_id for e in results if e.status == WebhookEvent.Status.FAILED]
        self.message_user(request, f"{len(results) - len(failed)} event(s) replayed.", messages.SUCCESS)
        if failed:
            self.message_user(request, f"Still failing: {', '.join(failed)}", messages.ERROR)

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("payments.change_webhookevent")


@admin.register(Dispute)
class DisputeAdmin(ReadOnlyAdmin):
    list_display = (
        "stripe_dispute_id",
        "payment_id",
        "amount_display",
        "reason",
        "status",
        "evidence_due_by",
    )
    list_filter = ("status", "reason")
    search_fields = ("=stripe_dispute_id", "=payment__stripe_payment_intent_id")

    @admin.display(description="amount")
    def amount_display(self, dispute: Dispute) -> str:
        return money.format_amount(dispute.amount, dispute.currency)


@admin.register(Customer)
class CustomerAdmin(ReadOnlyAdmin):
    list_display = ("user", "customer_link", "created_at")
    search_fields = ("=stripe_customer_id", "user__email", "user__username")
    list_select_related = ("user",)

    @admin.display(description="Stripe customer")
    def customer_link(self, customer: Customer) -> str:
        return _dashboard("customers", customer.stripe_customer_id)


@admin.register(ReconcileState)
class ReconcileStateAdmin(ReadOnlyAdmin):
    list_display = ("name", "last_started_at", "last_finished_at", "last_unresolved")
