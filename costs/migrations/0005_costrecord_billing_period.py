"""Cost records carry the billing period they were invoiced in, part of their natural key,
so a FOCUS import replaces the periods it delivers instead of every day between its first
and last (which deleted an earlier period's days when a later export corrected one of
them). Existing records get their day's month: the period of every cloud API record, and
of FOCUS records from calendar-month exports (re-import a FOCUS export with other
periods, or with corrections of earlier periods, once after this migration)."""

from django.db import migrations, models
from django.db.models.functions import TruncMonth


def month_of_day(apps, schema_editor):
    CostRecord = apps.get_model("costs", "CostRecord")
    CostRecord.objects.update(billing_period=TruncMonth("day"))


class Migration(migrations.Migration):
    dependencies = [
        ("costs", "0004_syncjobprovider_snapshot"),
    ]

    operations = [
        migrations.AddField(
            model_name="costrecord",
            name="billing_period",
            field=models.DateField(null=True),
        ),
        migrations.RunPython(month_of_day, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="costrecord",
            name="billing_period",
            field=models.DateField(),
        ),
        migrations.RemoveConstraint(model_name="costrecord", name="costrecord_natural_key"),
        migrations.AddConstraint(
            model_name="costrecord",
            constraint=models.UniqueConstraint(
                fields=["provider", "day", "service", "region", "account", "currency",
                        "billing_period"],
                name="costrecord_natural_key",
            ),
        ),
        migrations.AddIndex(
            model_name="costrecord",
            index=models.Index(fields=["provider", "billing_period"],
                               name="costrecord_provider_period"),
        ),
    ]
