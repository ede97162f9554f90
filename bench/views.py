"""Reference views: the ceiling (read the body, answer) and two plain verify-and-store views."""

from __future__ import annotations

import json

import stripe
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

# Created by the benchmark in its own database: one row per event, unique by Stripe's id.
TABLE = "bench_plain_event"
CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, event_id text UNIQUE, payload jsonb)"
)
_INSERT = f"INSERT INTO {TABLE} (event_id, payload) VALUES (%s, %s)"  # noqa: S608 - a constant


def _secret() -> str:
    return settings.PAYMENTS["WEBHOOK_SECRETS"][0]


@csrf_exempt
def bare(request: HttpRequest) -> HttpResponse:
    """The ceiling: what Django itself costs per request."""
    request.body  # noqa: B018 - read it, as every target does
    return HttpResponse(b'{"received": true}', content_type="application/json")


@csrf_exempt
def plain(request: HttpRequest) -> HttpResponse:
    """What most tutorials write: `stripe.Webhook.construct_event`, then one INSERT."""
    try:
        event = stripe.Webhook.construct_event(
            request.body, request.headers.get("Stripe-Signature", ""), _secret()
        )
    except (ValueError, stripe.SignatureVerificationError):
        return HttpResponse(status=400)
    with connection.cursor() as cursor:
        cursor.execute(_INSERT, [event["id"], request.body.decode()])
    return HttpResponse(b'{"received": true}', content_type="application/json")


@csrf_exempt
def floor(request: HttpRequest) -> HttpResponse:
    """The floor of verify-and-store: the signature on the raw bytes, `json.loads`, one INSERT."""
    try:
        stripe.WebhookSignature.verify_header(
            request.body, request.headers.get("Stripe-Signature", ""), _secret(), tolerance=300
        )
    except stripe.SignatureVerificationError:
        return HttpResponse(status=400)
    event = json.loads(request.body)
    with connection.cursor() as cursor:
        cursor.execute(_INSERT, [event["id"], request.body.decode()])
    return HttpResponse(b'{"received": true}', content_type="application/json")
