"""Writing the same fields of many rows, each its own values, in one UPDATE statement."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from django.db import connections, models, router


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
