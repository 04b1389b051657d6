"""How far one stretch of backtests strays from the level with a perfect model.

    .venv/bin/python bench/conformal_stretch.py [--repeats 2000] [--seed 0]   # or: make bench

The forecast's total interval is split-conformal: its width is a quantile of the
misses of the scope's own calibration backtests (``model.CALIBRATION_ORIGINS`` of them).
Conformal prediction holds its level on average, not in every stretch of history:
neighbouring forecasts share their calibration backtests, and their 30-90-day
holdouts overlap, so a stretch of backtest origins inherits a few draws' luck.

This runs ``costs.backtests.uncertainty.perfect_model_coverage`` (the column "perfect model" of
the backtest report) on the report's stretch (50 origins 6 days apart), the wider
Peyton Manning evaluation's (160, 7 days apart) and the whole series' (304, 7 days
apart), with the production calibration leads of a 2,500-day history
(``model._calibration_leads``) and with 2, 4 and 8 times as many on the same grid. Per
horizon: the mean coverage of the nominal 80% total interval over ``--repeats``
stretches, its spread and how often one stretch lands in 75-85% (and all three horizons
of one stretch at once). No database and no
Prophet; the table is in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

LEVEL = 0.8
HISTORY_DAYS = 2500  # Peyton Manning's origins have 1,700-2,900 days: leads reach 728
STRETCHES = {
    "report (50 origins, 6 days apart)": (50, 6),
    "wider (160 origins, 7 days apart)": (160, 7),
    "whole series (304 origins, 7 days apart)": (304, 7),
}
COUNTS = (12, 24, 48, 96)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.repeats < 2:
        parser.error("--repeats: must be 2 or more")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "infraaudit.settings")
    os.environ.setdefault("DJANGO_DEBUG", "1")  # settings only: no database, no secrets
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import django

    django.setup()
    from costs.backtests.uncertainty import (
        in_range_share,
        perfect_model_coverage,
    )
    from costs.services.forecast import model

    started = time.perf_counter()
    print(f"80% total interval, perfectly specified model, {args.repeats} stretches each")
    print("| stretch | calibration origins | horizon | mean | sd | 5th-95th percentile "
          "| stretches in 75-85% |")
    print("|---|---|---|---|---|---|---|")
    for name, (origins, spacing) in STRETCHES.items():
        for count in COUNTS:
            leads = tuple(model._calibration_leads(HISTORY_DAYS, count))
            stretch = [(HISTORY_DAYS + spacing * i, leads) for i in range(origins)]
            runs = perfect_model_coverage(
                dict.fromkeys(model.HORIZONS, stretch),
                {horizon: ["series"] * origins for horizon in model.HORIZONS},
                [LEVEL], args.repeats, args.seed,
            )
            for horizon in model.HORIZONS:
                cells = runs[horizon, LEVEL]
                low, high = np.percentile(cells, [5, 95])
                inside = np.mean((cells >= 75) & (cells <= 85))
                print(f"| {name} | {count} | {horizon} | {cells.mean():.1f}% "
                      f"| {cells.std():.1f} | {low:.1f}-{high:.1f}% | {100 * inside:.0f}% |")
            print(f"| {name} | {count} | all three | | | | {in_range_share(runs, LEVEL):.0f}% |")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
