from django.db import migrations, models


def backfill_synced_spans(apps, schema_editor):
    """Until now a provider kept one span of synced days, its coverage: that span is its
    first synced span. The days synced before it and not joined to it are unknown."""
    Provider = apps.get_model("providers", "Provider")
    providers = Provider.objects.filter(coverage_start__isnull=False, coverage_end__isnull=False)
    for provider in providers.iterator():
        provider.synced_spans = [
            [provider.coverage_start.isoformat(), provider.coverage_end.isoformat()]
        ]
        provider.save(update_fields=["synced_spans"])


class Migration(migrations.Migration):

    dependencies = [
        ("providers", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="provider",
            name="synced_spans",
            field=models.JSONField(blank=True, db_default=[], default=list, editable=False),
        ),
        # Back, the column is dropped: nothing to undo.
        migrations.RunPython(backfill_synced_spans, migrations.RunPython.noop),
    ]
