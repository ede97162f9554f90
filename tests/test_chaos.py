"""The chaos run's parts: its faults reach only the server's Stripe requests, its compressed time
keeps production's orderings, and its checks do catch what they look for."""

from types import SimpleNamespace

import pytest
import requests

from chaos import settings as chaos_settings
from chaos.bookers import Load, Outcome, Plan, Tally
from chaos.faults import FaultPolicy
from chaos.invariants import check_all
from chaos.stack import GUNICORN_TIMEOUT

pytestmark = pytest.mark.django_db


def _seconds(value) -> float:
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)


@pytest.mark.parametrize(
    ("conf", "wsgi_timeout"),
    [(chaos_settings, GUNICORN_TIMEOUT), (pytest.importorskip("config.settings"), 30)],
    ids=["chaos", "production"],
)
def test_time_keeps_its_orderings(conf, wsgi_timeout):
    """Stripe timeout < request budget < WSGI timeout; a retry's longest wait plus a task's time
    limit < every sweep delay (a swept task never doubles a retry); a retry's wait < the broker's
    visibility timeout (a waiting retry is not handed to a second worker)."""
    payments = {"TIMEOUT": 20.0, "REQUEST_BUDGET": 25.0, **conf.PAYMENTS}
    assert payments["TIMEOUT"] < payments["REQUEST_BUDGET"] < wsgi_timeout
    longest_retry = payments["MAX_RETRY_COUNTDOWN"] + conf.CELERY_TASK_TIME_LIMIT
    from bookings.conf import DEFAULTS as BOOKING_DEFAULTS
    from payments.conf import DEFAULTS as PAYMENT_DEFAULTS

    sweeps = [
        _seconds(payments.get("REFUND_SWEEP_AFTER", PAYMENT_DEFAULTS["REFUND_SWEEP_AFTER"])),
        _seconds(conf.BOOKINGS.get("EMAIL_SWEEP_AFTER", BOOKING_DEFAULTS["EMAIL_SWEEP_AFTER"])),
    ]
    for sweep in sweeps:
        assert longest_retry < sweep
    claim = conf.BOOKINGS.get("EMAIL_CLAIM_EXPIRES_AFTER", BOOKING_DEFAULTS["EMAIL_CLAIM_EXPIRES_AFTER"])
    assert _seconds(claim) > conf.CELERY_TASK_TIME_LIMIT, "a send under way is never doubled"
    assert payments["MAX_RETRY_COUNTDOWN"] < conf.CELERY_BROKER_VISIBILITY_TIMEOUT


@pytest.mark.emulator
def test_random_faults_reach_only_secret_key_requests(stripe_harness):
    stripe_harness.fault_policy = FaultPolicy(rate=1.0, stall=0.1, seed=7)
    try:
        server = requests.get(
            f"{stripe_harness.url}/v1/payment_intents",
            headers={"Authorization": "Bearer sk_test_suite"},
            timeout=5,
        )
        browser = requests.post(
            f"{stripe_harness.url}/v1/payment_methods",
            data={"key": "pk_test_suite", "type": "card", "card[number]": "4242424242424242",
                  "card[exp_month]": "12", "card[exp_year]": "2034", "card[cvc]": "123"},
            timeout=5,
        )  # fmt: skip
    except requests.ConnectionError:
        server = None  # a reset is one of the faults
    else:
        assert browser.status_code == 200, "Stripe.js's own requests are never faulted"
    policy = stripe_harness.fault_policy
    stripe_harness.fault_policy = None
    assert policy.seen == 1 and sum(policy.injected.values()) == 1
    assert server is None or server.status_code >= 400 or policy.injected["stall past the timeout"]


def test_an_outage_drops_every_request():
    policy = FaultPolicy(rate=0.0, stall=1.0, seed=1)
    assert policy("POST", "/v1/refunds") is None
    policy.outage(60)
    assert all(policy("GET", "/v1/charges").action == "drop" for _ in range(5))
    assert policy.injected["outage"] == 5


def _charge(intent_id: str, amount: int, refunded: int = 0):
    return SimpleNamespace(
        id="ch_" + intent_id,
        payment_intent=intent_id,
        status="succeeded",
        amount=amount,
        amount_refunded=refunded,
    )


def test_the_checks_catch_a_double_charge_and_a_lost_payment(tmp_path):
    from tests.factories import PaymentFactory

    first = PaymentFactory(status="succeeded", stripe_payment_intent_id="pi_one")
    second = PaymentFactory(
        content_type=first.content_type,
        object_id=first.object_id,
        owner=first.owner,
        attempt=2,
        status="failed",
        stripe_payment_intent_id="pi_two",
    )
    store = {
        "payment_intent:pi_one": SimpleNamespace(id="pi_one", metadata={"payment_uid": str(first.uid)}),
        "payment_intent:pi_two": SimpleNamespace(id="pi_two", metadata={"payment_uid": str(second.uid)}),
        "charge:ch_pi_one": _charge("pi_one", first.total),
        "charge:ch_pi_two": _charge("pi_two", second.total),
    }
    outcomes = [Outcome(booking_id=int(first.object_id), plan=Plan("card"))]
    load = Load(tally=Tally(), outcomes=outcomes)
    access_log = tmp_path / "access.log"
    access_log.write_text(
        '127.0.0.1 - - [01/Dec/2026:00:00:00 +0000] "POST /api/webhooks/stripe/ HTTP/1.1" 500 9 "-" "x"\n'
    )
    found = check_all(store=store, load=load, mail_dir=tmp_path, access_log=access_log, reconcile={})
    checks = {c.name.split(" (")[0]: c for c in found}
    assert checks["double charges"].count == 1
    assert checks["payments Stripe took that are not paid here"].count == 1
    assert checks["bookings a booker kept trying that did not end paid"].count == 1
    assert checks["over-refunds at Stripe"].ok
    assert checks["HTTP 500s"].examples == ["POST /api/webhooks/stripe/ HTTP/1.1"]
