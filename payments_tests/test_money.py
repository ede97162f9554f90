"""Money: exponents, exact parsing, fee rounding and limits."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from payments import money


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("99.99", "usd", 9999),
        ("0.5", "usd", 50),
        ("100000", "usd", 10_000_000),
        ("1500", "jpy", 1500),
        ("1500", "JPY", 1500),
        ("12.340", "kwd", 12340),
        ("1.5", "bhd", 1500),
        ("5", "isk", 500),
        ("1000", "ugx", 100_000),
        (Decimal("19.90"), "eur", 1990),
        ("0.1", "usd", 10),
        ("0.30", "usd", 30),
    ],
)
def test_to_minor_is_exact(amount, currency, minor):
    assert money.to_minor(amount, currency) == minor


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("1.001", "usd"),
        ("99.990", "usd"),
        ("1.5", "jpy"),
        ("1.0001", "kwd"),
        ("5.50", "isk"),
        ("-1.00", "usd"),
        ("1e3", "usd"),
        ("abc", "usd"),
        ("", "usd"),
        ("1.00", "us"),
        ("1.00", "12a"),
    ],
)
def test_to_minor_rejects(amount, currency):
    with pytest.raises(ValidationError):
        money.to_minor(amount, currency)


def test_to_minor_refuses_float():
    with pytest.raises(ValidationError):
        money.to_minor(0.1, "usd")


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (2060, "usd", "20.60 USD"),
        (1500, "jpy", "1,500 JPY"),
        (12340, "kwd", "12.340 KWD"),
        (500, "isk", "5 ISK"),
    ],
)
def test_format_amount(minor, currency, text):
    assert money.format_amount(minor, currency) == text


@pytest.mark.parametrize(
    ("subtotal", "currency", "fee"),
    [
        (2000, "usd", 60),
        (50, "usd", 2),  # 1.5 rounds half up to 2
        (150, "usd", 5),  # 4.5 -> 5
        (149, "usd", 4),  # 4.47 -> 4
        (1000, "jpy", 30),
        (1050, "jpy", 32),  # 31.5 -> 32
        (12340, "kwd", 370),  # 370.2 -> 370 (three decimals: steps of 10)
        (12500, "kwd", 380),  # 375 -> 38 tens, half up
        (5000, "isk", 200),  # 1.5 ISK rounds to 2 whole ISK = 200
    ],
)
def test_fee_rounds_half_up(subtotal, currency, fee):
    assert money.compute_fee(subtotal, currency) == fee


def test_fee_fixed_part_is_per_currency(settings):
    settings.PAYMENTS = {**settings.PAYMENTS, "FEE_RATE": "0.029", "FEE_FIXED": {"usd": 30, "JPY": 40}}
    assert money.compute_fee(10000, "usd") == 290 + 30  # 0.30 USD
    assert money.compute_fee(10000, "jpy") == 290 + 40  # 40 JPY, not 30
    assert money.compute_fee(10000, "eur") == 290  # none configured for EUR


@pytest.mark.parametrize(
    ("currency", "low", "high"),
    [
        ("usd", 50, 10_000_000),
        ("eur", 50, 10_000_000),
        ("gbp", 30, 10_000_000),  # Stripe's minimum for GBP is 0.30
        ("jpy", 50, 100_000),  # and 50 for JPY, not 0.50 of a yen
        ("hkd", 400, 10_000_000),
    ],
)
def test_amount_limits(currency, low, high):
    assert money.amount_limits(currency) == (low, high)


@pytest.mark.parametrize(
    ("currency", "limits", "rounded"),
    [
        ("kwd", (505, 10**9), (510, 99_999_990)),  # steps of 10, eight digits at most
        ("isk", (150, 10_000_050), (200, 10_000_000)),  # whole krónur
    ],
)
def test_configured_limits_round_to_what_stripe_charges(settings, currency, limits, rounded):
    settings.PAYMENTS = {**settings.PAYMENTS, "AMOUNT_LIMITS": {currency: limits}}
    assert money.amount_limits(currency) == rounded


def test_validate_amount_rejects_out_of_range():
    money.validate_amount(50, "usd")
    for bad in (49, 10_000_001, 0):
        with pytest.raises(ValidationError) as info:
            money.validate_amount(bad, "usd")
        assert info.value.code == "amount_out_of_range"


def test_jpy_below_stripes_minimum_is_refused():
    money.validate_amount(50, "jpy")
    with pytest.raises(ValidationError) as info:
        money.validate_amount(49, "jpy")
    assert info.value.code == "amount_out_of_range"


def test_three_decimal_amounts_must_end_in_zero(settings):
    settings.PAYMENTS = {**settings.PAYMENTS, "AMOUNT_LIMITS": {"kwd": (500, 10**8)}}
    money.validate_amount(money.to_minor("12.340", "kwd"), "kwd")
    with pytest.raises(ValidationError) as info:
        money.validate_amount(money.to_minor("12.345", "kwd"), "kwd")
    assert info.value.code == "invalid_amount"


def test_validate_amount_rejects_fractional_isk(settings):
    settings.PAYMENTS = {**settings.PAYMENTS, "AMOUNT_LIMITS": {"isk": (100, 10**7)}}
    with pytest.raises(ValidationError):
        money.validate_amount(550, "isk")


def test_limits_override_per_currency(settings):
    settings.PAYMENTS = {**settings.PAYMENTS, "AMOUNT_LIMITS": {"jpy": (100, 1_000_000)}}
    assert money.amount_limits("jpy") == (100, 1_000_000)


def test_limits_override_never_goes_beyond_stripe(settings):
    settings.PAYMENTS = {**settings.PAYMENTS, "AMOUNT_LIMITS": {"usd": (1, 10**12)}}
    assert money.amount_limits("usd") == (50, 99_999_999)


def test_a_currency_stripe_lists_no_minimum_for_needs_its_limits(settings):
    with pytest.raises(ValidationError) as info:
        money.validate_amount(100_000, "idr")
    assert info.value.code == "currency_not_configured"
    settings.PAYMENTS = {**settings.PAYMENTS, "AMOUNT_LIMITS": {"idr": (800_000, 10**8)}}
    assert money.amount_limits("idr") == (800_000, 99_999_999)


def test_a_project_floor_above_stripes_minimum(settings):
    settings.PAYMENTS = {**settings.PAYMENTS, "MIN_AMOUNT": "5.00"}
    assert money.amount_limits("usd")[0] == 500
    assert money.amount_limits("jpy")[0] == 50  # five yen is below Stripe's 50
