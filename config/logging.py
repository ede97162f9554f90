"""A log formatter that writes a record's structured fields (logging's `extra`) as key=value pairs."""

import logging

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# Fields Django's loggers add that say nothing on a line: the socket or request object, and the
# server's time beside the record's own.
_UNPRINTED = {"request", "server_time"}
_HIDDEN = _STANDARD | _UNPRINTED


class KeyValueFormatter(logging.Formatter):
    """`2026-11-22 10:00:00 INFO payments.services payment status changed payment_id=42 status=succeeded`."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in vars(record).items() if k not in _HIDDEN and not k.startswith("_")}
        if not fields:
            return line
        pairs = " ".join(
            f"{key}={value!r}" if isinstance(value, str) and " " in value else f"{key}={value}"
            for key, value in fields.items()
        )
        first, newline, rest = line.partition("\n")  # keep a traceback below the fields
        return f"{first} {pairs}{newline}{rest}"
