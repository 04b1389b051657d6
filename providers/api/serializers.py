from rest_framework import serializers

from providers.models import Provider


class ProviderSerializer(serializers.ModelSerializer):
    """A provider as the API shows it. ``credentials`` is write-only and never returned."""

    credentials = serializers.JSONField(
        write_only=True,
        required=False,
        allow_null=True,
        help_text="Secret settings, encrypted at rest and never returned. aws/focus: "
        "{aws_access_key_id, aws_secret_access_key}; gcp: {service_account_json}; "
        "azure: {tenant_id, client_id, client_secret}.",
    )
    config = serializers.JSONField(
        required=False,
        help_text="Non-secret settings. aws: {account_id?, role_arn?, external_id?, region?}; "
        "gcp: {billing_table, location?, project_id?}; azure: {subscription_id}; "
        "focus: {uri: 's3://bucket/prefix/' or a path inside the organization's import "
        "folder INFRAAUDIT_IMPORT_ROOT/<organization slug>/ (relative paths start there)}.",
    )
    has_credentials = serializers.BooleanField(read_only=True)

    class Meta:
        model = Provider
        fields = [
            "id",
            "name",
            "kind",
            "config",
            "credentials",
            "has_credentials",
            "is_active",
            "last_synced_at",
            "created_at",
        ]
        read_only_fields = ["id", "last_synced_at", "created_at"]
        # Name uniqueness per organization is checked by the service (the org is not a field).
        validators = []
