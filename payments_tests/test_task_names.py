"""Tasks are sent by name: every name the app sends is a task the app registers."""

import re
from pathlib import Path

import payments
from payments_tests.celery import app


def test_every_task_name_the_app_sends_is_registered():
    source = Path(payments.__file__).parent
    sent = {
        name
        for path in source.rglob("*.py")
        for name in re.findall(r"(?:enqueue|nudge)\(\s*\"(payments\.tasks\.\w+)\"", path.read_text())
    }
    assert sent >= {
        "payments.tasks.retry_refund",
        "payments.tasks.process_webhook_event",
        "payments.tasks.process_pending_webhook_events",
    }
    assert sent <= set(app.tasks), sent - set(app.tasks)
