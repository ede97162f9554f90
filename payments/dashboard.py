"""The staff dashboard's figures: success rate, revenue, refunds and webhook lag per day over the
last 30 days (totals for the last day, week and month), the top decline reasons and what is
stuck. A fixed number of grouped queries whatever the number of payments; charts are SVG drawn
here, no script and no CDN."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.db.models import Avg, Count, DurationField, ExpressionWrapper, F, Q, Sum, Value
from django.db.models.functions import Coalesce, NullIf, TruncDate
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from payments import money
from payments.conf import payments_settings
from payments.models import Payment, Refund, WebhookEvent
from payments.states import OPEN_STATUSES, PAID_STATUSES, REFUND_HOLDS_MONEY, PaymentStatus, RefundStatus

DAYS = 30
PERIODS = (("Last day", 1), ("Last week", 7), ("Last month", 30))
STUCK_EVENT_AFTER = timedelta(minutes=5)
STUCK_REFUND_AFTER = timedelta(minutes=10)


@dataclass(frozen=True)
class Series:
    label: str
    values: list[float]  # one per day, oldest first
    unit: str  # how a value reads: "%", "ms" or a currency


def _daily(rows: Any, key: str) -> dict[date, float]:
    return {row["day"]: float(row[key] or 0) for row in rows}


def figures(*, now: datetime | None = None) -> dict[str, Any]:
    """What the dashboard shows; 7 queries."""
    now = now or timezone.now()
    start = now - timedelta(days=DAYS)
    days = [(start + timedelta(days=i + 1)).date() for i in range(DAYS)]
    currency = payments_settings.CURRENCY

    sales = Q(status__in=PAID_STATUSES, unwanted_reason="")
    attempts = (
        Payment.objects.filter(created_at__gte=start)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(
            paid=Count("id", filter=sales),
            failed=Count("id", filter=Q(status=PaymentStatus.FAILED)),
            revenue=Coalesce(Sum("total", filter=sales & Q(currency=currency)), 0),
        )
    )
    refunds = (
        Refund.objects.filter(created_at__gte=start, status__in=REFUND_HOLDS_MONEY, currency=currency)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(amount=Sum("amount"))
    )
    lag = ExpressionWrapper(F("processed_at") - F("received_at"), output_field=DurationField())
    webhooks = (
        WebhookEvent.objects.filter(received_at__gte=start, processed_at__isnull=False)
        .annotate(day=TruncDate("received_at"))
        .values("day")
        .annotate(lag=Avg(lag))
    )
    attempts_by_day: dict[date, dict[str, Any]] = {row["day"]: dict(row) for row in attempts}
    refunded = _daily(refunds, "amount")
    lags = {row["day"]: row["lag"].total_seconds() * 1000 if row["lag"] else 0.0 for row in webhooks}

    def rate(rows: list[dict[str, Any]]) -> float:
        paid = sum(r["paid"] for r in rows)
        tried = paid + sum(r["failed"] for r in rows)
        return round(100 * paid / tried, 1) if tried else 0.0

    empty: dict[str, Any] = {"paid": 0, "failed": 0, "revenue": 0}
    per_day = [attempts_by_day.get(day, empty) for day in days]
    series = [
        Series("Success rate", [rate([row]) for row in per_day], "%"),
        Series("Revenue", [float(row["revenue"]) for row in per_day], currency),
        Series("Refunds", [refunded.get(day, 0.0) for day in days], currency),
        Series("Webhook lag (mean)", [round(lags.get(day, 0.0), 1) for day in days], "ms"),
    ]
    totals = []
    for label, length in PERIODS:
        rows = per_day[-length:]
        totals.append(
            {
                "label": label,
                "success_rate": rate(rows),
                "revenue": money.format_amount(sum(int(r["revenue"]) for r in rows), currency),
                "refunds": money.format_amount(
                    int(sum(refunded.get(d, 0.0) for d in days[-length:])), currency
                ),
                "payments": sum(r["paid"] for r in rows),
            }
        )
    declines = list(
        Payment.objects.filter(created_at__gte=start, status=PaymentStatus.FAILED)
        .annotate(
            reason=Coalesce(
                NullIf("last_error_decline_code", Value("")), NullIf("last_error_code", Value(""))
            )
        )
        .values("reason")
        .annotate(n=Count("id"))
        .order_by("-n", "reason")[:5]
    )
    stuck_events = WebhookEvent.objects.aggregate(
        pending=Count(
            "id", filter=Q(status=WebhookEvent.Status.PENDING, received_at__lt=now - STUCK_EVENT_AFTER)
        ),
        failed=Count("id", filter=Q(status=WebhookEvent.Status.FAILED)),
    )
    stuck_refunds = Refund.objects.filter(
        status=RefundStatus.PENDING, updated_at__lt=now - STUCK_REFUND_AFTER
    ).count()
    open_too_long = Payment.objects.filter(
        status__in=OPEN_STATUSES, updated_at__lt=now - payments_settings.OPEN_PAYMENT_TTL
    ).count()
    return {
        "days": days,
        "series": series,
        "charts": [(s.label, chart(s, days)) for s in series],
        "totals": totals,
        "declines": [{"reason": d["reason"] or "unknown", "count": d["n"]} for d in declines],
        "stuck": {
            "events_pending": stuck_events["pending"],
            "events_failed": stuck_events["failed"],
            "refunds_pending": stuck_refunds,
            "payments_open": open_too_long,
        },
        "currency": currency.upper(),
    }


def _value(series: Series, value: float) -> str:
    if series.unit in ("%", "ms"):
        return f"{value:g} {series.unit}"
    return money.format_amount(int(value), series.unit)


def chart(series: Series, days: list[date], *, width: int = 640, height: int = 140) -> SafeString:
    """A bar per day, the highest labelled; every bar has a title (its day and value)."""
    top = max(series.values) or 1.0
    bar = width / len(series.values)
    plot = height - 20  # the baseline, above the dates
    room = plot - 18  # the tallest bar stays below the "highest" label
    bars = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}"><title>{}: {}</title></rect>',
        (
            (
                f"{i * bar + 1:.1f}",
                f"{plot - value / top * room:.1f}",
                f"{max(bar - 2, 1):.1f}",
                f"{value / top * room:.1f}",
                day.isoformat(),
                _value(series, value),
            )
            for i, (day, value) in enumerate(zip(days, series.values, strict=True))
        ),
    )
    return format_html(
        '<svg class="dashboard-chart" viewBox="0 0 {w} {h}" width="100%" height="{h}" role="img" '
        'aria-label="{label}, per day over {n} days, highest {top}">'
        '<g fill="#417690">{bars}</g>'
        '<line x1="0" y1="{plot}" x2="{w}" y2="{plot}" stroke="#999"/>'
        '<text x="0" y="{th}" font-size="11" fill="#555">{first}</text>'
        '<text x="{w}" y="{th}" font-size="11" fill="#555" text-anchor="end">{last}</text>'
        '<text x="2" y="11" font-size="11" fill="#555">highest {top}</text></svg>',
        w=width,
        h=height,
        label=series.label,
        n=len(days),
        top=_value(series, top if max(series.values) else 0),
        bars=bars,
        plot=plot,
        th=height - 4,
        first=days[0].strftime("%d %b"),
        last=days[-1].strftime("%d %b"),
    )
