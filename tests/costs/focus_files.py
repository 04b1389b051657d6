"""Writes small FOCUS exports for tests."""

from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = [
    "BilledCost", "BillingCurrency", "ChargeCategory", "ChargeFrequency", "ChargePeriodEnd",
    "ChargePeriodStart", "EffectiveCost", "ProviderName", "RegionId", "ServiceName",
    "SubAccountId",
]


def write_focus_csv(path: Path, rows: list[dict]) -> Path:
    """rows: dicts with day ('YYYY-MM-DD'), service, amount (str), optional region, account,
    currency, effective."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    "BilledCost": row["amount"],
                    "BillingCurrency": row.get("currency", "USD"),
                    "ChargeCategory": "Usage",
                    "ChargeFrequency": "Usage-Based",
                    "ChargePeriodEnd": f"{row['day']} 01:00:00",
                    "ChargePeriodStart": f"{row['day']} 00:00:00",
                    "EffectiveCost": row.get("effective", row["amount"]),
                    "ProviderName": "AWS",
                    "RegionId": row.get("region", "us-east-1"),
                    "ServiceName": row["service"],
                    "SubAccountId": row.get("account", "111111111111"),
                }
            )
    return path
