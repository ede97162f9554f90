"""A trigram index for the admin's search in payment descriptions (a booking reference, a title).

PostgreSQL only, and only where the database lets this role create pg_trgm (a trusted extension
since PostgreSQL 13): elsewhere the search still works, by a scan. Not declared on the model, so
SQLite and other databases see no operation. Built CONCURRENTLY, outside a transaction, so a
large payments table keeps taking writes meanwhile; should a build fail halfway, drop the
invalid index and migrate again.
"""

import logging

from django.db import migrations, transaction

INDEX = "payments_payment_description_trgm"


def create_index(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    try:
        # A savepoint: a refusal must not abort the migration's transaction.
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except Exception as exc:  # noqa: BLE001 - a missing privilege leaves search unindexed, not broken
        logging.getLogger(__name__).warning("pg_trgm not available (%s): payment search stays unindexed", exc)
        return
    with connection.cursor() as cursor:
        # The expression the admin's icontains search compares: UPPER(description::text).
        cursor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON payments_payment "
            "USING gin ((UPPER(description::text)) gin_trgm_ops)"
        )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [("payments", "0005_one_sale_per_payable")]

    operations = [migrations.RunPython(create_index, drop_index)]
