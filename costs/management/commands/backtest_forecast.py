"""Rolling-origin backtests of the cost forecast against two baselines, and its speed.

    python manage.py backtest_forecast [--seeds 1 2 3] [--origins 30] [--spacing 10]
                                       [--offset 0] [--levels 0.8] [--tune] [--peyton PATH]
                                       [--jobs 2] [--skip-speed]

The datasets, the baselines, the scores and the tables are in ``costs.backtests`` (its
docstring describes the method); this command parses the arguments, runs the origins
on ``--jobs`` forked processes and prints the tables.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from pathlib import Path

import pandas as pd
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from costs.backtests import runner
from costs.backtests.baselines import LEVEL
from costs.backtests.datasets import PEYTON, PEYTON_NAME, demo_dataset, peyton_dataset
from costs.backtests.report import accumulate, report_table, tune_table
from costs.backtests.runner import HORIZONS, backtest_origin
from costs.backtests.speed import speed_rows


def _check_arguments(*, origins, spacing, offset, levels, jobs) -> None:
    problems = [
        f"--{name}: {rule}"
        for name, bad, rule in (
            ("origins", origins < 0, "must be 0 or more"),
            ("spacing", spacing < 1, "must be 1 or more (days between origins)"),
            ("offset", offset < 0, "must be 0 or more"),
            ("levels", any(not 0 < level < 1 for level in levels), "each between 0 and 1"),
            ("jobs", jobs < 1, "must be 1 or more"),
        )
        if bad
    ]
    if problems:
        raise CommandError("; ".join(problems))


class Command(BaseCommand):
    help = "Backtest the cost forecast against seasonal-naive and Koku's linear forecast."

    def add_arguments(self, parser):
        parser.add_argument(
            "--seeds", type=int, nargs="*", default=[1, 2, 3],
            help="demo generator seeds (none: only Peyton Manning)",
        )
        parser.add_argument("--origins", type=int, default=30, help="origins per dataset")
        parser.add_argument("--spacing", type=int, default=10, help="days between origins")
        parser.add_argument(
            "--offset", type=int, default=0, help="extra days between the last origin and the end"
        )
        parser.add_argument(
            "--levels", type=float, nargs="+", default=[LEVEL],
            help="interval levels to score (the same fits; default 0.8)",
        )
        parser.add_argument(
            "--tune", action="store_true",
            help="tuning mode: compare the candidate rules for the calibration origins",
        )
        parser.add_argument("--peyton", type=Path, default=PEYTON)
        parser.add_argument("--jobs", type=int, default=2)
        parser.add_argument("--skip-speed", action="store_true")

    def handle(self, *args, seeds, origins, spacing, offset, levels, tune, peyton, jobs,
               skip_speed, **options):
        _check_arguments(origins=origins, spacing=spacing, offset=offset, levels=levels,
                         jobs=jobs)
        started = time.perf_counter()
        runner.TUNING[:] = [True] if tune else []
        runner.LEVELS[:] = sorted(set(levels))
        for seed in seeds:
            runner.DATASETS[f"demo seed {seed}"] = demo_dataset(seed)
        if peyton.exists():
            try:
                runner.DATASETS[PEYTON_NAME] = peyton_dataset(peyton)
            except ValueError as exc:
                raise CommandError(f"--peyton {peyton}: {exc}") from None
        else:
            self.stdout.write(f"{peyton} not found: skipping the Peyton Manning dataset")
        tasks = []
        for name, (series, _) in runner.DATASETS.items():
            last = series.index[-1] - pd.Timedelta(days=max(HORIZONS) + offset)
            tasks += [(name, str((last - pd.Timedelta(days=spacing * i)).date()))
                      for i in range(origins)]
        if tasks:
            self._backtests(tasks, jobs, seeds, spacing, started)
        if not skip_speed:
            self.stdout.write("\n" + "\n".join(speed_rows(self.stdout)))

    def _backtests(self, tasks, jobs, seeds, spacing, started):
        connections.close_all()  # the workers are forked and never touch the database
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.map(backtest_origin, tasks, chunksize=1)

        by_dataset: dict[str, dict] = {}
        pooled: dict = {}
        for name, result, _ in results:
            accumulate(by_dataset.setdefault(name, {}), result, name)
            if name.startswith("demo"):
                accumulate(pooled, result, name)
        fit_seconds = [elapsed for _, _, elapsed in results]
        if runner.TUNING:
            groups = {"demo": pooled} if pooled else {}
            if PEYTON_NAME in by_dataset:
                groups["Peyton"] = by_dataset[PEYTON_NAME]
            self.stdout.write("\n".join(tune_table(groups)))
        else:
            rows = list(by_dataset.items())
            if len(seeds) > 1:
                rows.append(("demo, all seeds", pooled))
            self.stdout.write("\n".join(report_table(rows, spacing)))
        self.stdout.write(
            f"\n{len(tasks)} origins, {jobs} processes, {time.perf_counter() - started:.0f} s; "
            f"one fit with its calibration backtests: median {statistics.median(fit_seconds):.2f} s"
        )
