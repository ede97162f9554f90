"""Plain Django views of the payments app: the Stripe webhook endpoint and its health."""

from __future__ import annotations

import logging
import time

from django.db import DatabaseError, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from payments import metrics
from payments.exceptions import WebhookSignatureError
from payments.webhooks import webhook_health, webhook_receive

logger = logging.getLogger(__name__)


def _error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse(
        {"error": {"code": code, "message": message, "decline_code": None, "param": None}}, status=status
    )


@csrf_exempt
@transaction.non_atomic_requests
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    """Verify the signature on the raw body, store the event, answer at once."""
    started = time.monotonic()
    try:
        stored = webhook_receive(payload=request.body, signature=request.headers.get("Stripe-Signature", ""))
    except WebhookSignatureError as exc:
        return _error(exc.code, exc.message, 400)
    except DatabaseError:
        # Nothing was stored: a 503 makes Stripe deliver the event again later.
        logger.exception("webhook could not be stored")
        return _error("unavailable", "Try again later.", 503)
    metrics.WEBHOOK_ACK_DURATION.observe(time.monotonic() - started)
    return JsonResponse({"received": True, "duplicate": not stored.created})


@require_GET
def webhook_health_view(request: HttpRequest) -> JsonResponse:
    """200 while events flow; 503 with the figures when events are stuck or failed for good."""
    try:
        health = webhook_health()
    except DatabaseError:
        return JsonResponse({"healthy": False, "database": "unavailable"}, status=503)
    return JsonResponse(health, status=200 if health["healthy"] else 503)
