"""Tenancy and roles: a key acts for one organization; viewers read, admins also write."""

from __future__ import annotations

from rest_framework import permissions

from accounts.models import ApiKey, Organization


def request_org(request) -> Organization:
    return request.auth.membership.organization


class OrgRolePermission(permissions.BasePermission):
    message = "this action needs the admin role"

    def has_permission(self, request, view) -> bool:
        if not isinstance(request.auth, ApiKey):
            return False  # DRF turns this into 401 since no credentials were given
        if request.method in permissions.SAFE_METHODS:
            return True
        return request.auth.membership.is_admin
