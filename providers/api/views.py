from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import viewsets

from accounts.permissions import request_org
from providers.api.filtersets import ProviderFilterSet
from providers.api.serializers import ProviderSerializer
from providers.models import Provider
from providers.services import provider_create, provider_delete, provider_update


@extend_schema_view(
    list=extend_schema(summary="List the organization's providers"),
    create=extend_schema(summary="Connect a provider (admin)"),
    retrieve=extend_schema(summary="Read a provider"),
    update=extend_schema(summary="Replace a provider's settings (admin)"),
    partial_update=extend_schema(summary="Change some of a provider's settings (admin)"),
    destroy=extend_schema(
        summary="Delete a provider and its cost records (admin)",
        description="Its cost records and anomalies go with it; past sync jobs keep their "
        "entry for it, with its id and name. A sync writing its records finishes first.",
    ),
)
class ProviderViewSet(viewsets.ModelViewSet):
    # The class queryset only tells the schema generator the model; requests are always
    # scoped to the caller's organization by get_queryset.
    queryset = Provider.objects.none()
    serializer_class = ProviderSerializer
    filterset_class = ProviderFilterSet

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Provider.objects.none()
        return (Provider.objects.filter(organization=request_org(self.request))
                .select_related("organization").order_by("name"))

    def perform_create(self, serializer):
        data = serializer.validated_data
        serializer.instance = provider_create(
            organization=request_org(self.request),
            name=data["name"],
            kind=data["kind"],
            config=data.get("config", {}),
            credentials=data.get("credentials"),
            is_active=data.get("is_active", True),
        )

    def perform_update(self, serializer):
        serializer.instance = provider_update(
            provider=serializer.instance, data=serializer.validated_data,
            partial=serializer.partial,
        )

    def perform_destroy(self, instance):
        provider_delete(provider=instance)
