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

# https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts, in minor units.
# For any other currency Stripe's minimum is the equivalent of 0.50 USD, which only the host can
# know: such a currency is chargeable once PAYMENTS["AMOUNT_LIMITS"] names its limits.
STRIPE_MINIMUM_CHARGE = {
    "usd": 50,
    "aed": 200,
    "aud": 50,
    "bgn": 100,
    "brl": 50,
    "cad": 50,
    "chf": 50,
    "czk": 1500,
    "dkk": 250,
    "eur": 50,
    "gbp": 30,
    "hkd": 400,
    "huf": 17500,
    "inr": 50,
    "jpy": 50,
    "mxn": 1000,
    "myr": 200,
    "nok": 300,
    "nzd": 50,
    "pln": 200,
    "ron": 200,
    "sek": 300,
    "sgd": 50,
    "thb": 1000,
}
# "The amount value supports up to eight digits" (Stripe's API reference, PaymentIntent.amount).
STRIPE_MAXIMUM_DIGITS = 8
STRIPE_MAXIMUM_CHARGE = 10**STRIPE_MAXIMUM_DIGITS - 1

_CURRENCY_RE = re.compile(r"^[a-z]{3}$")
# ASCII digits only: str.isdigit() and \d also take "١٠" or "１０", which people do not mean as money.
_AMOUNT_RE = re.compile(r"^[0-9]+(\.[0-9]+)?$")


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


def chargeable_unit(currency: str) -> int:
    """The smallest chargeable step in minor units: 100 for ISK/UGX (whole units only), 10 for
    three-decimal currencies (Stripe requires their last digit to be 0), else 1."""
    code = normalize_currency(currency)
    if code in WHOLE_UNITS_TWO_DECIMAL:
        return 100
    if code in THREE_DECIMAL:
        return 10
    return 1


def fixed_fee(currency: str) -> int:
    """The fixed part of the fee for `currency`, in its minor units (PAYMENTS["FEE_FIXED"])."""
    return int(payments_settings.FEE_FIXED.get(normalize_currency(currency), 0))


def compute_fee(subtotal: int, currency: str) -> int:
    """Processing fee: rate × subtotal rounded half up, plus the fixed part, in minor units."""
    if subtotal < 0:
        raise ValidationError("The subtotal cannot be negative.", code="invalid_amount")
    unit = chargeable_unit(currency)
    rated = (Decimal(subtotal) * payments_settings.FEE_RATE / unit).quantize(
        Decimal(1), rounding=ROUND_HALF_UP
    )
    return int(rated) * unit + fixed_fee(currency)


def amount_limits(currency: str) -> tuple[int, int]:
    """(minimum, maximum) chargeable total in minor units for `currency`.

    The minimum is Stripe's for the currency (raised to MIN_AMOUNT, in major units, when set),
    the maximum MAX_AMOUNT; AMOUNT_LIMITS (minor units) replaces both for a currency, and is
    needed for one Stripe's minimum table does not list. Never outside what Stripe charges:
    its per-currency minimum and eight digits.
    """
    code = normalize_currency(currency)
    unit = chargeable_unit(code)
    scale = exponent(code)
    override = payments_settings.AMOUNT_LIMITS.get(code)
    if override:
        low, high = int(override[0]), int(override[1])
    elif code in STRIPE_MINIMUM_CHARGE:
        low = STRIPE_MINIMUM_CHARGE[code]
        if payments_settings.MIN_AMOUNT is not None:
            floor = payments_settings.MIN_AMOUNT.scaleb(scale).to_integral_value(rounding="ROUND_CEILING")
            low = max(low, int(floor))
        high = int(payments_settings.MAX_AMOUNT.scaleb(scale).to_integral_value(rounding="ROUND_FLOOR"))
    else:
        raise ValidationError(
            f"{code.upper()} has no configured limits: Stripe's minimum for it is the equivalent of "
            f"0.50 USD; set PAYMENTS['AMOUNT_LIMITS']['{code}'] = (minimum, maximum) in minor units.",
            code="currency_not_configured",
        )
    low = max(low, STRIPE_MINIMUM_CHARGE.get(code, 0))
    high = min(high, STRIPE_MAXIMUM_CHARGE)
    # Round inwards to what can be charged at all (whole ISK, three-decimal amounts ending in 0).
    return max(-(-low // unit) * unit, unit), high // unit * unit


def validate_amount(total: int, currency: str) -> None:
    """Raise ValidationError unless `total` is chargeable in `currency`."""
    low, high = amount_limits(currency)
    unit = chargeable_unit(currency)
    if total % unit:
        step = format_amount(unit, currency)
        raise ValidationError(
            f"{currency.upper()} amounts must be a multiple of {step}.", code="invalid_amount"
        )
    if not low <= total <= high:
        raise ValidationError(
            f"The amount must be between {format_amount(low, currency)} and {format_amount(high, currency)}.",
            code="amount_out_of_range",
        )
