"""ASGI entry point."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_asgi_application()

from config.production import ensure_production_ready  # noqa: E402  (needs the apps loaded)

ensure_production_ready()

from django.conf import settings  # noqa: E402

if settings.RUN_BEAT_IN_PROCESS:
    from config import inline_beat

    inline_beat.start()
