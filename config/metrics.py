"""GET /metrics: the Prometheus exposition of the payments app's metrics and the site's own, for
staff (a session) or a scraper holding METRICS_TOKEN (`Authorization: Bearer <token>`).

Under gunicorn or Celery set PROMETHEUS_MULTIPROC_DIR (an empty directory, the same for every
process of the deployment): the samples of every process are added up here.
"""

from __future__ import annotations

import os
import secrets

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess


def _allowed(request: HttpRequest) -> bool:
    if request.user.is_authenticated and request.user.is_staff:
        return True
    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return bool(token) and bool(given) and secrets.compare_digest(given.encode(), token.encode())


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        response = HttpResponse("Staff or the metrics token only.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
