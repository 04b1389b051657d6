"""Validation of each provider kind's ``config`` and ``credentials`` (no cloud SDK imported).

One serializer pair per kind; ``validate_provider_settings`` picks them by kind.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from django.conf import settings
from rest_framework import serializers

_AWS_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_AWS_ACCOUNT = re.compile(r"^\d{12}$")
_GCP_TABLE = re.compile(r"^[a-z][a-z0-9-]{4,61}[a-z0-9]\.[A-Za-z0-9_]{1,1024}\.[A-Za-z0-9_$-]{1,1024}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


class _Strict(serializers.Serializer):
    """Rejects keys it does not know, so a typo in a config is an error, not a silent no-op."""

    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError({key: ["unknown key"] for key in sorted(unknown)})
        return attrs


class AwsConfig(_Strict):
    account_id = serializers.RegexField(_AWS_ACCOUNT, required=False)
    role_arn = serializers.RegexField(_AWS_ROLE_ARN, required=False)
    external_id = serializers.CharField(max_length=1224, required=False)
    region = serializers.CharField(max_length=32, default="us-east-1")

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if attrs.get("external_id") and not attrs.get("role_arn"):
            raise serializers.ValidationError({"external_id": ["needs role_arn"]})
        return attrs


class AwsCredentials(_Strict):
    aws_access_key_id = serializers.CharField(max_length=128)
    aws_secret_access_key = serializers.CharField(max_length=256)


class GcpConfig(_Strict):
    billing_table = serializers.RegexField(
        _GCP_TABLE,
        error_messages={"invalid": "must be project.dataset.table of the billing export"},
    )
    location = serializers.CharField(max_length=64, default="US")
    project_id = serializers.CharField(max_length=64, required=False)


class GcpCredentials(_Strict):
    service_account_json = serializers.JSONField()

    def validate_service_account_json(self, value):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise serializers.ValidationError("must be the service account key JSON") from None
        if not isinstance(value, dict) or value.get("type") != "service_account":
            raise serializers.ValidationError("must be a service account key (type service_account)")
        for key in ("client_email", "private_key"):
            if not value.get(key):
                raise serializers.ValidationError(f"missing {key}")
        return value


class AzureConfig(_Strict):
    subscription_id = serializers.RegexField(
        _UUID, error_messages={"invalid": "must be a subscription id (a GUID)"}
    )


class AzureCredentials(_Strict):
    tenant_id = serializers.CharField(max_length=64)
    client_id = serializers.CharField(max_length=64)
    client_secret = serializers.CharField(max_length=512)


class FocusConfig(_Strict):
    uri = serializers.CharField(max_length=1024, required=False, allow_blank=True)
    region = serializers.CharField(max_length=32, default="us-east-1")

    def validate_uri(self, value: str) -> str:
        if not value or value.startswith("s3://"):
            if value and not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", value):
                raise serializers.ValidationError("must be s3://bucket/prefix/")
            return value
        return str(resolve_import_path(value))


class FocusCredentials(_Strict):
    aws_access_key_id = serializers.CharField(max_length=128)
    aws_secret_access_key = serializers.CharField(max_length=256)


def resolve_import_path(value: str) -> Path:
    """A local export path, accepted only inside INFRAAUDIT_IMPORT_ROOT (symlinks resolved)."""
    root = Path(settings.IMPORT_ROOT).resolve()
    raw = Path(value)
    if ".." in raw.parts:
        raise serializers.ValidationError("must not contain '..'")
    candidate = raw if raw.is_absolute() else root / raw
    resolved = candidate.resolve()
    if resolved != root and root not in resolved.parents:
        raise serializers.ValidationError(f"must be inside the import root {root}")
    return resolved


KIND_SETTINGS = {
    "aws": (AwsConfig, AwsCredentials),
    "gcp": (GcpConfig, GcpCredentials),
    "azure": (AzureConfig, AzureCredentials),
    "focus": (FocusConfig, FocusCredentials),
}


def validate_provider_settings(
    *, kind: str, config: dict, credentials: dict | None
) -> tuple[dict, dict | None]:
    """Validated (config, credentials) for ``kind``; raises ValidationError naming the keys."""
    config_cls, credentials_cls = KIND_SETTINGS[kind]
    errors = {}
    config_ser = config_cls(data=config if isinstance(config, dict) else {})
    if not isinstance(config, dict):
        errors["config"] = ["must be an object"]
    elif not config_ser.is_valid():
        errors["config"] = config_ser.errors
    clean_credentials = None
    if credentials:
        credentials_ser = credentials_cls(data=credentials if isinstance(credentials, dict) else {})
        if not isinstance(credentials, dict):
            errors["credentials"] = ["must be an object"]
        elif not credentials_ser.is_valid():
            errors["credentials"] = credentials_ser.errors
        else:
            clean_credentials = dict(credentials_ser.validated_data)
    if errors:
        raise serializers.ValidationError(errors)
    return dict(config_ser.validated_data), clean_credentials
