"""Money as integers in minor units: Stripe's currency exponents, exact parsing, fees and limits."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.core.exceptions import ValidationError

from payments.conf import payments_settings

# https://docs.stripe.com/currencies#zero-decimal
ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
# https://docs.stripe.com/currencies#three-decimal
THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])
# Whole units only, but Stripe's API still takes them with two decimals that are always 00.
WHOLE_UNITS_TWO_DECIMAL = frozenset({"isk", "ugx"})

_CURRENCY_RE = re.compile(r"^[a-z]{3}$")
_AMOUNT_RE = re.compile(r"^\d+(\.\d+)?$")


def normalize_currency(currency: str) -> str:
    """Return the lowercase ISO code Stripe expects, or raise ValidationError."""
    code = (currency or "").strip().lower()
    if not _CURRENCY_RE.match(code):
        raise ValidationError(f"{currency!r} is not a currency code.", code="invalid_currency")
    return code


def exponent(currency: str) -> int:
    """How many minor-unit digits Stripe's API uses for `currency`."""
    code = normalize_currency(currency)
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def display_decimals(currency: str) -> int:
    """How many decimals a person may write for `currency` (ISK/UGX: none)."""
    code = normalize_currency(currency)
    return 0 if code in WHOLE_UNITS_TWO_DECIMAL else exponent(code)


def to_minor(amount: str | Decimal | int, currency: str) -> int:
    """Convert a major-unit amount ("99.99") to Stripe minor units exactly, never through float."""
    if isinstance(amount, float):
        raise ValidationError("Amounts are given as decimal strings, not floats.", code="invalid_amount")
    text = str(amount).strip()
    if not _AMOUNT_RE.match(text):
        raise ValidationError(f"{amount!r} is not a valid amount.", code="invalid_amount")
    try:
        value = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the regex already filters these
        raise ValidationError(f"{amount!r} is not a valid amount.", code="invalid_amount") from exc
    allowed = display_decimals(currency)
    given = len(text.split(".")[1]) if "." in text else 0
    if given > allowed:
        raise ValidationError(
            f"{currency.upper()} amounts take at most {allowed} decimal places.",
            code="too_many_decimals",
        )
    return int(value.scaleb(exponent(currency)).to_integral_value())


def to_major(minor: int, currency: str) -> Decimal:
    """The major-unit Decimal for a minor-unit integer."""
    return Decimal(int(minor)).scaleb(-exponent(currency))


def format_amount(minor: int, currency: str) -> str:
    """A human-readable amount such as "20.60 USD" or "1,500 JPY"."""
    decimals = display_decimals(currency)
    major = to_major(minor, currency).quantize(Decimal(1).scaleb(-decimals))
    return f"{major:,.{decimals}f} {normalize_currency(currency).upper()}"


def _unit(currency: str) -> int:
    """The smallest chargeable step in minor units (100 for ISK/UGX, else 1)."""
    return 100 if normalize_currency(currency) in WHOLE_UNITS_TWO_DECIMAL else 1


def compute_fee(subtotal: int, currency: str) -> int:
    """Processing fee: rate × subtotal rounded half up, plus the fixed part, in minor units."""
    if subtotal < 0:
        raise ValidationError("The subtotal cannot be negative.", code="invalid_amount")
    unit = _unit(currency)
    rated = (Decimal(subtotal) * payments_settings.FEE_RATE / unit).quantize(
        Decimal(1), rounding=ROUND_HALF_UP
    )
    return int(rated) * unit + int(payments_settings.FEE_FIXED)


def amount_limits(currency: str) -> tuple[int, int]:
    """(minimum, maximum) chargeable total in minor units for `currency`."""
    code = normalize_currency(currency)
    override = payments_settings.AMOUNT_LIMITS.get(code)
    if override:
        return int(override[0]), int(override[1])
    unit = _unit(code)
    scale = exponent(code)
    low = (payments_settings.MIN_AMOUNT.scaleb(scale) / unit).to_integral_value(rounding="ROUND_CEILING")
    high = (payments_settings.MAX_AMOUNT.scaleb(scale) / unit).to_integral_value(rounding="ROUND_FLOOR")
    return max(int(low) * unit, unit), int(high) * unit


def validate_amount(total: int, currency: str) -> None:
    """Raise ValidationError unless `total` is chargeable in `currency`."""
    low, high = amount_limits(currency)
    if total % _unit(currency):
        raise ValidationError(f"{currency.upper()} amounts must be whole units.", code="invalid_amount")
    if not low <= total <= high:
        raise ValidationError(
            f"The amount must be between {format_amount(low, currency)} and {format_amount(high, currency)}.",
            code="amount_out_of_range",
        )
