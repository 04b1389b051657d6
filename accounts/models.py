"""Organizations, their members (with a role) and the members' API keys."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone


def new_external_id() -> str:
    return f"infraaudit-{secrets.token_hex(16)}"


class Organization(models.Model):
    """A tenant. Every provider, cost record, job and anomaly belongs to exactly one.

    ``aws_external_id`` is the ExternalId the server gives when it assumes an AWS role of
    this organization with its own identity: generated here, never chosen by a client, so
    one organization cannot name another's role and its external id and have the server
    read that account for it (the "confused deputy" of AWS's cross-account guidance)."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    aws_external_id = models.CharField(
        max_length=64, unique=True, default=new_external_id, editable=False,
        help_text="The sts:ExternalId an AWS role's trust policy requires of this server.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A user's role in one organization: viewers read, admins also write."""

    class Role(models.TextChoices):
        ADMIN = "admin", "Admin"
        VIEWER = "viewer", "Viewer"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "user"], name="membership_unique_org_user"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.organization} ({self.role})"

    @property
    def is_admin(self) -> bool:
        return self.role == self.Role.ADMIN


class ApiKey(models.Model):
    """A Bearer key of one membership. Only its SHA-256 hash is stored; the key is shown once."""

    membership = models.ForeignKey(Membership, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or self.membership.user})"

    @property
    def organization(self) -> Organization:
        return self.membership.organization

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now
