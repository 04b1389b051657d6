"""Validation of each provider kind's ``config`` and ``credentials`` (no cloud SDK imported).

One serializer pair per kind; ``validate_provider_settings`` picks them by kind.

Local FOCUS folders: ``settings.IMPORT_ROOT`` is shared by every organization, so each one
reads only its own folder below it, ``IMPORT_ROOT/<organization slug>/``
(``organization_import_folder``). A local ``config.uri`` must resolve inside that folder;
the FOCUS adapter checks it again at read time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from rest_framework import serializers

from infraaudit.fields import PatternField, TextField
from providers.adapters.base import GOOGLE_TOKEN_URI

if TYPE_CHECKING:
    from accounts.models import Organization

_AWS_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_AWS_ACCOUNT = re.compile(r"^\d{12}$")
_GCP_TABLE = re.compile(r"^[a-z][a-z0-9-]{4,61}[a-z0-9]\.[A-Za-z0-9_]{1,1024}\.[A-Za-z0-9_$-]{1,1024}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
# What azure-identity accepts as a tenant: its GUID or one of its domains.
_AZURE_TENANT = re.compile(r"^[A-Za-z0-9.-]{1,64}$")
_S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
# Anything shaped like a URL: never a local path, whatever the scheme.
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# What a SlugField accepts: one plain path segment, never '.', '..' or a separator.
_SLUG = re.compile(r"^[-a-zA-Z0-9_]+$")


class _Strict(serializers.Serializer):
    """Rejects keys it does not know, so a typo in a config is an error, not a silent no-op."""

    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError({key: ["unknown key"] for key in sorted(unknown)})
        return attrs


class AwsConfig(_Strict):
    account_id = PatternField(_AWS_ACCOUNT, required=False)
    role_arn = PatternField(_AWS_ROLE_ARN, required=False)
    external_id = TextField(max_length=1224, required=False)
    region = TextField(max_length=32, default="us-east-1")

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if attrs.get("external_id") and not attrs.get("role_arn"):
            raise serializers.ValidationError({"external_id": ["needs role_arn"]})
        return attrs


class AwsCredentials(_Strict):
    aws_access_key_id = TextField(max_length=128)
    aws_secret_access_key = TextField(max_length=256)


class GcpConfig(_Strict):
    billing_table = PatternField(
        _GCP_TABLE,
        error_messages={"invalid": "must be project.dataset.table of the billing export"},
    )
    location = TextField(max_length=64, default="US")
    project_id = TextField(max_length=64, required=False)


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
        # The key file names where its token is fetched: any other address made the
        # worker POST a signed assertion there (to an internal service, or a port scan).
        for key, google in (("token_uri", GOOGLE_TOKEN_URI), ("universe_domain", "googleapis.com")):
            if value.get(key, google) != google:
                raise serializers.ValidationError(f"{key} must be Google's ({google})")
        return value


class AzureConfig(_Strict):
    subscription_id = PatternField(
        _UUID, error_messages={"invalid": "must be a subscription id (a GUID)"}
    )


class AzureCredentials(_Strict):
    tenant_id = PatternField(
        _AZURE_TENANT,
        error_messages={"invalid": "must be the directory (tenant) id, a GUID, or its domain "
                                   "(contoso.onmicrosoft.com)"},
    )
    client_id = TextField(max_length=64)
    client_secret = TextField(max_length=512)


class FocusConfig(_Strict):
    """``uri``: ``s3://bucket/prefix/`` or a local path inside the import folder of the
    organization in ``context["organization"]``; without one, no local path is accepted."""

    uri = TextField(max_length=1024, required=False, allow_blank=True)
    region = TextField(max_length=32, default="us-east-1")

    def validate_uri(self, value: str) -> str:
        if not value:
            return value
        organization = self.context.get("organization")
        scheme = unsupported_scheme(value)
        if scheme is not None:
            raise serializers.ValidationError(
                f"unsupported scheme {scheme!r}: use s3://bucket/prefix/ or a path inside "
                f"{_folder_hint(organization)}"
            )
        if value.startswith("s3://"):
            if not _S3_URI.match(value):
                raise serializers.ValidationError("must be s3://bucket/prefix/")
            return value
        if organization is None:
            raise serializers.ValidationError(
                "a local path is only accepted for a provider of a known organization"
            )
        return str(resolve_import_path(value, organization_import_folder(organization.slug)))


def unsupported_scheme(value: str) -> str | None:
    """The scheme of a URL-shaped ``value`` we do not read (all but lower-case ``s3``), else
    None. Such a value must be refused, not taken for a relative path: ``gs://b/x`` would
    otherwise become the local folder ``gs:/b/x`` and sync as "does not exist"."""
    match = _URL_SCHEME.match(value)
    if match is None or match.group(1) == "s3":
        return None
    return match.group(1)


def _folder_hint(organization: Organization | None) -> str:
    if organization is None:
        return "the organization's import folder (IMPORT_ROOT/<organization slug>)"
    try:
        return f"this organization's import folder {organization_import_folder(organization.slug)}"
    except serializers.ValidationError:
        return "the organization's import folder (IMPORT_ROOT/<organization slug>)"


class FocusCredentials(_Strict):
    aws_access_key_id = TextField(max_length=128)
    aws_secret_access_key = TextField(max_length=256)


def organization_import_folder(slug: str) -> Path:
    """``IMPORT_ROOT/<slug>``, resolved: the only local folder the FOCUS providers of the
    organization with this slug may read. The import root itself is shared by every
    organization, so it is never an organization's folder (nor is a folder the root is
    inside, should an operator symlink one there)."""
    if not _SLUG.match(slug or ""):
        raise serializers.ValidationError(
            f"the organization's slug {slug!r} cannot name an import folder"
        )
    root = Path(settings.IMPORT_ROOT).resolve()
    folder = (root / slug).resolve()
    if folder == root or folder in root.parents:
        raise serializers.ValidationError(
            f"the import folder of {slug!r} resolves to {folder}, which holds the whole import "
            "root; make it a folder of its own"
        )
    return folder


def resolve_import_path(value: str, folder: Path) -> Path:
    """A local export path (absolute, or relative to ``folder``), resolved with symlinks
    followed, and accepted only inside ``folder``: the organization's import folder, so a
    symlink or an absolute path cannot reach another organization's exports."""
    raw = Path(value)
    if ".." in raw.parts:
        raise serializers.ValidationError("must not contain '..'")
    candidate = raw if raw.is_absolute() else folder / raw
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise serializers.ValidationError("cannot be resolved (a symlink loop?)") from None
    if resolved != folder and folder not in resolved.parents:
        raise serializers.ValidationError(
            f"must be inside this organization's import folder {folder}"
        )
    return resolved


KIND_SETTINGS = {
    "aws": (AwsConfig, AwsCredentials),
    "gcp": (GcpConfig, GcpCredentials),
    "azure": (AzureConfig, AzureCredentials),
    "focus": (FocusConfig, FocusCredentials),
}


def validate_provider_settings(
    *, kind: str, config: dict, credentials: dict | None,
    organization: Organization | None = None,
) -> tuple[dict, dict | None]:
    """Validated (config, credentials) for ``kind``; raises ValidationError naming the keys.
    ``organization`` is the provider's: a local FOCUS path must be inside its import folder,
    and without it no local path is accepted."""
    config_cls, credentials_cls = KIND_SETTINGS[kind]
    errors = {}
    config_ser = config_cls(
        data=config if isinstance(config, dict) else {}, context={"organization": organization}
    )
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
