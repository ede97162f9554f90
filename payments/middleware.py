"""Opt-in middleware: the provider calls one web request makes share PAYMENTS["REQUEST_BUDGET"];
what a request changes is recorded on payment timelines as caused by it."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from payments import timeline
from payments.conf import payments_settings
from payments.gateway.budget import provider_budget


class ProviderBudgetMiddleware:
    """Bound the Stripe calls (timeouts and retries) made while a request waits, so the request
    answers before the WSGI server's timeout kills it: a 503 the client can retry, never a dead
    worker. What did not fit is finished by webhooks, status polls and sweeps with the same keys."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with provider_budget(payments_settings.REQUEST_BUDGET):
            return self.get_response(request)


class PaymentCauseMiddleware:
    """Put on payment timelines that a change came from this request: its method, path and user
    (after AuthenticationMiddleware)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        def cause() -> str:  # when an entry is written: the API authenticates in its view
            user = getattr(request, "user", None)
            who = f"user {user.pk}" if user is not None and user.is_authenticated else "anonymous"
            return f"{request.method} {request.path} ({who})"

        with timeline.caused_by(cause):
            return self.get_response(request)
