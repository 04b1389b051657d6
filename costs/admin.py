from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from accounts.admin_scoping import OrganizationScopedAdminMixin
from costs.models import CostRecord, SyncJob, SyncJobProvider


class ReadOnlyAdminMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(CostRecord)
class CostRecordAdmin(OrganizationScopedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Cost records are written only by syncs; the admin reads and filters them."""

    list_display = ["day", "provider", "service", "region", "account", "billed_amount",
                    "effective_amount", "currency", "billing_period"]
    list_filter = ["provider__organization", "provider", "currency", "region",
                   ("day", admin.DateFieldListFilter), "billing_period"]
    search_fields = ["service", "region", "account"]
    date_hierarchy = "day"
    list_select_related = ["provider"]
    show_full_result_count = False


class SyncJobProviderInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = SyncJobProvider
    extra = 0
    fields = ["provider_entry", "status", "rows_read", "records_written", "date_from",
              "date_to", "changed", "error", "runs", "started_at", "finished_at"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("provider")

    @admin.display(description="provider")
    def provider_entry(self, obj):
        # A deleted provider's entry stays in the job's history, under the name it had.
        if obj.provider is None:
            return f"{obj.provider_name} (deleted provider #{obj.provider_pk})"
        url = reverse("admin:providers_provider_change", args=[obj.provider_id])
        return format_html('<a href="{}">{}</a>', url, obj.provider.name)


@admin.register(SyncJob)
class SyncJobAdmin(OrganizationScopedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "organization", "kind", "status", "requested_by", "created_at",
                    "finished_at"]
    list_filter = ["status", "kind", "organization"]
    readonly_fields = ["organization", "kind", "status", "requested_by", "date_from", "date_to",
                       "error", "created_at", "started_at", "finished_at"]
    inlines = [SyncJobProviderInline]


# The finance review desk (anomalies, alert webhooks) registers itself.
from costs import admin_review  # noqa: E402,F401
