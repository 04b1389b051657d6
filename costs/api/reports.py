"""GET /costs/overview and GET /costs/trend."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import request_org
from costs.api.params import (
    ProviderScopedQuery,
    days_field,
    money_field,
    parse_query,
    scoped_provider,
)
from costs.money import round_parts, to_cents
from costs.selectors import cost_overview, cost_trend

OverviewResponse = inline_serializer(
    "CostOverview",
    {
        "current_month": inline_serializer(
            "CostOverviewCurrentMonth",
            {
                "amount": money_field(),
                "currency": serializers.CharField(),
                "from": serializers.DateField(),
                "to": serializers.DateField(),
            },
        ),
        "last_month": inline_serializer(
            "CostOverviewLastMonth", {"amount": money_field(), "currency": serializers.CharField()}
        ),
        "mom_change_percent": serializers.FloatField(allow_null=True),
        "by_provider": inline_serializer(
            "CostOverviewProvider",
            {
                "provider_id": serializers.IntegerField(),
                "name": serializers.CharField(),
                "amount": money_field(),
            },
            many=True,
        ),
        "currency": serializers.CharField(),
    },
)


class OverviewView(APIView):
    @extend_schema(
        summary="Month to date, last month and month-over-month change",
        description="Billed spend of the organization, or of the provider `provider_id` "
        "(then `by_provider` holds that provider only). `mom_change_percent` compares month "
        "to date with the same days of last month (null when that is zero). 422 when the "
        "scope is billed in several currencies: an organization whose providers bill in "
        "different currencies gets each provider's overview with `provider_id`.",
        parameters=[ProviderScopedQuery],
        responses={200: OverviewResponse},
    )
    def get(self, request):
        params = parse_query(ProviderScopedQuery, request)
        overview = cost_overview(
            organization=request_org(request), provider=scoped_provider(request, params)
        )
        currency = overview.currency
        return Response(
            {
                "current_month": {
                    "amount": to_cents(overview.current_amount),
                    "currency": currency,
                    "from": overview.month_start,
                    "to": overview.today,
                },
                "last_month": {"amount": to_cents(overview.last_month_amount), "currency": currency},
                "mom_change_percent": (
                    float(overview.mom_change_percent)
                    if overview.mom_change_percent is not None
                    else None
                ),
                "by_provider": [
                    {"provider_id": p.id, "name": p.name, "amount": to_cents(amount)}
                    for p, amount in overview.by_provider
                ],
                "currency": currency,
            }
        )


class TrendQuery(ProviderScopedQuery):
    days = days_field("Window ending today (1..3650).")
    granularity = serializers.ChoiceField(["day", "week", "month"], default="day")
    group_by = serializers.ChoiceField(["provider", "service", "region"], default="provider")


TrendResponse = inline_serializer(
    "CostTrend",
    {
        "data": inline_serializer(
            "CostTrendBucket",
            {
                "date": serializers.DateField(help_text="Bucket start (Monday for weeks, 1st for months)."),
                "amount": money_field(),
                "breakdown": serializers.DictField(child=money_field()),
            },
            many=True,
        ),
        "currency": serializers.CharField(),
    },
)


class TrendView(APIView):
    @extend_schema(
        summary="Spend over time in day, week or month buckets",
        parameters=[TrendQuery],
        responses={200: TrendResponse},
    )
    def get(self, request):
        params = parse_query(TrendQuery, request)
        provider = scoped_provider(request, params)
        trend = cost_trend(
            organization=request_org(request),
            provider=provider,
            days=params["days"],
            granularity=params["granularity"],
            group_by=params["group_by"],
        )
        data = []
        for bucket in trend.buckets:
            amount, breakdown = round_parts(bucket.breakdown)
            data.append({"date": bucket.start, "amount": amount, "breakdown": breakdown})
        return Response({"data": data, "currency": trend.currency})
