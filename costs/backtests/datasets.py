"""The backtests' datasets: the demo generator's organization at a seed, forecast from
its (provider, service) components as the service does, and Prophet's Peyton Manning
example turned into a spend-like series with exp(y) (real data: yearly seasons, regime
changes, gaps)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from django.conf import settings

from costs.demo import generate

DEMO_DAYS = 1100
DEMO_END = date(2025, 6, 30)
PEYTON = Path(settings.BASE_DIR).parent / "shared" / "data" / "wp-log-peyton-manning.csv"
PEYTON_NAME = "Peyton Manning exp(y)"


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
    """Prophet's example CSV (ds, y = log of daily page views) as exp(y), gaps as NaN;
    ValueError when the file is not such a CSV."""
    try:
        frame = pd.read_csv(path, parse_dates=["ds"])
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ValueError(f"not a Prophet example CSV with ds,y ({exc})") from None
    if "y" not in frame.columns:
        raise ValueError("not a Prophet example CSV with ds,y (no y column)")
    series = np.exp(frame.set_index("ds")["y"])
    return series.reindex(pd.date_range(series.index[0], series.index[-1])), None
