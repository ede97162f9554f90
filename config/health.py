"""The site's /health/ for load balancers: the database, the broker and Stripe, each ok or not.

In development without Redis (tasks run in the web process: Celery eager, or the payments app's
RUN_TASKS_INLINE_WITHOUT_BROKER), the broker is reported as "inline (development)" and counts
as healthy; in production a missing broker is a 503."""

from __future__ import annotations

from celery import current_app
from django.db import connection
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from payments.conf import payments_settings
from payments.gateway import get_gateway

INLINE = "inline (development)"


class HealthSerializer(serializers.Serializer):
    healthy = serializers.BooleanField()
    database = serializers.CharField()
    broker = serializers.CharField()
    stripe = serializers.CharField()


class HealthView(APIView):
    """200 when the database, the broker and Stripe answer; 503 naming what does not."""

    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []

    @extend_schema(responses={200: HealthSerializer, 503: HealthSerializer})
    def get(self, request: Request) -> Response:
        checks = {"database": self._database(), "broker": self._broker(), "stripe": self._stripe()}
        healthy = all(value in ("ok", INLINE) for value in checks.values())
        return Response({"healthy": healthy, **checks}, status=200 if healthy else 503)

    @staticmethod
    def _database() -> str:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception:
            return "unavailable"
        return "ok"

    @staticmethod
    def _broker() -> str:
        if current_app.conf.task_always_eager:
            return INLINE
        try:
            with current_app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
        except Exception:
            return INLINE if payments_settings.RUN_TASKS_INLINE_WITHOUT_BROKER else "unavailable"
        return "ok"

    @staticmethod
    def _stripe() -> str:
        try:
            get_gateway().check_reachable()
        except Exception:
            return "unavailable"
        return "ok"
