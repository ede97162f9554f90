"""With only the core dependencies (Django, stripe): the app imports, its migrations apply to a
database of its own, `check` passes, and the admin's refund page renders from the app's own
template. python -m payments_tests.smoke (./scripts/test-payments runs it in a bare venv)."""

import os
import sys


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "payments_tests.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    import payments
    from payments.models import Payment
    from payments_tests.donations.models import Donation

    print(f"payments {payments.__version__} from {os.path.dirname(payments.__file__)}")
    assert payments.__file__.startswith(sys.prefix), "payments must come from the installed wheel"
    setup_test_environment()
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        call_command("check", fail_level="ERROR")
        from importlib.util import find_spec

        from django.core.checks import run_checks

        # A bare install: none of the extras leaked into the core dependencies, the app says what
        # is missing, and every module outside the extras' corners imports.
        extras = [
            name for name in ("rest_framework", "drf_spectacular", "celery", "kombu") if find_spec(name)
        ]
        assert not extras, f"installed without being asked for: {extras}"
        assert "payments.W002" in {m.id for m in run_checks()}
        import importlib
        import pkgutil

        for module in pkgutil.walk_packages(payments.__path__, "payments."):
            if not module.name.startswith(("payments.api", "payments.tasks")):
                importlib.import_module(module.name)
        staff = get_user_model().objects.create_user("staff", "staff@example.com", "pw", is_staff=True)
        staff.user_permissions.add(
            *Permission.objects.filter(codename__in=["refund_payment", "view_payment"])
        )
        donation = Donation.objects.create(donor=staff, amount=2500)
        payment = Payment.objects.create(
            content_type=ContentType.objects.get_for_model(Donation),
            object_id=str(donation.pk),
            owner=staff,
            subtotal=2500,
            total=2500,
            currency="usd",
            status="succeeded",
            idempotency_key="smoke-payment",
            stripe_payment_intent_id="pi_smoke",
        )
        client = Client()
        client.force_login(staff)
        page = client.get(f"/admin/payments/payment/{payment.pk}/refund/")
        assert page.status_code == 200, page.status_code
        assert b"25.00" in page.content and b"Refund" in page.content, page.content[:500]
        print(f"migrate, check and the admin refund page: ok (database {name})")
    finally:
        connection.creation.destroy_test_db(name, verbosity=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
