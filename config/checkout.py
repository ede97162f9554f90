"""The checkout pages' response: the card component's page with the Content-Security-Policy
Stripe.js needs on top of the site's (both products' checkout pages use it)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from payments import services as payment_services
from payments.exceptions import PaymentError
from payments.models import Payment


def stripe_js_policy() -> dict[str, list[str]]:
    """What Stripe.js needs on top of the site's policy (Stripe's security guide, "Content
    Security Policy"); with the emulator's stand-in, its own origin instead."""
    parts = urlsplit(settings.STRIPE_JS_URL)
    origin = f"{parts.scheme}://{parts.netloc}"
    if parts.hostname == "js.stripe.com":
        return {
            "script-src": ["https://js.stripe.com", "https://*.js.stripe.com"],
            "frame-src": ["https://js.stripe.com", "https://*.js.stripe.com", "https://hooks.stripe.com"],
            "connect-src": ["https://api.stripe.com"],
        }
    return {"script-src": [origin], "connect-src": [origin]}


def render_checkout(request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
    """Render a page holding includes/card_checkout.html, allowed to load and talk to Stripe.js."""
    response = render(request, template, context)
    # Read by django-csp's middleware: frames replace the site's "none", the rest adds to it.
    policy = stripe_js_policy()
    frames = policy.pop("frame-src", None)
    response._csp_update = policy  # type: ignore[attr-defined]
    if frames:
        response._csp_replace = {"frame-src": frames}  # type: ignore[attr-defined]
    return response


def saved_cards(user: Any) -> list[dict[str, str]]:
    """The payer's cards kept at Stripe, labelled for the checkout's choice; none when Stripe
    does not answer (the new-card field still works)."""
    try:
        methods = payment_services.payment_methods_list(user=user)
    except PaymentError:
        return []
    return [
        {
            "id": method.id,
            "label": f"{(method.brand or 'Card').title()} ending {method.last4}"
            + (
                f", expires {method.exp_month:02d}/{method.exp_year}"
                if method.exp_month and method.exp_year
                else ""
            ),
        }
        for method in methods
    ]


def failure_text(payment: Payment | None) -> str:
    """Why the payment did not go through and what to do next, in the site's words."""
    code, message = (payment.last_error_code, payment.last_error_message) if payment else ("", "")
    if code == "payment_intent_authentication_failure":
        return (
            "Your bank could not authenticate this payment, so nothing was charged. "
            "Try again, or use another card."
        )
    if code in ("card_declined", "expired_card", "incorrect_cvc", "incorrect_number", "processing_error"):
        words = (message or "Your card was declined.").rstrip(".") + "."
        return f"{words} Nothing was charged. Please try another card."
    return "The payment did not go through, and nothing was charged. Please try again."
