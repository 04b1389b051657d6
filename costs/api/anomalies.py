"""GET /costs/anomalies and POST /costs/anomalies/{id}/dismiss."""

from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import request_org
from costs.api.params import (
    ProviderScopedQuery,
    days_field,
    parse_query,
    request_object,
    scoped_provider,
)
from costs.models import Anomaly
from costs.money import to_cents
from costs.selectors import anomaly_list
from costs.services.anomalies import anomaly_dismiss, anomaly_review_logged
from infraaudit.fields import TextField
from infraaudit.pagination import Pagination


class AnomalyQuery(ProviderScopedQuery):
    days = days_field("Look-back: anomalies of the last `days` complete days (1..3650).")
    status = serializers.ChoiceField(
        [s.value for s in Anomaly.Status], required=False, help_text="Only active or dismissed."
    )


class _Money(serializers.DecimalField):
    def __init__(self, **kwargs):
        super().__init__(max_digits=30, decimal_places=2, **kwargs)

    def to_representation(self, value):
        return float(to_cents(value))


class TopServiceSerializer(serializers.Serializer):
    service = serializers.CharField()
    amount = serializers.FloatField(help_text="The service's actual spend that day.")
    vs_expected = serializers.FloatField(help_text="How far it was above its own expectation.")


class AnomalySerializer(serializers.ModelSerializer):
    provider_name = serializers.CharField(source="provider.name")
    service = serializers.SerializerMethodField(help_text="null for the provider's total.")
    actual_amount = _Money()
    expected_amount = _Money()
    expected_lower = _Money()
    expected_upper = _Money()
    impact_amount = serializers.SerializerMethodField(
        help_text="actual_amount - expected_amount (of the amounts shown, in cents)"
    )
    deviation_percent = serializers.FloatField(
        help_text="100 * (actual - expected) / expected, one decimal."
    )
    top_services = TopServiceSerializer(
        many=True, help_text="Provider anomalies: the services most above their expectation."
    )
    dismissed_by = serializers.SerializerMethodField()
    dismiss_reason = serializers.SerializerMethodField()

    class Meta:
        model = Anomaly
        fields = [
            "id", "provider_id", "provider_name", "date", "service", "actual_amount",
            "expected_amount", "expected_lower", "expected_upper", "deviation_percent",
            "impact_amount", "currency", "severity", "top_services", "status", "detected_at",
            "dismissed_at", "dismissed_by", "dismiss_reason",
        ]

    def get_impact_amount(self, obj) -> float:
        # Of the rounded amounts, so that the three numbers shown add up (1234.564 and
        # 241.264 showed 1234.56 - 241.26 = 993.31).
        return float(to_cents(obj.actual_amount) - to_cents(obj.expected_amount))

    def get_service(self, obj) -> str | None:
        return obj.service or None

    def get_dismissed_by(self, obj) -> str | None:
        return obj.dismissed_by.get_username() if obj.dismissed_by else None

    def get_dismiss_reason(self, obj) -> str | None:
        return obj.dismiss_reason or None


class DismissRequest(serializers.Serializer):
    reason = TextField(min_length=1, max_length=500, help_text="Why (1..500 characters).")


AnomalyPage = inline_serializer(
    "AnomalyList",
    {
        "data": AnomalySerializer(many=True),
        "count": serializers.IntegerField(help_text="Anomalies matching the query."),
        "next": serializers.URLField(allow_null=True, help_text="The next page, if any."),
        "previous": serializers.URLField(
            allow_null=True, help_text="The previous page, if any."
        ),
    },
)


class AnomalyListView(APIView):
    @extend_schema(
        summary="Billing days above their expected range",
        description="The organization's anomalies (provider totals with `service: null`, and "
        "single services), newest first, larger impact first within a day. Paginated with "
        "`page` / `page_size` (default 100, at most 1000).",
        parameters=[
            AnomalyQuery,
            OpenApiParameter("page", int, description="Page number (default 1)."),
            OpenApiParameter("page_size", int, description="Items per page (default 100, at most 1000)."),
        ],
        responses={200: AnomalyPage},
    )
    def get(self, request):
        params = parse_query(AnomalyQuery, request)
        qs = anomaly_list(
            organization=request_org(request),
            provider=scoped_provider(request, params),
            days=params["days"],
            status=params.get("status"),
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        return Response(
            {
                "data": AnomalySerializer(page, many=True).data,
                "count": paginator.page.paginator.count,
                "next": paginator.get_next_link(),
                "previous": paginator.get_previous_link(),
            }
        )


class AnomalyDismissView(APIView):
    @extend_schema(
        summary="Dismiss an anomaly with a reason (admin)",
        description="Records the reason, who and when. Already dismissed: 409 and the "
        "anomaly is unchanged. A dismissed anomaly stays dismissed when it is re-detected.",
        request=DismissRequest,
        responses={
            200: AnomalySerializer,
            400: OpenApiResponse(
                description="body not a JSON object; reason missing, empty or longer than 500"
            ),
            403: OpenApiResponse(description="viewer role"),
            404: OpenApiResponse(description="no such anomaly in the organization"),
            409: OpenApiResponse(description="already dismissed"),
        },
    )
    def post(self, request, anomaly_id: int):
        anomaly = get_object_or_404(Anomaly, pk=anomaly_id, organization=request_org(request))
        body = DismissRequest(data=request_object(request))
        body.is_valid(raise_exception=True)
        with transaction.atomic():  # the dismissal and its History entry, both or neither
            anomaly = anomaly_dismiss(
                anomaly=anomaly, user=request.user, reason=body.validated_data["reason"]
            )
            anomaly_review_logged(anomaly=anomaly, user=request.user,
                                  message=f'Dismissed through the API: "{anomaly.dismiss_reason}"')
        anomaly = Anomaly.objects.select_related("provider", "dismissed_by").get(pk=anomaly.pk)
        return Response(AnomalySerializer(anomaly).data)
