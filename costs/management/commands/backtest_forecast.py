"""Rolling-origin backtests of the cost forecast against two baselines, and its speed.

    python manage.py backtest_forecast [--seeds 1 2 3] [--origins 30] [--spacing 10]
                                       [--peyton PATH] [--jobs 2] [--skip-speed]

Datasets: the demo generator (``costs.demo``) at each seed, 1,100 days, forecast from
its (provider, service) components like the service does; and, when the file is there,
Prophet's Peyton Manning series (``../shared/data/wp-log-peyton-manning.csv``) turned
into a spend-like series with exp(y) (real data: yearly seasons, regime changes, gaps).

From each origin (the last one 90 days before the end, then every ``--spacing`` days
back) the model sees only the days up to the origin, exactly as in production
(``fit_forecast`` with its own inner calibration backtests), and is scored on the next
30, 60 and 90 days, with two baselines on the same origins:

* seasonal naive: the last observed week repeated; 80% band from the spread of weekly
  differences, widening with each further week; the total's band adds the daily bounds;
* Koku's linear forecast: ordinary least squares on the last 30 days after dropping
  1.5 IQR outliers, 95% prediction band (clamped at 0); the total's band adds the daily
  bounds.

Columns: MAPE of daily amounts (days with spend), mean absolute error of the projected
total, empirical coverage of the daily bands and of the total's band (origins whose
holdout has no missing day), against each method's nominal level.

Speed (unless ``--skip-speed``): the demo's three providers with 730 days of history in
this database, the first forecast of the organization (fit and calibration) and cached
forecasts, through the service and through the HTTP API.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connections

from costs.demo import generate
from costs.services.forecast import model

HORIZONS = (30, 60, 90)
DEMO_DAYS = 1100
DEMO_END = date(2025, 6, 30)
PEYTON = Path(settings.BASE_DIR).parent / "shared" / "data" / "wp-log-peyton-manning.csv"
LEVEL = 0.8
KOKU_LEVEL = 0.95

_DATASETS: dict[str, tuple[pd.Series, dict[str, pd.Series] | None]] = {}


# -- datasets ----------------------------------------------------------------------------


def demo_dataset(seed: int, days: int = DEMO_DAYS, end: date = DEMO_END):
    """The demo organization's daily total and its (provider, service) components."""
    dataset = generate(seed=seed, days=days, end=end)
    frame = pd.DataFrame(
        [(row.day, f"{row.provider}|{row.service}", float(row.billed)) for row in dataset.rows],
        columns=["day", "component", "amount"],
    )
    table = frame.pivot_table(index="day", columns="component", values="amount", aggfunc="sum")
    table.index = pd.DatetimeIndex(table.index)
    table = table.reindex(pd.date_range(dataset.start, dataset.end)).fillna(0.0)
    return table.sum(axis=1), {name: table[name] for name in table.columns}


def peyton_dataset(path: Path):
    frame = pd.read_csv(path, parse_dates=["ds"])
    series = np.exp(frame.set_index("ds")["y"])
    return series.reindex(pd.date_range(series.index[0], series.index[-1])), None


# -- baselines ---------------------------------------------------------------------------


def _t_quantile(p: float, dof: int) -> float:
    """Student t quantile (Cornish-Fisher expansion around the normal; fine for dof > 5)."""
    z = model._normal_quantile(p)
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def seasonal_naive(history: pd.Series, horizon: int, level: float = LEVEL):
    """The last observed value of each weekday, repeated; normal band from the spread of
    the weekly differences, sd x sqrt(weeks ahead)."""
    observed = history.dropna()
    last = {day.weekday(): value for day, value in observed.iloc[-7:].items()}
    start = history.index[-1] + pd.Timedelta(days=1)
    days = pd.date_range(start, periods=horizon)
    point = np.array([last.get(day.weekday(), observed.iloc[-1]) for day in days])
    diffs = (history - history.shift(7)).iloc[-365:].dropna()
    sigma = float(diffs.std()) if len(diffs) > 1 else 0.0
    steps = np.arange(horizon) // 7 + 1
    half = model._normal_quantile(0.5 + level / 2) * sigma * np.sqrt(steps)
    lower, upper = np.clip(point - half, 0, None), point + half
    return point, lower, upper, lower.sum(), upper.sum()


def koku_linear(history: pd.Series, horizon: int, level: float = KOKU_LEVEL):
    """Koku's forecast: OLS on the last 30 days (1.5 IQR outliers dropped) with its
    prediction band, clamped at zero."""
    window = history.iloc[-30:]
    x = np.arange(len(window), dtype=float)[window.notna().to_numpy()]
    y = window.dropna().to_numpy()
    q1, q3 = np.percentile(y, [25, 75])
    keep = (y >= q1 - 1.5 * (q3 - q1)) & (y <= q3 + 1.5 * (q3 - q1))
    x, y = x[keep], y[keep]
    design = np.column_stack([np.ones_like(x), x])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    dof = max(len(y) - 2, 1)
    s2 = float(np.sum((y - design @ beta) ** 2)) / dof
    future = np.column_stack([np.ones(horizon), np.arange(len(window), len(window) + horizon)])
    leverage = np.einsum("ij,jk,ik->i", future, np.linalg.pinv(design.T @ design), future)
    half = _t_quantile(0.5 + level / 2, dof) * np.sqrt(s2 * (1 + leverage))
    point = future @ beta
    lower, upper = np.clip(point - half, 0, None), np.clip(point + half, 0, None)
    return np.clip(point, 0, None), lower, upper, lower.sum(), upper.sum()


# -- backtest ----------------------------------------------------------------------------


def _score(actual: np.ndarray, point, lower, upper, total_low, total_high) -> dict:
    spend = np.isfinite(actual) & (actual > 0)
    out = {
        "ape": list(np.abs(point[spend] - actual[spend]) / actual[spend]),
        "covered": list((actual[spend] >= lower[spend]) & (actual[spend] <= upper[spend])),
    }
    if np.isfinite(actual).all():
        total = actual.sum()
        out["total_error"] = abs(point.sum() - total) / total
        out["total_covered"] = bool(total_low <= total <= total_high)
    return out


def backtest_origin(task: tuple[str, str]) -> tuple[str, dict, float]:
    """One origin: the model (one fit answers every horizon) and both baselines."""
    name, origin = task
    series, components = _DATASETS[name]
    cut = pd.Timestamp(origin)
    history = series.loc[:cut]
    parts = {key: part.loc[:cut] for key, part in components.items()} if components else None
    started = time.perf_counter()
    fit = model.fit_forecast(history, components=parts)
    elapsed = time.perf_counter() - started
    result: dict = {}
    for horizon in HORIZONS:
        actual = series.loc[cut + pd.Timedelta(days=1) : cut + pd.Timedelta(days=horizon)]
        actual = actual.to_numpy()
        ours = model.forecast_from_fit(fit, horizon=horizon, level=LEVEL)
        result[horizon] = {
            "model": _score(
                actual, ours.amount, ours.lower, ours.upper, ours.total_low, ours.total_high
            ),
            "seasonal naive": _score(actual, *seasonal_naive(history, horizon)),
            "Koku linear": _score(actual, *koku_linear(history, horizon)),
        }
    return name, result, elapsed


NOMINAL = {"model": LEVEL, "seasonal naive": LEVEL, "Koku linear": KOKU_LEVEL}


def _table(rows: list[tuple[str, dict]]) -> list[str]:
    lines = [
        "| dataset | horizon | method | daily MAPE | total error | daily coverage | total coverage |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, by_horizon in rows:
        for horizon in HORIZONS:
            for method, acc in by_horizon[horizon].items():
                nominal = f"{NOMINAL[method]:.0%}"
                lines.append(
                    f"| {name} | {horizon} | {method} "
                    f"| {100 * np.mean(acc['ape']):.2f}% "
                    f"| {100 * np.mean(acc['total_error']):.2f}% "
                    f"| {100 * np.mean(acc['covered']):.1f}% of {nominal} "
                    f"| {100 * np.mean(acc['total_covered']):.1f}% of {nominal} "
                    f"(n={len(acc['total_covered'])}) |"
                )
    return lines


def _accumulate(target: dict, result: dict) -> None:
    for horizon, methods in result.items():
        for method, score in methods.items():
            acc = target.setdefault(horizon, {}).setdefault(
                method, {"ape": [], "covered": [], "total_error": [], "total_covered": []}
            )
            acc["ape"] += score["ape"]
            acc["covered"] += score["covered"]
            if "total_error" in score:
                acc["total_error"].append(score["total_error"])
                acc["total_covered"].append(score["total_covered"])


# -- speed -------------------------------------------------------------------------------


def _speed(stdout) -> list[str]:
    from django.core.cache import cache
    from django.test import Client

    from accounts.models import Membership
    from accounts.services import api_key_create, membership_ensure
    from costs.models import CostRecord
    from costs.selectors import utc_today
    from costs.services.forecast import cost_forecast
    from providers.models import Provider

    membership = membership_ensure(
        org_name="bench-forecast", username="bench-forecast", role=Membership.Role.ADMIN
    )
    org = membership.organization
    yesterday = utc_today() - timedelta(days=1)
    dataset = generate(seed=7, days=730, end=yesterday)
    CostRecord.objects.filter(organization=org).delete()
    providers = {}
    for spec_name in sorted({row.provider for row in dataset.rows}):
        provider, _ = Provider.objects.update_or_create(
            organization=org, name=spec_name, defaults={"kind": Provider.Kind.FOCUS}
        )
        provider.coverage_start, provider.coverage_end = dataset.start, dataset.end
        provider.data_version += 1  # what a sync that writes these records does
        provider.save()
        providers[spec_name] = provider
    CostRecord.objects.bulk_create(
        (
            CostRecord(
                organization=org, provider=providers[row.provider], day=row.day,
                service=row.service, region=row.region, account=row.account,
                currency=row.currency, billed_amount=row.billed,
                effective_amount=row.effective,
            )
            for row in dataset.rows
        ),
        batch_size=5000,
    )
    stdout.write(f"speed: {len(dataset.rows)} records, 3 providers, 730 days of history")

    started = time.perf_counter()
    model._prophet_class()
    import_seconds = time.perf_counter() - started
    cache.clear()
    fits_before = model.FIT_COUNTER["fits"]
    started = time.perf_counter()
    cost_forecast(organization=org, days=30)
    first = time.perf_counter() - started
    fits = model.FIT_COUNTER["fits"] - fits_before
    cached = []
    for days in (30, 60, 90) * 7:
        started = time.perf_counter()
        cost_forecast(organization=org, days=days)
        cached.append(time.perf_counter() - started)

    _, raw_key = api_key_create(membership=membership, name="bench")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw_key}", HTTP_HOST="localhost")
    http = []
    for days in (30, 60, 90) * 7:
        started = time.perf_counter()
        response = client.get(f"/api/v1/costs/forecast?days={days}")
        http.append(time.perf_counter() - started)
        assert response.status_code == 200, response.content
    one_provider = next(iter(providers.values()))
    started = time.perf_counter()
    cost_forecast(organization=org, provider=one_provider, days=30)
    first_provider = time.perf_counter() - started
    return [
        "| measurement | time |",
        "|---|---|",
        f"| Prophet import and model load (once per process) | {import_seconds:.2f} s |",
        f"| first forecast, organization (3 providers, 730 days, {fits} Prophet fits) "
        f"| {first:.2f} s |",
        f"| first forecast, one provider | {first_provider:.2f} s |",
        f"| cached forecast, service (median of {len(cached)}) "
        f"| {1000 * statistics.median(cached):.1f} ms |",
        f"| cached forecast, HTTP GET /api/v1/costs/forecast (median / max of {len(http)}) "
        f"| {1000 * statistics.median(http):.1f} ms / {1000 * max(http):.1f} ms |",
    ]


# -- command -----------------------------------------------------------------------------


class Command(BaseCommand):
    help = "Backtest the cost forecast against seasonal-naive and Koku's linear forecast."

    def add_arguments(self, parser):
        parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
        parser.add_argument("--origins", type=int, default=30, help="origins per dataset")
        parser.add_argument("--spacing", type=int, default=10, help="days between origins")
        parser.add_argument("--peyton", type=Path, default=PEYTON)
        parser.add_argument("--jobs", type=int, default=2)
        parser.add_argument("--skip-speed", action="store_true")

    def handle(self, *args, seeds, origins, spacing, peyton, jobs, skip_speed, **options):
        started = time.perf_counter()
        for seed in seeds:
            _DATASETS[f"demo seed {seed}"] = demo_dataset(seed)
        if peyton.exists():
            _DATASETS["Peyton Manning exp(y)"] = peyton_dataset(peyton)
        else:
            self.stdout.write(f"{peyton} not found: skipping the Peyton Manning dataset")
        tasks = []
        for name, (series, _) in _DATASETS.items():
            last = series.index[-1] - pd.Timedelta(days=max(HORIZONS))
            tasks += [(name, str((last - pd.Timedelta(days=spacing * i)).date()))
                      for i in range(origins)]
        connections.close_all()  # the workers are forked and never touch the database
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.map(backtest_origin, tasks, chunksize=1)

        by_dataset: dict[str, dict] = {}
        pooled: dict = {}
        for name, result, _ in results:
            _accumulate(by_dataset.setdefault(name, {}), result)
            if name.startswith("demo"):
                _accumulate(pooled, result)
        rows = list(by_dataset.items())
        if len(seeds) > 1:
            rows.append(("demo, all seeds", pooled))
        fit_seconds = [elapsed for _, _, elapsed in results]
        self.stdout.write("\n".join(_table(rows)))
        self.stdout.write(
            f"\n{len(tasks)} origins, {jobs} processes, {time.perf_counter() - started:.0f} s; "
            f"one fit with its calibration backtests: median {statistics.median(fit_seconds):.2f} s"
        )
        if not skip_speed:
            self.stdout.write("\n" + "\n".join(_speed(self.stdout)))
