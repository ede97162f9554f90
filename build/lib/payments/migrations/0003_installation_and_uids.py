"""An installation id, and a UUID on payments, refunds and customers for installation-safe keys.

Unique UUID columns are added in three steps (nullable, filled row by row, then unique), as
Django's documentation recommends, so existing rows each get their own value.
"""

import uuid

from django.db import migrations, models


def fill_uids(apps, schema_editor):
    for name in ("Payment", "Refund", "Customer"):
        model = apps.get_model("payments", name)
        for pk in model.objects.filter(uid__isnull=True).values_list("pk", flat=True).iterator():
            model.objects.filter(pk=pk).update(uid=uuid.uuid4())


def create_installation(apps, schema_editor):
    apps.get_model("payments", "Installation").objects.get_or_create(pk=1)


class Migration(migrations.Migration):
    dependencies = [("payments", "0002_reconcile_state")]

    operations = [
        migrations.CreateModel(
            name="Installation",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("uid", models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
        ),
        migrations.RunPython(create_installation, migrations.RunPython.noop),
        *[
            migrations.AddField(model_name=model, name="uid", field=models.UUIDField(editable=False, null=True))
            for model in ("payment", "refund", "customer")
        ],
        migrations.RunPython(fill_uids, migrations.RunPython.noop),
        *[
            migrations.AlterField(
                model_name=model,
                name="uid",
                field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
            )
            for model in ("payment", "refund", "customer")
        ],
    ]
