"""At most one sale per payable. Payables that already have two (the double charge this fixes)
keep their first; the later ones are marked as duplicates for staff to refund (logged)."""

import logging

from django.conf import settings
from django.db import migrations, models

SALE = ["succeeded", "partially_refunded", "disputed"]


def mark_existing_duplicates(apps, schema_editor):
    payment = apps.get_model("payments", "Payment")
    seen: set[tuple[int, str]] = set()
    for row in payment.objects.filter(status__in=SALE).order_by("succeeded_at", "pk").iterator():
        key = (row.content_type_id, row.object_id)
        if key in seen:
            payment.objects.filter(pk=row.pk).update(unwanted_reason="duplicate")
            logging.getLogger(__name__).error("payment %s is a second sale: refund it", row.pk)
        seen.add(key)


class Migration(migrations.Migration):

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('payments', '0004_checkout_expires_at'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='payment',
            name='unwanted_reason',
            field=models.CharField(blank=True, max_length=32),
        ),
        migrations.RunPython(mark_existing_duplicates, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name='payment',
            constraint=models.UniqueConstraint(condition=models.Q(('status__in', ['succeeded', 'partially_refunded', 'disputed']), ('unwanted_reason', '')), fields=('content_type', 'object_id'), name='payment_one_sale'),
        ),
    ]
