"""Synthetic FOCUS 1.0 exports for the ingest benchmark.

Rows are drawn from a pool of resources, each with a fixed account, service, region, SKU
and tags, the way a real bill repeats the same resources hour after hour: ~30 days of
hourly charge periods, 50 services (skewed: a few services carry most rows), 15 regions
plus NULL for global services, 20 sub-accounts, amounts with 10 decimal places, a few
credits (negative), the literal ``NULL`` for nulls, enum case drift, an extra ``Id`` column.
Generation is vectorised (numpy + polars) and written in chunks, so 4M rows take seconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

FOCUS_10_COLUMNS = [
    "AvailabilityZone", "BilledCost", "BillingAccountId", "BillingAccountName",
    "BillingCurrency", "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory",
    "ChargeClass", "ChargeDescription", "ChargeFrequency", "ChargePeriodEnd",
    "ChargePeriodStart", "CommitmentDiscountCategory", "CommitmentDiscountId",
    "CommitmentDiscountName", "CommitmentDiscountStatus", "CommitmentDiscountType",
    "ConsumedQuantity", "ConsumedUnit", "ContractedCost", "ContractedUnitPrice",
    "EffectiveCost", "InvoiceIssuerName", "ListCost", "ListUnitPrice", "PricingCategory",
    "PricingQuantity", "PricingUnit", "ProviderName", "PublisherName", "RegionId",
    "RegionName", "ResourceId", "ResourceName", "ResourceType", "ServiceCategory",
    "ServiceName", "SkuId", "SkuPriceId", "SubAccountId", "SubAccountName", "Tags",
]
assert len(FOCUS_10_COLUMNS) == 43

SERVICES = [f"Amazon Service {i:02d}" for i in range(50)]
REGIONS = [
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-west-2",
    "eu-central-1", "eu-north-1", "ap-south-1", "ap-southeast-1", "ap-southeast-2",
    "ap-northeast-1", "ap-northeast-2", "sa-east-1", "ca-central-1",
]
ACCOUNTS = [f"{100000000000 + i * 7919:012d}" for i in range(20)]
START = datetime(2024, 9, 1)
HOURS = 30 * 24
SCALE = 10**10  # amounts carry 10 decimal places
CHUNK = 500_000


def _money(units: pl.Expr) -> pl.Expr:
    """Integer units of 1e-10 as an exact decimal string ('-0.0000012345')."""
    absolute = units.abs()
    sign = pl.when(units < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    return pl.concat_str(
        sign,
        (absolute // SCALE).cast(pl.String),
        pl.lit("."),
        (absolute % SCALE).cast(pl.String).str.zfill(10),
    )


def _resources(rng: np.random.Generator, count: int = 5_000) -> pl.DataFrame:
    weights = 1.0 / np.arange(1, len(SERVICES) + 1)
    service = rng.choice(len(SERVICES), size=count, p=weights / weights.sum())
    account = rng.integers(0, len(ACCOUNTS), size=count)
    # Each account runs in 4 regions of its own; a tenth of the resources are global.
    home = np.stack([rng.permutation(len(REGIONS))[:4] for _ in ACCOUNTS])
    region = home[account, rng.integers(0, 4, size=count)]
    is_global = rng.random(count) < 0.1
    ids = np.arange(count)
    region_names = [REGIONS[r] for r in region]
    return pl.DataFrame(
        {
            "rid": ids,
            "ServiceName": [SERVICES[s] for s in service],
            "RegionId": [None if g else r for g, r in zip(is_global, region_names, strict=True)],
            "SubAccountId": [ACCOUNTS[a] for a in account],
            "SubAccountName": [f"team-{a:02d}" for a in account],
            "AvailabilityZone": [None if g else f"{r}a" for g, r in zip(is_global, region_names, strict=True)],
            "ResourceId": [
                f"arn:aws:svc{s}:{r}:{ACCOUNTS[a]}:resource/r-{i:08x}"
                for s, r, a, i in zip(service, region_names, account, ids, strict=True)
            ],
            "ResourceName": [f"resource-{i}" for i in ids],
            "SkuId": [f"SKU{s:03d}{i % 7}" for s, i in zip(service, ids, strict=True)],
            "Tags": [
                None if i % 3 else f'{{"team": "t{i % 20}", "env": "prod", "app": "app-{i % 97}"}}'
                for i in ids
            ],
            "unit_price": rng.lognormal(mean=-6, sigma=2.5, size=count),
        }
    )


def _chunk(rng: np.random.Generator, resources: pl.DataFrame, size: int, first_id: int) -> pl.DataFrame:
    pick = rng.integers(0, resources.height, size=size)
    hour = rng.integers(0, HOURS, size=size)
    quantity = rng.gamma(2.0, 2.0, size=size)
    frame = resources[pick].with_columns(
        hour=pl.Series(hour),
        quantity=pl.Series(quantity),
        Id=pl.Series(np.arange(first_id, first_id + size)),
        credit=pl.Series(rng.random(size) < 0.01),
        committed=pl.Series(rng.random(size) < 0.2),
        drift=pl.Series(rng.random(size) < 0.05),
    )
    billed = (pl.col("unit_price") * pl.col("quantity") * SCALE).round().cast(pl.Int64)
    billed = pl.when(pl.col("credit")).then(-billed).otherwise(billed)
    effective = pl.when(pl.col("committed")).then(billed * 7 // 10).otherwise(billed)
    start = pl.lit(START) + pl.duration(hours=pl.col("hour"))
    iso = "%Y-%m-%dT%H:%M:%SZ"
    return frame.select(
        AvailabilityZone=pl.col("AvailabilityZone"),
        BilledCost=_money(billed),
        BillingAccountId=pl.lit("999999999999"),
        BillingAccountName=pl.lit("Payer"),
        BillingCurrency=pl.lit("USD"),
        BillingPeriodEnd=pl.lit("2024-10-01T00:00:00Z"),
        BillingPeriodStart=pl.lit("2024-09-01T00:00:00Z"),
        ChargeCategory=pl.when(pl.col("credit")).then(pl.lit("Credit")).otherwise(pl.lit("Usage")),
        ChargeClass=pl.lit(None, dtype=pl.String),
        ChargeDescription=pl.concat_str(
            pl.lit("$"), pl.col("unit_price").round(6).cast(pl.String),
            pl.lit(" per unit, "), pl.col("ServiceName"),
        ),
        ChargeFrequency=pl.when(pl.col("drift")).then(pl.lit("Usage-based")).otherwise(pl.lit("Usage-Based")),
        ChargePeriodEnd=(start + pl.duration(hours=1)).dt.strftime(iso),
        ChargePeriodStart=start.dt.strftime(iso),
        CommitmentDiscountCategory=pl.when(pl.col("committed")).then(pl.lit("Spend")),
        CommitmentDiscountId=pl.when(pl.col("committed")).then(pl.lit("arn:aws:savingsplans::999999999999:sp/1")),
        CommitmentDiscountName=pl.lit(None, dtype=pl.String),
        CommitmentDiscountStatus=pl.when(pl.col("committed")).then(pl.lit("Used")),
        CommitmentDiscountType=pl.when(pl.col("committed")).then(pl.lit("Savings Plan")),
        ConsumedQuantity=pl.col("quantity").round(9).cast(pl.String),
        ConsumedUnit=pl.lit("Hrs"),
        ContractedCost=_money(billed),
        ContractedUnitPrice=pl.col("unit_price").round(10).cast(pl.String),
        EffectiveCost=_money(effective),
        InvoiceIssuerName=pl.lit("Amazon Web Services, Inc."),
        ListCost=_money(billed),
        ListUnitPrice=pl.col("unit_price").round(10).cast(pl.String),
        PricingCategory=pl.when(pl.col("committed")).then(pl.lit("Committed")).otherwise(pl.lit("Standard")),
        PricingQuantity=pl.col("quantity").round(9).cast(pl.String),
        PricingUnit=pl.lit("Hours"),
        ProviderName=pl.lit("AWS"),
        PublisherName=pl.lit("Amazon Web Services, Inc."),
        RegionId=pl.col("RegionId"),
        RegionName=pl.col("RegionId"),
        ResourceId=pl.col("ResourceId"),
        ResourceName=pl.col("ResourceName"),
        ResourceType=pl.lit("Instance"),
        ServiceCategory=pl.lit("Compute"),
        ServiceName=pl.col("ServiceName"),
        SkuId=pl.col("SkuId"),
        SkuPriceId=pl.concat_str(pl.col("SkuId"), pl.lit(".JRTCKXETXF")),
        SubAccountId=pl.col("SubAccountId"),
        SubAccountName=pl.col("SubAccountName"),
        Tags=pl.col("Tags"),
        Id=pl.col("Id"),
    )


def write_focus_csv(path: Path, rows: int, *, seed: int = 42) -> Path:
    """Write ``rows`` synthetic FOCUS 1.0 rows (43 columns + ``Id``) to ``path``."""
    rng = np.random.default_rng(seed)
    resources = _resources(rng)
    with path.open("wb") as handle:
        written = 0
        while written < rows:
            size = min(CHUNK, rows - written)
            _chunk(rng, resources, size, written).write_csv(
                handle, include_header=written == 0, null_value="NULL",
                quote_style="necessary",
            )
            written += size
    return path


def expected_days() -> tuple[datetime, datetime]:
    return START, START + timedelta(hours=HOURS - 1)
