"""System checks of the payments settings."""

from django.core.checks import run_checks

from payments.checks import check_payments_settings, check_stripe_keys


def _ids(settings):
    return {m.id for m in [*check_payments_settings(), *check_stripe_keys()]}


def test_missing_keys_are_errors_outside_debug(settings):
    settings.DEBUG = False
    settings.PAYMENTS = {"SECRET_KEY": "", "WEBHOOK_SECRETS": []}
    assert {"payments.E002", "payments.E003"} <= _ids(settings)


def test_missing_keys_stop_a_deployment_check_not_migrate(settings):
    """A fresh clone can migrate and check without keys; `check --deploy` names them."""
    settings.DEBUG = False
    settings.PAYMENTS = {"SECRET_KEY": "", "WEBHOOK_SECRETS": []}
    assert not {"payments.E002", "payments.E003"} & {m.id for m in run_checks()}
    assert {"payments.E002", "payments.E003"} <= {m.id for m in run_checks(include_deployment_checks=True)}


def test_missing_keys_are_fine_in_debug(settings):
    settings.DEBUG = True
    settings.PAYMENTS = {}
    assert _ids(settings) == set()


def test_live_key_in_debug_warns(settings):
    settings.DEBUG = True
    settings.PAYMENTS = {"SECRET_KEY": "sk_live_" + "x" * 10}
    assert "payments.W001" in _ids(settings)


def test_unknown_setting_is_an_error(settings):
    settings.DEBUG = True
    settings.PAYMENTS = {"FEE_RATES": "0.03"}
    assert "payments.E001" in _ids(settings)


def test_configured_project_passes(settings):
    settings.DEBUG = False
    settings.PAYMENTS = {"SECRET_KEY": "sk_test_abc", "WEBHOOK_SECRETS": ["whsec_a", "whsec_b"]}
    assert _ids(settings) == set()


def test_fixed_fee_as_one_number_is_an_error(settings):
    settings.DEBUG = True
    settings.PAYMENTS = {"FEE_FIXED": 30}
    assert "payments.E006" in _ids(settings)


def test_fixed_fee_that_cannot_be_charged_is_an_error(settings):
    settings.DEBUG = True
    settings.PAYMENTS = {"FEE_FIXED": {"usd": 30, "kwd": 105}}  # KWD amounts end in 0
    assert "payments.E006" in _ids(settings)


def test_checkout_expiry_within_stripes_window(settings):
    from datetime import timedelta

    settings.DEBUG = True
    settings.PAYMENTS = {"CHECKOUT_EXPIRES_AFTER": timedelta(minutes=30)}
    assert "payments.E007" in _ids(settings)
    settings.PAYMENTS = {"CHECKOUT_EXPIRES_AFTER": timedelta(minutes=35)}
    assert _ids(settings) == set()


def test_a_currency_without_limits_is_an_error(settings):
    settings.DEBUG = True
    settings.PAYMENTS = {"CURRENCY": "idr"}
    assert "payments.E008" in _ids(settings)
    settings.PAYMENTS = {"CURRENCY": "idr", "AMOUNT_LIMITS": {"idr": (800_000, 10**8)}}
    assert _ids(settings) == set()
