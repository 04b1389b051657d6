"""The backtests' tables: scores accumulated per (horizon, method), the report and the
tuning mode's table."""

from __future__ import annotations

import math

import numpy as np

from costs.backtests.baselines import LEVEL
from costs.backtests.runner import HORIZONS
from costs.backtests.uncertainty import (
    PERFECT_REPEATS,
    block_bootstrap_interval,
    in_range_share,
    perfect_model_runs,
)


def coverage_text(hits: list) -> str:
    """Coverage in percent with its binomial standard error in points."""
    p = float(np.mean(hits))
    return f"{100 * p:.1f}% ± {100 * np.sqrt(p * (1 - p) / len(hits)):.1f}"


def report_table(rows: list[tuple[str, dict]], spacing: int) -> list[str]:
    """The report: one row per (dataset, horizon, method). The total's coverage carries
    its binomial SE and its block-bootstrap 90% interval (blocks of a holdout's length,
    ``ceil(horizon / spacing)`` origins; see ``block_bootstrap_interval``); the model's
    rows also the mean and the 5th-95th percentile of what a perfectly specified model
    covers on the same origins (``perfect_model_coverage``)."""
    lines = [
        "| dataset | horizon | method | daily MAPE | total error | daily coverage "
        "| total coverage | total coverage, block bootstrap 90% "
        "| perfect model's total coverage, mean (5-95%) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    shares = []
    for name, by_horizon in rows:
        runs, perfect = perfect_model_runs(by_horizon)
        if any(level == LEVEL for _, level in runs):
            shares.append(f"- {name}: {in_range_share(runs):.0f}%")
        for horizon in HORIZONS:
            for method, acc in by_horizon[horizon].items():
                nominal = f"{acc['level']:.0%}"
                low, high = block_bootstrap_interval(
                    acc["total_covered"], acc["strata"], math.ceil(horizon / spacing)
                )
                lines.append(
                    f"| {name} | {horizon} | {method} "
                    f"| {100 * np.mean(acc['ape']):.2f}% "
                    f"| {100 * np.mean(acc['total_error']):.2f}% "
                    f"| {coverage_text(acc['covered'])} of {nominal} "
                    f"| {coverage_text(acc['total_covered'])} of {nominal} "
                    f"(n={len(acc['total_covered'])}) "
                    f"| {100 * low:.1f}-{100 * high:.1f}% "
                    f"| {perfect.get((horizon, method), '-')} |"
                )
    if shares:
        lines += ["", f"Runs of a perfectly specified model on the same origins ({PERFECT_REPEATS}) "
                  f"whose {LEVEL:.0%} total cells all fall within {LEVEL:.0%} +-5 points:", *shares]
    return lines


def tune_table(groups: dict[str, dict]) -> list[str]:
    """One row per (candidate, level): coverage of each dataset group, cells outside
    the level +-5 points and the mean distance from the level (daily and total, every
    group and horizon)."""
    header = " | ".join(
        f"{group} {kind} 30 / 60 / 90" for group in groups for kind in ("daily", "total")
    )
    lines = [f"| candidate | level | {header} | outside | distance |",
             "|---|---|" + "---|" * (2 * len(groups)) + "---|---|"]
    keys = next(iter(groups.values()))[HORIZONS[0]].keys()
    for rule, level in keys:
        cells, values = [], []
        for by_horizon in groups.values():
            for kind in ("covered", "total_covered"):
                row = [100 * float(np.mean(by_horizon[h][(rule, level)][kind])) for h in HORIZONS]
                values += row
                cells.append(" / ".join(f"{value:.1f}" for value in row))
        outside = sum(abs(value - 100 * level) > 5 for value in values)
        distance = float(np.mean([abs(value - 100 * level) for value in values]))
        lines.append(
            f"| {rule} | {level:.0%} | {' | '.join(cells)} | {outside} | {distance:.2f} |"
        )
    return lines


def accumulate(target: dict, result: dict, stratum: str = "") -> None:
    """Add one origin's scores (``stratum``: its dataset, for the bootstrap)."""
    for horizon, methods in result.items():
        for method, score in methods.items():
            acc = target.setdefault(horizon, {}).setdefault(
                method,
                {"ape": [], "covered": [], "total_error": [], "total_covered": [], "strata": [],
                 "origins": []},
            )
            acc["level"] = score["level"]
            acc["ape"] += score["ape"]
            acc["covered"] += score["covered"]
            if "total_error" in score:
                acc["total_error"].append(score["total_error"])
                acc["total_covered"].append(score["total_covered"])
                acc["strata"].append(stratum)
                if "origin" in score:
                    acc["origins"].append(score["origin"])
