"""The forecast's backtests (``costs.backtests``): the baselines, one origin scored at
every level from one fit, the tuning candidates, and how far a coverage cell can stray
(block bootstrap, perfectly specified model)."""

import numpy as np
import pandas as pd
import pytest

from costs.backtests import runner
from costs.backtests.report import accumulate, report_table
from costs.backtests.uncertainty import (
    block_bootstrap_interval,
    in_range_share,
    longest_total,
    perfect_model_coverage,
    perfect_model_widths,
)
from costs.services.forecast import FIT_COUNTER
from costs.services.forecast import model as forecast_model
from costs.services.forecast.calibration import TotalSpread


def test_backtest_tuning_candidates_include_the_production_rule():
    for n in (120, 730, 3000):
        candidates = runner.tune_candidates(n)
        production = f"share {forecast_model.CALIBRATION_TRAIN_SHARE:.2f}, "
        production += f"{forecast_model.CALIBRATION_ORIGINS} origins"
        assert candidates[production] == forecast_model._calibration_leads(n)
        assert all(n - lead >= 28 for leads in candidates.values() for lead in leads)
        # Session 5's candidates: the same grid from 3 or 4 weeks back.
        later = candidates["share 0.60, 9 origins, first 21 days"]
        assert later[0] == 21 and later[-1] == candidates[production][-1]
    # Session 2's rule stays comparable: its 12 leads of the last half year.
    assert runner.tune_candidates(730)["session 2: 12 in the last half year"] == [
        14, 28, 49, 70, 91, 119, 147, 182, 35, 105, 21, 63
    ]


def test_backtest_scores_every_requested_level_from_the_same_fit(monkeypatch):
    days = pd.date_range("2024-01-01", periods=211)  # 121 days, then 90 to score
    weekly = 100 + 20 * (days.day_of_week < 5)
    series = pd.Series(weekly * np.exp(np.random.default_rng(3).normal(0, 0.1, 211)), days)
    monkeypatch.setitem(runner.DATASETS, "synthetic", (series, None))
    monkeypatch.setattr(runner, "LEVELS", [0.8, 0.95])
    fits = FIT_COUNTER["fits"]
    name, result, _ = runner.backtest_origin(("synthetic", "2024-04-30"))
    calibration_fits = len(forecast_model._calibration_leads(121))
    assert FIT_COUNTER["fits"] - fits == 1 + calibration_fits  # one fit
    accumulated: dict = {}
    accumulate(accumulated, result)
    lines = report_table([(name, accumulated)], spacing=7)
    rows = {line.split(" | ")[2]: line for line in lines if "| 30 |" in line}
    assert set(rows) == {
        "model", "model, 95%", "seasonal naive", "seasonal naive, 95%", "Koku linear"
    }
    assert "of 80%" in rows["model"] and "of 95%" in rows["model, 95%"]
    assert "of 95%" in rows["Koku linear"]
    assert rows["model"].count("|") == 10  # bootstrap and perfect-model columns
    # The perfect model's coverage on the same origin: a mean and its 5-95% range for
    # the model's rows; the baselines have no calibration to simulate.
    assert rows["model"].endswith(") |") and rows["model"].split(" | ")[-1].count("%") == 1
    assert rows["Koku linear"].endswith("| - |")
    assert any(line.startswith(f"- {name}: ") for line in lines)  # all three cells in range
    # The same fit at a higher level: same point forecast, wider intervals.
    narrow, wide = result[30]["model"], result[30]["model, 95%"]
    assert narrow["ape"] == wide["ape"]
    assert sum(narrow["covered"]) <= sum(wide["covered"])


def test_backtest_perfect_model_scores_the_totals_the_calibration_scores():
    days = pd.date_range("2023-01-01", periods=300)
    series = pd.Series(100 * np.exp(np.random.default_rng(5).normal(0, 0.1, 300)), days)
    leads = [14, 35, 63, 100]
    fit = forecast_model.fit_forecast(series, calibration_leads=leads)
    total = fit.calibration.total
    for horizon in (30, 60, 90):
        for origin, lead in enumerate(fit.calibration.leads, start=1):
            rows = total[(total[:, 0] == origin) & (total[:, 1] <= horizon)]
            assert longest_total(int(lead), horizon) == rows[:, 1].max()
    assert longest_total(3, 30) is None


def test_backtest_perfect_model_widths_are_the_production_widths():
    ordered = np.sort(np.random.default_rng(6).exponential(size=(20, 12)), axis=1)
    for level in (0.5, 0.8, 0.9, 0.95, 0.99):  # 0.95 and 0.99: past what 12 scores show
        production = [TotalSpread(1.0, 0.0, row).log_half_width(1.0, level) for row in ordered]
        assert np.allclose(perfect_model_widths(ordered, level), production)


def test_backtest_perfect_model_coverage_shows_shared_holdouts():
    def run(origins, horizons, strata=None):
        strata = strata or ["a"] * len(origins)
        return perfect_model_coverage(
            dict.fromkeys(horizons, origins), dict.fromkeys(horizons, strata), [0.8, 0.95],
            repeats=400,
        )

    # Calibration holdouts that never overlap, origins a year apart: independent scores,
    # so the interpolated conformal quantile of 12 covers its level on average (80.3%
    # for normal scores) and a run of 40 origins strays by the binomial spread only.
    apart = run([(2000 + 365 * i, tuple(range(100, 1300, 100))) for i in range(40)], [30])
    assert 78.5 < apart[30, 0.8].mean() < 82.0 and 93.0 < apart[30, 0.95].mean() < 97.0
    assert apart[30, 0.8].std() < 10
    # The production grid, origins 6 days apart: holdouts that overlap miss together,
    # so the 90-day intervals cover less on average and a stretch strays far more.
    leads = tuple(forecast_model._calibration_leads(2500))
    stretch = [(2500 + 6 * i, leads) for i in range(40)]
    near = run(stretch, [30, 90])
    assert near[90, 0.8].mean() < 79.0 and near[90, 0.8].std() > 9
    # All horizons of a run come from the same simulated days: their cells move together.
    assert np.corrcoef(near[30, 0.8], near[90, 0.8])[0, 1] > 0.3
    both_inside = (np.abs(near[30, 0.8] - 80) <= 5) & (np.abs(near[90, 0.8] - 80) <= 5)
    assert in_range_share(near) == pytest.approx(100 * both_inside.mean())
    assert in_range_share(near) < 100 * (np.abs(near[90, 0.8] - 80) <= 5).mean()
    # Strata are separate series: two of them spread less than one of twice the size.
    both = run(stretch * 2, [90], ["a"] * 40 + ["b"] * 40)
    assert both[90, 0.8].std() < near[90, 0.8].std()


def test_backtest_coverage_interval_resamples_neighbouring_origins_together():
    # Independent origins: one origin per block is the binomial interval (p = 0.8,
    # n = 400: SE 2 points, so 5-95% is about 76.7-83.3).
    hits = list(np.random.default_rng(4).random(400) < 0.8)
    low, high = block_bootstrap_interval(hits, ["a"] * 400, block=1)
    assert low < np.mean(hits) < high and 5 < 100 * (high - low) < 8
    # The same share of hits in long runs (a calm stretch, a bad one, a calm one), as
    # overlapping holdouts make them: blocks of the run length show the spread that
    # one-by-one resampling hides.
    runs = [True] * 160 + [False] * 80 + [True] * 160
    one_by_one = block_bootstrap_interval(runs, ["a"] * 400, block=1)
    blocks = block_bootstrap_interval(runs, ["a"] * 400, block=40)
    assert one_by_one[0] < 0.8 < one_by_one[1] and blocks[0] < 0.8 < blocks[1]
    assert blocks[1] - blocks[0] > 2.5 * (one_by_one[1] - one_by_one[0])
    # Strata are resampled apart: each keeps its own size and, within one block, its
    # coverage (the pooled demo's seeds are separate series).
    assert block_bootstrap_interval([1] * 10 + [0] * 30, ["x"] * 10 + ["y"] * 30, block=30) == (
        0.25, 0.25
    )


def test_backtest_seasonal_naive_repeats_the_last_week_with_a_widening_band():
    from costs.backtests.baselines import seasonal_naive

    days = pd.date_range("2024-01-01", periods=70)  # a Monday
    weekday = np.array([100.0, 110, 120, 130, 140, 50, 40])
    noise = np.random.default_rng(1).normal(0, 5, 70)
    series = pd.Series(weekday[days.day_of_week] + noise, days)
    series.iloc[-3] = np.nan  # a missing day: its weekday falls back to the last value
    point, lower, upper, total_low, total_high = seasonal_naive(series, 21, level=0.8)
    last_week = series.iloc[-7:]
    future = pd.date_range(days[-1] + pd.Timedelta(days=1), periods=21)
    for day, value in zip(future, point, strict=True):
        same = last_week[last_week.index.day_of_week == day.day_of_week].dropna()
        assert value == (same.iloc[0] if len(same) else series.dropna().iloc[-1])
    half = upper - point
    assert np.allclose(half[:7], half[0]) and np.allclose(half[7:14], half[0] * np.sqrt(2))
    assert np.allclose(half[14:], half[0] * np.sqrt(3))
    sigma = (series - series.shift(7)).dropna().std()
    assert half[0] == pytest.approx(1.2815516 * sigma, rel=1e-6)  # the 80% normal quantile
    assert (lower >= 0).all() and total_low == lower.sum() and total_high == upper.sum()


def test_backtest_koku_linear_extends_the_last_30_days_without_their_outliers():
    from costs.backtests.baselines import koku_linear

    days = pd.date_range("2024-01-01", periods=60)
    line = 200 + 3 * np.arange(60.0)
    series = pd.Series(line + np.random.default_rng(2).normal(0, 2, 60), days)
    series.iloc[-10] = 5000.0  # one outlier inside the last 30 days: dropped by the IQR rule
    point, lower, upper, total_low, total_high = koku_linear(series, 30)
    expected = 200 + 3 * np.arange(60.0, 90.0)
    assert np.abs(point - expected).max() < 6  # the line, not pulled up by the outlier
    assert (lower <= expected).all() and (expected <= upper).all()  # 95% band holds the line
    assert np.all(np.diff(upper - lower) > 0)  # wider the further from the data
    assert total_low == lower.sum() and total_high == upper.sum()
    # A falling line is clamped at zero, never a negative forecast or bound.
    falling = pd.Series(300 - 10 * np.arange(60.0), days).clip(lower=1)
    point, lower, upper, *_ = koku_linear(falling.iloc[:40], 60)
    assert (point >= 0).all() and (lower >= 0).all() and point[-1] == 0
