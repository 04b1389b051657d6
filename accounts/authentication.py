"""``Authorization: Bearer <api key>`` authentication for the whole API."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from accounts.models import ApiKey
from accounts.services import key_matches, split_key

# last_used_at is refreshed at most this often, so reads do not each cost a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class BearerKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header:
            return None
        if header[0].decode(errors="replace").lower() != self.keyword.lower():
            raise exceptions.AuthenticationFailed(
                "unsupported authorization scheme; use 'Authorization: Bearer <api key>'"
            )
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("malformed Authorization header")
        try:
            raw_key = header[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("invalid API key") from None

        prefix = split_key(raw_key)
        api_key = (
            ApiKey.objects.select_related("membership__organization", "membership__user")
            .filter(prefix=prefix)
            .first()
            if prefix
            else None
        )
        if api_key is None or not key_matches(api_key, raw_key):
            raise exceptions.AuthenticationFailed("invalid API key")
        now = timezone.now()
        if api_key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("API key revoked")
        if not api_key.is_usable(now):
            raise exceptions.AuthenticationFailed("API key expired")
        if not api_key.membership.user.is_active:
            raise exceptions.AuthenticationFailed("user inactive")
        if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        return api_key.membership.user, api_key

    def authenticate_header(self, request):
        return self.keyword


class BearerKeyScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.BearerKeyAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API key (ia_...)"}
