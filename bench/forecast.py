"""Forecast benchmark: rolling-origin backtests against two baselines, and speed.

    .venv/bin/python bench/forecast.py [--seeds 1 2 3] [--origins 30] [--spacing 10]
        [--offset 0] [--tune] [--jobs 2] [--skip-speed]

The report in docs/benchmarks.md: ``--seeds 1 2 3 4 5 6 --origins 50 --spacing 6
--skip-speed``; the wider Peyton Manning evaluation: ``--seeds --origins 160 --spacing 7
--skip-speed``; the tuning runs: ``--seeds 11 12 13 14 15 16 --origins 30 --spacing 10
--offset 3 --tune --skip-speed --peyton /nonexistent`` and ``--seeds --origins 144
--spacing 7 --offset 1120 --tune --skip-speed``; the speed part alone, at a load average
under 0.5: ``--seeds 1 --origins 0 --peyton /nonexistent``.

Runs ``manage.py backtest_forecast`` (``costs.backtests`` describes the method) on PostgreSQL:
``DATABASE_URL`` or postgres://postgres@127.0.0.1:5432/infraaudit_forecast_bench, created
and migrated by this script. Prints the tables that go to docs/benchmarks.md.
"""

from __future__ import annotations

import os
import sys

from _common import setup_django

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/infraaudit_forecast_bench"


def main() -> None:
    setup_django(os.environ.get("DATABASE_URL") or DEFAULT_URL)
    from django.core.management import call_command

    call_command("backtest_forecast", *sys.argv[1:])


if __name__ == "__main__":
    main()
