"""The tests' Celery app: tasks run in the test process as they are enqueued, never on a broker."""

from celery import Celery

app = Celery("payments_tests")
app.conf.update(task_always_eager=True, task_eager_propagates=True, broker_url="memory://")
app.autodiscover_tasks(["payments"])
