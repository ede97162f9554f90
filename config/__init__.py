"""Project configuration: settings, URLs, the Celery app and the WSGI/ASGI entry points."""
