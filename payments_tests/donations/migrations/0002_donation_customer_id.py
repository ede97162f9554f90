from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("donations", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="donation",
            name="customer_id",
            field=models.CharField(blank=True, max_length=64),
        ),
    ]
