"""Writes that Django's ORM would spread over several round trips, in one SQL statement each."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, cast

from django.db import connections, models, router, transaction
from django.db.models import sql


def _cast(field: models.Field, connection: Any) -> str:
    return re.sub(r"\(\d+\)$", "", str(field.db_type(connection)))


def update_rows(rows: Sequence[models.Model], fields: Sequence[str]) -> None:
    """UPDATE `fields` of `rows` (saved instances of one model) to their values on the instances.

    One `UPDATE … FROM (VALUES …)` for all of them, where QuerySet.bulk_update would compile a CASE
    per field and row (most of a drained batch's time). No signals, no auto_now: set those fields.
    """
    if not rows:
        return
    model = type(rows[0])
    meta = model._meta
    connection = connections[router.db_for_write(model)]
    if connection.vendor != "postgresql":
        model._default_manager.bulk_update(rows, fields)
        return
    concrete: list[models.Field] = [meta.get_field(name) for name in fields]  # type: ignore[misc]
    pk: models.Field = meta.pk
    quote = connection.ops.quote_name
    columns = [pk, *concrete]
    # Each value cast to its column's type (VALUES alone would guess text), without a length: a
    # cast to varchar(n) would cut a long value where the column refuses it, as save() does.
    placeholder = "(" + ", ".join(f"%s::{_cast(field, connection)}" for field in columns) + ")"
    params: list[Any] = []
    for row in rows:
        for field in columns:
            params.append(field.get_db_prep_save(getattr(row, field.attname), connection))
    names = ", ".join(quote(str(field.column)) for field in columns)
    assignments = ", ".join(
        f"{quote(str(field.column))} = v.{quote(str(field.column))}" for field in concrete
    )
    table = quote(meta.db_table)
    sql = (
        f"UPDATE {table} SET {assignments} FROM (VALUES {', '.join([placeholder] * len(rows))})"  # noqa: S608 - names from the model
        f" AS v({names}) WHERE {table}.{quote(str(pk.column))} = v.{quote(str(pk.column))}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def insert_and_update(rows: Sequence[models.Model], queryset: models.QuerySet, values: dict[str, Any]) -> int:
    """INSERT `rows` (new instances of one model) and UPDATE `queryset` with `values`, in one
    statement: the rows updated. One round trip, and atomic by itself (no BEGIN and COMMIT around
    it). The rows are inserted whether or not the update matches anything. PostgreSQL only (a
    data-modifying WITH); no signals, no auto_now on the update (set those fields in `values`).
    """
    model = type(rows[0])
    connection = connections[router.db_for_write(model)]
    if connection.vendor != "postgresql":
        with transaction.atomic(using=connection.alias):
            model._default_manager.bulk_create(rows)
            return queryset.update(**values)
    insert = sql.InsertQuery(model)
    insert.insert_values([f for f in model._meta.concrete_fields if not f.primary_key], list(rows))
    [(insert_sql, insert_params)] = insert.get_compiler(connection=connection).as_sql()
    update = cast(sql.UpdateQuery, queryset.query.chain(sql.UpdateQuery))
    update.add_update_values(values)
    update_sql, update_params = update.get_compiler(connection=connection).as_sql()
    with connection.cursor() as cursor:
        cursor.execute(f"WITH inserted AS ({insert_sql}) {update_sql}", (*insert_params, *update_params))
        return cursor.rowcount
