"""Tenancy in the admin: a staff user who is not a superuser sees, picks and changes only
the objects of organizations they are a member of (any role), as in the API. Superusers
are the operators and keep seeing everything."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.utils import get_fields_from_path
from django.core.exceptions import FieldDoesNotExist
from django.db.models import Model, QuerySet
from django.http import Http404

from accounts.models import Membership, Organization


def organization_lookup_of(model: type[Model]) -> str | None:
    """The lookup from ``model`` to its organization, or None for data of no tenant (users,
    groups): an organization is its own, every tenant model has an ``organization`` key."""
    if model is Organization:
        return "pk"
    try:
        field = model._meta.get_field("organization")
    except FieldDoesNotExist:
        return None
    return "organization" if field.is_relation and field.related_model is Organization else None


def member_organizations_only(queryset: QuerySet, user, lookup: str) -> QuerySet:
    """``queryset`` limited to the organizations ``user`` is a member of (a subquery, so
    one query however many organizations); unchanged for superusers."""
    if user.is_superuser:
        return queryset
    member_of = Membership.objects.filter(user_id=user.pk).values("organization_id")
    return queryset.filter(**{f"{lookup}__in": member_of})


class MemberOrganizationsListFilter(admin.RelatedFieldListFilter):
    """A related-object filter that offers only the user's organizations' objects, so the
    sidebar does not list other tenants' organizations or providers by name."""

    def field_choices(self, field, request, model_admin):
        related = field.related_model
        allowed = member_organizations_only(
            related._default_manager.all(), request.user, organization_lookup_of(related)
        )
        ordering = self.field_admin_ordering(field, request, model_admin)
        return field.get_choices(
            include_blank=False, limit_choices_to={"pk__in": allowed.values("pk")},
            ordering=ordering,
        )


class OrganizationScopedAdminMixin:
    """For ModelAdmins of tenant data. ``organization_lookup`` leads from the model to its
    organization. Lists, object pages (history and custom views too, through
    ``get_queryset``/``get_object``), actions, foreign-key choices and list filters are
    limited to the user's organizations; another organization's object is a 404, exactly
    like one that does not exist, so its existence is not revealed either."""

    organization_lookup = "organization"

    def get_queryset(self, request):
        return member_organizations_only(
            super().get_queryset(request), request.user, self.organization_lookup
        )

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        lookup = organization_lookup_of(db_field.related_model)
        if lookup and "queryset" not in kwargs and not request.user.is_superuser:
            queryset = self.get_field_queryset(None, db_field, request)
            if queryset is None:
                queryset = db_field.related_model._default_manager.all()
            kwargs["queryset"] = member_organizations_only(queryset, request.user, lookup)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_list_filter(self, request):
        list_filter = super().get_list_filter(request)
        if request.user.is_superuser:
            return list_filter
        return [self._scoped_list_filter(entry) for entry in list_filter]

    def _scoped_list_filter(self, entry):
        if not isinstance(entry, str):
            return entry  # an explicit filter class: its author chose the choices
        field = get_fields_from_path(self.model, entry)[-1]
        if field.is_relation and organization_lookup_of(field.related_model):
            return (entry, MemberOrganizationsListFilter)
        return entry

    def _get_obj_does_not_exist_redirect(self, request, opts, object_id):
        # Django redirects to the index with "doesn't exist"; for a scoped user the object
        # may well exist in another organization, and the API answers 404 there too.
        if request.user.is_superuser:
            return super()._get_obj_does_not_exist_redirect(request, opts, object_id)
        raise Http404(f"{opts.verbose_name} not found")
