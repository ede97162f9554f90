"""Configuration helpers: secrets from files, structured log lines."""

import logging

from config.env import env
from config.logging import KeyValueFormatter


def test_a_secret_can_come_from_a_file(tmp_path, monkeypatch):
    secret = tmp_path / "stripe_key"
    secret.write_text("sk_test_from_a_file\n")
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_from_the_environment")
    assert env("STRIPE_SECRET_KEY", default="") == "sk_test_from_the_environment"
    monkeypatch.setenv("STRIPE_SECRET_KEY_FILE", str(secret))
    assert env("STRIPE_SECRET_KEY", default="") == "sk_test_from_a_file"


def test_a_file_value_is_cast_like_the_variable(tmp_path, monkeypatch):
    from decouple import Csv

    secrets = tmp_path / "webhook_secrets"
    secrets.write_text("whsec_new,whsec_old")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET_FILE", str(secrets))
    assert env("STRIPE_WEBHOOK_SECRET", default="", cast=Csv()) == ["whsec_new", "whsec_old"]


def test_log_lines_carry_their_structured_fields():
    formatter = KeyValueFormatter("%(levelname)s %(name)s %(message)s")
    record = logging.makeLogRecord(
        {
            "levelname": "INFO",
            "name": "payments.services",
            "msg": "payment status changed",
            "payment_id": 42,
            "status": "succeeded",
            "payable": "bookings.booking:7",
        }
    )
    assert formatter.format(record) == (
        "INFO payments.services payment status changed "
        "payment_id=42 status=succeeded payable=bookings.booking:7"
    )
