"""The payments app stands alone: it imports nothing from bookings, and pays for any model."""

import re
from pathlib import Path

import pytest

import payments
from payments.services import payment_transition
from payments.states import PaymentStatus
from tests.factories import DonationFactory, PaymentFactory

PAYMENTS_DIR = Path(payments.__file__).parent


_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import\b|import\s+([\w.]+(?:\s*,\s*[\w.]+)*))", re.MULTILINE)


def _imported_modules(path: Path) -> set[str]:
    """Modules a file imports, read line by line (not with `ast`: after Playwright's greenlets
    have run on this thread, CPython 3.11's parser can fail on a recursion-depth check)."""
    names: set[str] = set()
    for from_module, plain in _IMPORT.findall(path.read_text(encoding="utf-8")):
        if from_module:
            names.add(from_module)
        else:
            names.update(part.strip() for part in plain.split(","))
    return names


def test_payments_never_imports_bookings():
    files = list(PAYMENTS_DIR.rglob("*.py"))
    assert len(files) > 5
    offenders = {
        str(f.relative_to(PAYMENTS_DIR)): name
        for f in files
        for name in _imported_modules(f)
        if name == "bookings" or name.startswith("bookings.")
    }
    assert offenders == {}


def test_only_the_stripe_gateway_imports_stripe():
    importers = {
        str(f.relative_to(PAYMENTS_DIR))
        for f in PAYMENTS_DIR.rglob("*.py")
        if any(n == "stripe" or n.startswith("stripe.") for n in _imported_modules(f))
    }
    assert importers <= {"gateway/stripe.py"}


@pytest.mark.django_db
def test_a_donation_is_payable_too(django_capture_on_commit_callbacks):
    donation = DonationFactory()
    payment = PaymentFactory(payable=donation, subtotal=5000, fee=150, status="processing")
    assert payment.payable == donation
    assert payment.payable_reference == f"payable_app.donation:{donation.pk}"
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
