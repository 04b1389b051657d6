"""GET /costs/forecast."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import request_org
from costs.api.params import (
    ProviderScopedQuery,
    money_field,
    parse_query,
    ranged_field,
    scoped_provider,
)
from costs.money import round_parts, to_cents
from costs.services.forecast import HORIZONS, MIN_HISTORY_DAYS, cost_forecast


class ForecastQuery(ProviderScopedQuery):
    days = serializers.ChoiceField(
        choices=list(HORIZONS), default=30, help_text="Days to forecast: 30, 60 or 90."
    )
    interval_level = ranged_field(
        serializers.FloatField,
        0.5,
        0.99,
        default=0.8,
        help_text="Probability that each interval holds the real outcome (0.5..0.99).",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["days"].error_messages["invalid_choice"] = "must be one of 30, 60, 90"


ForecastResponse = inline_serializer(
    "CostForecast",
    {
        "forecast_days": serializers.IntegerField(),
        "projected_total": money_field(),
        "confidence_interval": inline_serializer(
            "CostForecastInterval",
            {"low": money_field(), "high": money_field()},
            help_text="Interval of the total at `interval_level`, from simulated paths "
            "(not the sum of the daily bounds).",
        ),
        "daily": inline_serializer(
            "CostForecastDay",
            {
                "date": serializers.DateField(),
                "amount": money_field(),
                "lower": money_field(),
                "upper": money_field(),
            },
            many=True,
        ),
        "currency": serializers.CharField(),
        "interval_level": serializers.FloatField(),
        "history_days": serializers.IntegerField(help_text="Known days of history used."),
        "generated_at": serializers.DateTimeField(help_text="When the model was fitted."),
        "calibration": inline_serializer(
            "CostForecastCalibration",
            {
                "method": serializers.CharField(),
                "backtest_origins": serializers.IntegerField(
                    help_text="Rolling-origin backtests on this scope's own history."
                ),
                "daily_scale": serializers.FloatField(
                    help_text="Calibrated daily width / the simulated (normal) width."
                ),
                "total_scale": serializers.FloatField(
                    help_text="Calibrated / simulated (normal) width of the total's "
                    "interval, in log space."
                ),
                "level_error": serializers.FloatField(
                    help_text="Relative error of the forecast level found by the backtests "
                    "(sd of the log ratio), added to the simulated spread of the total."
                ),
                "recurring_charges": serializers.IntegerField(
                    help_text="Fixed-day monthly charges forecast on their day."
                ),
            },
        ),
    },
)


class ForecastView(APIView):
    @extend_schema(
        summary="Forecast of daily spend with calibrated intervals",
        description=(
            "Prophet forecast of the organization's (or one provider's) billed spend for "
            "the `days` days after the last complete billing day (yesterday, UTC). Charges "
            "billed on a fixed day of the month are forecast on that day. Interval widths "
            "are calibrated on backtests of the scope's own history, so `interval_level` "
            "is the share of real outcomes they hold. 422 when the scope has fewer than "
            f"{MIN_HISTORY_DAYS} complete days of history or is billed in several "
            "currencies."
        ),
        parameters=[ForecastQuery],
        responses={200: ForecastResponse},
    )
    def get(self, request):
        params = parse_query(ForecastQuery, request)
        provider = scoped_provider(request, params)
        result = cost_forecast(
            organization=request_org(request),
            provider=provider,
            days=params["days"],
            level=params["interval_level"],
        )
        # Rounded parts that add up exactly to the rounded total.
        total, amounts = round_parts({day.date.isoformat(): day.amount for day in result.daily})
        daily = []
        for day in result.daily:
            amount = amounts[day.date.isoformat()]
            daily.append(
                {
                    "date": day.date,
                    "amount": amount,
                    "lower": min(to_cents(day.lower), amount),
                    "upper": max(to_cents(day.upper), amount),
                }
            )
        return Response(
            {
                "forecast_days": result.forecast_days,
                "projected_total": total,
                "confidence_interval": {
                    "low": min(to_cents(result.total_low), total),
                    "high": max(to_cents(result.total_high), total),
                },
                "daily": daily,
                "currency": result.currency,
                "interval_level": result.interval_level,
                "history_days": result.history_days,
                "generated_at": result.generated_at,
                "calibration": result.calibration,
            }
        )
