import json

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.text import capfirst
from django.views.decorators.debug import sensitive_post_parameters
from rest_framework import serializers

from accounts.admin_scoping import OrganizationScopedAdminMixin
from providers.configs import validate_provider_settings
from providers.models import Provider
from providers.services import provider_delete


class WriteOnlyTextarea(forms.Textarea):
    """Never renders a value, so a form shown again after an error does not echo secrets."""

    def format_value(self, value):
        return None


class ProviderForm(forms.ModelForm):
    """Credentials are write-only: the field starts empty, and leaving it empty keeps the
    stored (encrypted) credentials."""

    new_credentials = forms.CharField(
        label="Credentials (JSON)",
        required=False,
        widget=WriteOnlyTextarea(attrs={"rows": 4, "autocomplete": "off"}),
        help_text="Write-only. Leave empty to keep the stored credentials; they are never shown.",
    )
    clear_credentials = forms.BooleanField(required=False)

    class Meta:
        model = Provider
        fields = ["organization", "name", "kind", "config", "is_active"]

    def clean(self):
        cleaned = super().clean()
        raw = cleaned.get("new_credentials")
        credentials = None
        if raw:
            try:
                credentials = json.loads(raw)
            except ValueError:
                raise ValidationError({"new_credentials": "must be a JSON object"}) from None
        # On change the kind and organization are read-only (not in the form): validate
        # against the stored ones. On add an organization not offered has its own error.
        kind = cleaned.get("kind") or self.instance.kind
        organization = cleaned.get("organization")
        if organization is None and self.instance.organization_id:
            organization = self.instance.organization
        if kind:
            try:
                config, credentials = validate_provider_settings(
                    kind=kind, config=cleaned.get("config") or {}, credentials=credentials,
                    # a local FOCUS path must be inside this organization's import folder
                    organization=organization,
                )
            except serializers.ValidationError as exc:
                raise ValidationError(json.dumps(exc.detail)) from None
            cleaned["config"] = config
        cleaned["validated_credentials"] = credentials
        return cleaned

    def save(self, commit=True):
        provider = super().save(commit=False)
        provider.config = self.cleaned_data["config"]
        if self.cleaned_data.get("clear_credentials"):
            provider.credentials = None
        elif self.cleaned_data.get("validated_credentials"):
            provider.credentials = self.cleaned_data["validated_credentials"]
        if commit:
            provider.save()
        return provider


def cascaded_relations(model: type[models.Model], path: tuple[str, ...] = ()):
    """(model, lookup from it to ``model``'s root) for every model a delete of ``model``
    cascades to, following CASCADE foreign keys down (a provider's cost records and
    anomalies, an anomaly's webhook deliveries). SET_NULL relations (the sync history)
    keep their rows and are not followed."""
    for rel in model._meta.related_objects:
        if rel.on_delete is models.CASCADE and not rel.many_to_many:
            lookup = (rel.field.name, *path)
            yield rel.related_model, "__".join(lookup)
            yield from cascaded_relations(rel.related_model, lookup)


def _count_per_provider(model: type[models.Model], lookup: str):
    """How many ``model`` rows each provider has, as a subquery (one COUNT per provider
    in the database, never the rows themselves)."""
    counted = (
        model._base_manager.filter(**{lookup: OuterRef("pk")})
        .order_by().values(lookup).annotate(n=Count("*")).values("n")
    )
    return Coalesce(Subquery(counted), 0)


def deleted_with_providers(pks: list[int]) -> dict[int, list[tuple[type[models.Model], int]]]:
    """For each provider, the rows of each model its delete removes with it, counted in
    one query."""
    relations = list(cascaded_relations(Provider))
    rows = (
        Provider._base_manager.filter(pk__in=pks)
        .annotate(**{f"n{i}": _count_per_provider(model, lookup)
                     for i, (model, lookup) in enumerate(relations)})
        .values("pk", *(f"n{i}" for i in range(len(relations))))
    )
    return {
        row["pk"]: [(model, row[f"n{i}"]) for i, (model, _) in enumerate(relations)]
        for row in rows
    }


def _quantity(count: int, opts) -> str:
    return f"{count:,} {opts.verbose_name if count == 1 else opts.verbose_name_plural}"


@admin.register(Provider)
class ProviderAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    form = ProviderForm
    list_display = ["name", "organization", "kind", "is_active", "has_credentials",
                    "last_synced_at", "coverage_start", "coverage_end"]
    list_filter = ["kind", "is_active", "organization"]
    search_fields = ["name"]
    readonly_fields = ["last_synced_at", "coverage_start", "coverage_end", "synced_spans",
                       "data_version", "created_at", "updated_at"]

    @method_decorator(sensitive_post_parameters("new_credentials"))
    def changeform_view(self, *args, **kwargs):
        # A 500 while saving must not print the secret in an error report.
        return super().changeform_view(*args, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        # A different kind is a different provider (as in the API): its kind never changes.
        # Its organization neither: the provider's cost records, jobs and anomalies carry
        # the organization too and would stay behind, visible to the old one.
        return [*self.readonly_fields, "organization", "kind"] if obj else self.readonly_fields

    @admin.display(boolean=True)
    def has_credentials(self, obj):
        return obj.has_credentials

    def get_deleted_objects(self, objs, request):
        """What deleting ``objs`` removes, as counts: Django's default collects and lists
        every related row (146 s for a provider with 585,000 records) and asks for the
        delete permission on each related model, which the read-only cost records and
        the anomalies (removed by re-detection only) never grant, so nobody could delete
        a provider with data. A provider's records, anomalies and their deliveries are
        part of it (``provider_delete``, as the API's delete): the delete permission on
        providers is the one that counts, checked here too for each provider. The
        objects come from ``get_queryset``, so they are the user's organizations' only."""
        providers = list(objs)
        counts = deleted_with_providers([p.pk for p in providers])
        deleted_objects: list = []
        model_count = {Provider._meta.verbose_name_plural: len(providers)}
        for provider in providers:
            url = reverse("admin:providers_provider_change", args=[quote(provider.pk)])
            deleted_objects.append(format_html(
                '{}: <a href="{}">{}</a>', capfirst(Provider._meta.verbose_name), url, provider
            ))
            related = [(model, n) for model, n in counts.get(provider.pk, []) if n]
            if related:
                deleted_objects.append([_quantity(n, model._meta) for model, n in related])
            for model, n in related:
                name = model._meta.verbose_name_plural
                model_count[name] = model_count.get(name, 0) + n
        perms_needed = {
            Provider._meta.verbose_name
            for provider in providers if not self.has_delete_permission(request, provider)
        }
        return deleted_objects, model_count, perms_needed, []

    def delete_model(self, request, obj):
        provider_delete(provider=obj)

    def delete_queryset(self, request, queryset):
        for provider in queryset:
            provider_delete(provider=provider)
