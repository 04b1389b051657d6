"""Writes of providers: create, update, delete with validated config and credentials."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from rest_framework import serializers

from accounts.models import Organization
from providers.configs import validate_provider_settings
from providers.models import Provider


def _save(provider: Provider) -> Provider:
    try:
        with transaction.atomic():
            provider.save()
    except IntegrityError:
        raise serializers.ValidationError(
            {"name": ["a provider with this name already exists in the organization"]}
        ) from None
    return provider


def provider_create(
    *,
    organization: Organization,
    name: str,
    kind: str,
    config: dict,
    credentials: dict | None = None,
    is_active: bool = True,
) -> Provider:
    config, credentials = validate_provider_settings(
        kind=kind, config=config, credentials=credentials, organization=organization
    )
    provider = Provider(
        organization=organization, name=name, kind=kind, config=config, is_active=is_active
    )
    provider.credentials = credentials
    return _save(provider)


def provider_update(*, provider: Provider, data: dict, partial: bool = False) -> Provider:
    """Apply an update. Credentials are replaced only when given; ``{}`` or null clears
    them. The kind cannot change: a different kind is a different provider. A partial
    update (PATCH) merges the config keys it gives into the stored config, a key given as
    null removing it (JSON merge patch): ``{"config": {"region": "eu-west-1"}}`` must not
    silently drop a FOCUS provider's ``uri`` or an AWS role. A full update (PUT) replaces
    the config. Either way the result is validated again as a whole, against the
    provider's own organization (a local FOCUS path must stay inside its import folder)."""
    if "kind" in data and data["kind"] != provider.kind:
        raise serializers.ValidationError({"kind": ["cannot be changed; create a new provider"]})
    config = data.get("config", provider.config)
    if partial and "config" in data and isinstance(config, dict):
        config = {
            key: value for key, value in {**provider.config, **config}.items() if value is not None
        }
    credentials_given = "credentials" in data
    config, credentials = validate_provider_settings(
        kind=provider.kind,
        config=config,
        credentials=data.get("credentials") if credentials_given else None,
        organization=provider.organization,
    )
    provider.config = config
    if credentials_given:
        provider.credentials = credentials
    for field in ("name", "is_active"):
        if field in data:
            setattr(provider, field, data[field])
    return _save(provider)


def provider_delete(*, provider: Provider) -> None:
    """Delete a provider with its cost records and anomalies; past sync jobs keep their
    entries (``SyncJobProvider`` holds the provider's name). The provider's row is
    locked first: a sync writing its records, and anomaly detection, hold that lock,
    and a delete that ran between their writes failed on the records they had just
    added (an IntegrityError, a 500 that left the provider in place). Now it waits for
    them, then deletes what they wrote too."""
    with transaction.atomic():
        locked = Provider.objects.select_for_update().filter(pk=provider.pk).first()
        if locked is not None:
            locked.delete()
