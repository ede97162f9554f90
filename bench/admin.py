"""The admin on a large table: the payment list and its searches on N payments (1,000,000 by
default), each page's server time (median of 5, in-process) and its number of SQL queries."""

from __future__ import annotations

import statistics
import time

from bench.stack import BenchStack

USERS = 20_000
TITLES = 500


def fill(stack: BenchStack, count: int) -> None:
    """`count` payments of `USERS` bookers, made in the database itself (generate_series); each
    description holds a booking-like reference, upper(substr(md5(i), 1, 8)), the same each run."""
    from django.contrib.contenttypes.models import ContentType

    from bookings.models import Booking

    booking_type = ContentType.objects.get_for_model(Booking).pk
    stack.sql(
        "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff,"
        " is_active, date_joined)"
        " SELECT '!', false, 'adminbooker' || i, '', '', 'adminbooker' || i || '@example.com', false, true,"
        " now()"
        " FROM generate_series(1, %s) AS i",
        (USERS,),
    )
    first_user = stack.sql("SELECT id FROM auth_user WHERE username = 'adminbooker1'")[0][0]
    stack.sql(
        "INSERT INTO payments_payment (content_type_id, object_id, owner_id, description, subtotal, fee,"
        " total, currency, status, attempt, uid, idempotency_key, stripe_payment_intent_id,"
        " stripe_checkout_session_id, stripe_charge_id, stripe_customer_id, stripe_status, card_brand,"
        " card_last4, last_error_code, last_error_decline_code, last_error_message, unwanted_reason,"
        " save_payment_method, confirmations, created_at, updated_at, succeeded_at)"
        # Object ids far above the other benchmarks' bookings: one payment per payable and attempt.
        " SELECT %(ct)s, (1000000000 + i)::text, %(first)s + i %% %(users)s,"
        "  '1 × Concert ' || (i %% %(titles)s) || ' (booking ' || upper(substr(md5(i::text), 1, 8)) || ')',"
        "  2000, 60, 2060, 'usd',"
        "  CASE WHEN i %% 10 = 0 THEN 'refunded' WHEN i %% 10 = 1 THEN 'failed' ELSE 'succeeded' END,"
        "  1, gen_random_uuid(), 'bench-' || i, 'pi_bench' || i, '', 'ch_bench' || i, '', 'succeeded',"
        "  'visa', '4242', '', '', '', '', false, 1,"
        "  now() - make_interval(secs => i), now() - make_interval(secs => i),"
        "  now() - make_interval(secs => i)"
        " FROM generate_series(1, %(count)s) AS i",
        {"ct": booking_type, "first": first_user, "users": USERS, "titles": TITLES, "count": count},
    )
    stack.sql("VACUUM ANALYZE payments_payment")
    stack.sql("VACUUM ANALYZE auth_user")


def measure(stack: BenchStack, count: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    middle = count // 2
    reference = stack.sql("SELECT upper(substr(md5(%s::text), 1, 8))", (middle,))[0][0]
    staff = get_user_model().objects.create_superuser("bench-staff", "staff@example.com", "unused")
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(staff)
    base = "/admin/payments/payment/"
    pages = {
        "list, newest first": base,
        "list, status succeeded": f"{base}?status__exact=succeeded",
        "search by payment intent id": f"{base}?q=pi_bench{middle}",
        "search by charge id": f"{base}?q=ch_bench{middle}",
        "search by email": f"{base}?q=adminbooker{middle % USERS + 1}@example.com",
        "search by booking reference": f"{base}?q={reference}",
        "search by event title": f"{base}?q=Concert+{TITLES - 7}",
    }
    rows = []
    failures = []
    for label, url in pages.items():
        times = []
        for _ in range(5):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = client.get(url)
                times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                failures.append(f"admin {label}: HTTP {response.status_code}")
                break
        found = response.content.count(b'class="action-select"')
        slowest = max(
            queries.captured_queries, key=lambda q: float(q["time"]), default={"time": 0, "sql": ""}
        )
        rows.append(
            {
                "page": label,
                "ms": round(statistics.median(times)),
                "queries": len(queries),
                "rows": found,
                "slowest_query_ms": round(float(slowest["time"]) * 1000),
                "slowest_query": slowest["sql"][:300],
            }
        )
        if statistics.median(times) >= 300:
            failures.append(f"admin {label}: {statistics.median(times):.0f} ms (goal < 300)")
        if label.startswith("search") and found == 0:
            failures.append(f"admin {label}: found nothing")
    return {"payments": count, "rows": rows, "failures": failures}


def admin(stack: BenchStack, args) -> dict:
    started = time.monotonic()
    fill(stack, args.payments)
    filled = round(time.monotonic() - started)
    report = measure(stack, args.payments)
    report["fill_seconds"] = filled
    return report
