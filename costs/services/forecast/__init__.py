"""Cost forecasts whose intervals mean what they say.

``model``: the pure numpy/pandas/Prophet core (fit, calibrate, answer a horizon), used by
the service and by the backtests; ``usage``: Prophet in log space and the simulated
paths; ``recurring``: fixed-day monthly charges;
``calibration``: backtest scores and their quantiles; ``service``: ``cost_forecast``,
the Django entry point (history rules, currency, caching, one fit under concurrency).
"""

from costs.services.forecast.model import (
    HORIZON_MAX,
    HORIZONS,
    MIN_HISTORY_DAYS,
    FittedForecast,
    SeriesForecast,
    fit_forecast,
    forecast_from_fit,
    forecast_series,
)
from costs.services.forecast.recurring import RecurringCharge, detect_recurring
from costs.services.forecast.service import (
    DailyForecast,
    ForecastResult,
    cost_forecast,
    forecasts_warm,
)
from costs.services.forecast.usage import FIT_COUNTER

__all__ = [
    "FIT_COUNTER",
    "HORIZONS",
    "HORIZON_MAX",
    "MIN_HISTORY_DAYS",
    "DailyForecast",
    "FittedForecast",
    "ForecastResult",
    "RecurringCharge",
    "SeriesForecast",
    "cost_forecast",
    "detect_recurring",
    "fit_forecast",
    "forecast_from_fit",
    "forecast_series",
    "forecasts_warm",
]
