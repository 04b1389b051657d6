"""Each organization gets a server-generated ExternalId for the AWS roles the server
assumes for it (each existing one its own)."""

from django.db import migrations, models

import accounts.models


def generate(apps, schema_editor):
    Organization = apps.get_model("accounts", "Organization")
    for organization in Organization.objects.filter(aws_external_id__isnull=True):
        organization.aws_external_id = accounts.models.new_external_id()
        organization.save(update_fields=["aws_external_id"])


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="organization",
            name="aws_external_id",
            field=models.CharField(max_length=64, null=True, editable=False),
        ),
        migrations.RunPython(generate, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="organization",
            name="aws_external_id",
            field=models.CharField(
                default=accounts.models.new_external_id, editable=False, max_length=64,
                unique=True,
                help_text="The sts:ExternalId an AWS role's trust policy requires of this server.",
            ),
        ),
    ]
