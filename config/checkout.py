"""The checkout pages' response: the card component's page with the Content-Security-Policy
Stripe.js needs on top of the site's (both products' checkout pages use it)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


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
