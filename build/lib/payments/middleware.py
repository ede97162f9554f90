"""Opt-in middleware: the provider calls one web request makes share PAYMENTS["REQUEST_BUDGET"]."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

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
