"""The "Finance reviewers" group: review anomalies in the admin (view, dismiss, reopen),
read cost records, jobs, providers and the alert log; nothing about API keys, members or
provider credentials (which the admin never displays anyway)."""

from django.db import migrations

GROUP = "Finance reviewers"
PERMISSIONS = {
    "costs": [
        "view_anomaly",
        "change_anomaly",
        "view_costrecord",
        "view_syncjob",
        "view_syncjobprovider",
        "view_anomalypolicy",
        "view_alertwebhook",
        "view_webhookdelivery",
    ],
    "providers": ["view_provider"],
}


def create_group(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after migrate; create them now to assign them.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    for app_label, codenames in PERMISSIONS.items():
        group.permissions.add(
            *Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames)
        )


def delete_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("providers", "0001_initial"),
        ("costs", "0002_anomaly_alerts"),
    ]

    operations = [migrations.RunPython(create_group, delete_group)]
