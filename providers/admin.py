import json

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
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


@admin.register(Provider)
class ProviderAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    form = ProviderForm
    list_display = ["name", "organization", "kind", "is_active", "has_credentials",
                    "last_synced_at", "coverage_start", "coverage_end"]
    list_filter = ["kind", "is_active", "organization"]
    search_fields = ["name"]
    readonly_fields = ["last_synced_at", "coverage_start", "coverage_end", "data_version",
                       "created_at", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        # A different kind is a different provider (as in the API): its kind never changes.
        # Its organization neither: the provider's cost records, jobs and anomalies carry
        # the organization too and would stay behind, visible to the old one.
        return [*self.readonly_fields, "organization", "kind"] if obj else self.readonly_fields

    @admin.display(boolean=True)
    def has_credentials(self, obj):
        return obj.has_credentials

    def delete_model(self, request, obj):
        provider_delete(provider=obj)

    def delete_queryset(self, request, queryset):
        for provider in queryset:
            provider_delete(provider=provider)
