from django.contrib import admin, messages
from django.utils import timezone

from accounts.admin_scoping import OrganizationScopedAdminMixin
from accounts.models import ApiKey, Membership, Organization
from accounts.services import api_key_create


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    # Also what the membership form's organization autocomplete searches.
    organization_lookup = "pk"
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["aws_external_id"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["role", "organization"]
    search_fields = ["user__username", "organization__name"]
    autocomplete_fields = ["user", "organization"]


@admin.register(ApiKey)
class ApiKeyAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    """Keys are created here with their key shown once (in the success message); only the
    prefix and the hash are stored."""

    organization_lookup = "membership__organization"

    list_display = ["prefix", "name", "membership", "created_at", "last_used_at", "expires_at",
                    "revoked_at"]
    list_filter = ["membership__organization", "membership__role"]
    search_fields = ["prefix", "name", "membership__user__username"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    fields = ["membership", "name", "expires_at", "prefix", "created_at", "last_used_at",
              "revoked_at"]
    actions = ["revoke"]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        api_key, raw_key = api_key_create(
            membership=obj.membership, name=obj.name, expires_at=obj.expires_at
        )
        obj.pk = api_key.pk
        obj.prefix = api_key.prefix
        self.message_user(
            request,
            f"New API key (copy it now, it is not shown again): {raw_key}",
            level=messages.WARNING,
        )

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} key(s).")
