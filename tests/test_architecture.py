"""The payments app stands alone: it imports nothing from bookings, and pays for any model."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import payments
from payments.services import payment_transition
from payments.states import PaymentStatus
from payments_tests.factories import DonationFactory
from tests.factories import PaymentFactory

ROOT = Path(payments.__file__).resolve().parent.parent


def _lint_imports(*, pythonpath: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--config", str(ROOT / ".importlinter")],
        cwd=pythonpath,
        env={**os.environ, "PYTHONPATH": f"{pythonpath}{os.pathsep}{ROOT}"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_import_contracts_hold():
    done = _lint_imports(pythonpath=ROOT)
    assert done.returncode == 0, done.stdout[-2000:]


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("services/refunds.py", "from payments import tasks", "payments: api/admin/commands"),
        ("models.py", "import bookings.models", "payments imports nothing of the site"),
        ("services/attempts.py", "import stripe", "only the Stripe gateway imports the stripe SDK"),
        (
            "services/base.py",
            "from payments.services import checkout",
            "payments.services: one module per flow",
        ),
        ("webhooks.py", "import celery", "optional dependencies stay in their corners"),
    ],
)
def test_the_contracts_catch_an_import_that_breaks_them(tmp_path, module, line, contract):
    """A copy of the app with one bad import added: the linter names the broken contract."""
    shutil.copytree(ROOT / "payments", tmp_path / "payments", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "payments" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    done = _lint_imports(pythonpath=tmp_path)
    assert done.returncode == 1
    summary = " ".join(done.stdout.split())  # the linter wraps long contract names
    verdict = re.search(re.escape(contract) + r".*?(KEPT|BROKEN)", summary)
    assert verdict and verdict[1] == "BROKEN", summary[:1500]


@pytest.mark.django_db
def test_a_donation_is_payable_too(django_capture_on_commit_callbacks):
    donation = DonationFactory()
    payment = PaymentFactory(payable=donation, subtotal=5000, fee=150, status="processing")
    assert payment.payable == donation
    assert payment.payable_reference == f"donations.donation:{donation.pk}"
    with django_capture_on_commit_callbacks(execute=True):
        payment_transition(payment=payment, status=PaymentStatus.SUCCEEDED)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("subtotal", "fee", "total", "currency", "code"),
    [
        (5000, 150, 5100, "usd", "invalid_amount"),
        (-100, 150, 50, "usd", "invalid_amount"),
        (10, 0, 10, "usd", "amount_out_of_range"),
        (5000, 150, 5150, "u$d", "invalid_currency"),
    ],
)
def test_payment_terms_are_checked_when_made(subtotal, fee, total, currency, code):
    from django.core.exceptions import ValidationError

    from payments.exceptions import PaymentError
    from payments.services import PaymentTerms

    donation = DonationFactory()
    with pytest.raises((PaymentError, ValidationError)) as info:
        PaymentTerms(
            payable=donation, owner=donation.donor, subtotal=subtotal, fee=fee, total=total, currency=currency
        )
    assert info.value.code == code
    terms = PaymentTerms(
        payable=donation, owner=donation.donor, subtotal=5000, fee=150, total=5150, currency="USD"
    )
    assert terms.currency == "usd"
