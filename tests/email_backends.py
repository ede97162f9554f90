"""Email backends for tests: the SMTP boundary misbehaving (the project's code is never faked)."""

import smtplib
import threading

from django.core.mail.backends.locmem import EmailBackend


class WorkerDied(BaseException):
    """Stands for the worker process dying: nothing in the project catches it."""


class SendThenCrashBackend(EmailBackend):
    """Delivers the message, then the worker dies before anything is committed."""

    def send_messages(self, messages):
        super().send_messages(messages)
        raise WorkerDied("killed after the SMTP server accepted the message")


class FlakySMTPBackend(EmailBackend):
    """Refuses the first `failures` messages with an SMTP error, then delivers."""

    failures = 4
    attempts: list[float] = []
    _lock = threading.Lock()

    def send_messages(self, messages):
        import time

        with self._lock:
            FlakySMTPBackend.attempts.append(time.monotonic())
            if len(FlakySMTPBackend.attempts) <= self.failures:
                raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        return super().send_messages(messages)
