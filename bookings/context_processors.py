"""Template context for the booking pages."""

from django.conf import settings


def site(request) -> dict:
    return {"stripe_js_url": settings.STRIPE_JS_URL}
