"""Writes of the accounts app: organizations, memberships, API keys."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.text import slugify

from accounts.models import ApiKey, Membership, Organization

KEY_PREFIX = "ia_"
_PREFIX = re.compile(r"[0-9a-f]{1,16}")  # api_key_create issues token_hex(4)


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def split_key(raw_key: str) -> str | None:
    """The lookup prefix of a key ``ia_<prefix>_<secret>``, or None if it is not of that form."""
    if not raw_key.startswith(KEY_PREFIX):
        return None
    parts = raw_key[len(KEY_PREFIX) :].split("_", 1)
    if len(parts) != 2 or not parts[1] or not _PREFIX.fullmatch(parts[0]):
        return None  # the prefix is looked up in the database: only what we issue
    return parts[0]


def key_matches(api_key: ApiKey, raw_key: str) -> bool:
    return hmac.compare_digest(api_key.key_hash, hash_key(raw_key))


def api_key_create(
    *, membership: Membership, name: str = "", expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create a key; return it with the raw key, which is never stored and shown only now."""
    prefix = secrets.token_hex(4)
    raw_key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(
        membership=membership,
        name=name,
        prefix=prefix,
        key_hash=hash_key(raw_key),
        expires_at=expires_at,
    )
    return api_key, raw_key


@transaction.atomic
def membership_ensure(*, org_name: str, username: str, role: str | None = None) -> Membership:
    """The membership of ``username`` in the organization named exactly ``org_name``,
    creating organization, user and membership (as ``role``, admin by default) if missing.
    An existing member's role changes only when ``role`` is given.

    The organization is found by its name only: two names with the same slug ("Acme Inc"
    and "Acme, Inc.", or any two names in a script slugify drops) are two organizations,
    each with a slug of its own. Raises ValidationError naming a bad name."""
    org_name, username = org_name.strip(), username.strip()
    _check_names(org_name, username)
    organization = Organization.objects.filter(name=org_name).first()
    if organization is None:
        base = (slugify(org_name) or "org")[:SLUG_BASE_LENGTH].strip("-") or "org"
        organization = Organization.objects.create(name=org_name, slug=_unique_slug(base))
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=username)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    membership, created = Membership.objects.get_or_create(
        organization=organization, user=user, defaults={"role": role or Membership.Role.ADMIN}
    )
    if not created and role and membership.role != role:
        membership.role = role
        membership.save(update_fields=["role"])
    return membership


# Room for "-<n>" within the slug's 100 characters.
SLUG_BASE_LENGTH = 90


def _check_names(org_name: str, username: str) -> None:
    name_limit = Organization._meta.get_field("name").max_length
    user_field = get_user_model()._meta.get_field("username")
    errors = {}
    if not org_name or len(org_name) > name_limit:
        errors["org"] = f"the organization name must be 1 to {name_limit} characters"
    if not username or len(username) > user_field.max_length:
        errors["user"] = f"the username must be 1 to {user_field.max_length} characters"
    else:
        try:
            for validator in user_field.validators:
                validator(username)
        except ValidationError as exc:
            errors["user"] = " ".join(exc.messages)
    if errors:
        raise ValidationError(errors)


def _unique_slug(base: str) -> str:
    slug, n = base, 1
    while Organization.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug
