"""A connected billing source of an organization."""

from __future__ import annotations

from django.db import models

from providers.crypto import decrypt_json, encrypt_json


class Provider(models.Model):
    """One billing source: an AWS account, a GCP billing export, an Azure subscription or a
    FOCUS export location. ``config`` holds non-secret settings (validated per kind in
    ``providers.configs``); credentials are encrypted at rest and never leave the server."""

    class Kind(models.TextChoices):
        AWS = "aws", "AWS"
        GCP = "gcp", "Google Cloud"
        AZURE = "azure", "Azure"
        FOCUS = "focus", "FOCUS export"

    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="providers"
    )
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    config = models.JSONField(default=dict, blank=True)
    credentials_encrypted = models.TextField(blank=True, default="", editable=False)
    is_active = models.BooleanField(default=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    # The days for which syncs have delivered data: inside it a day without records is
    # a zero-spend day, outside it the data is missing.
    coverage_start = models.DateField(null=True, blank=True)
    coverage_end = models.DateField(null=True, blank=True)
    # Bumped whenever a sync changes this provider's records; caches key on it.
    data_version = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"], name="provider_unique_org_name"
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def credentials(self) -> dict:
        return decrypt_json(self.credentials_encrypted)

    @credentials.setter
    def credentials(self, value: dict | None) -> None:
        self.credentials_encrypted = encrypt_json(value) if value else ""

    @property
    def has_credentials(self) -> bool:
        return bool(self.credentials_encrypted)
