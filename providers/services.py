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


def provider_update(*, provider: Provider, data: dict) -> Provider:
    """Apply a (partial) update. Credentials are replaced only when given; ``{}`` or null
    clears them. The kind cannot change: a different kind is a different provider. The
    config is validated again as a whole, against the provider's own organization (a local
    FOCUS path must stay inside its import folder)."""
    if "kind" in data and data["kind"] != provider.kind:
        raise serializers.ValidationError({"kind": ["cannot be changed; create a new provider"]})
    config = data.get("config", provider.config)
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
