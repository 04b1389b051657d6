"""Ingest benchmark: a synthetic FOCUS 1.0 export through the real sync path on PostgreSQL.

    .venv/bin/python bench/ingest.py [--rows 1000000 4000000]

For each N it writes a FOCUS CSV of N rows into a temporary directory (all 43 FOCUS 1.0
columns + a non-standard ``Id``; ~30 days of hourly charge periods, 50 services skewed
towards a few, 15 regions + NULL, 20 sub-accounts, amounts with 10 decimals, credits,
``NULL`` literals, enum case drift), then:

* loads the same file with ``psql \\copy`` into an unindexed table of TEXT columns: the
  floor for "getting these bytes into this database";
* imports it with ``cost_records_sync(provider=..., source_file=...)`` in a child process
  (its peak RSS is the import's own, ``resource.getrusage`` in the child), into a fresh
  FOCUS provider: the first import writes every daily record;
* imports it again (another child): the unchanged re-run, which must write nothing.

Database: ``DATABASE_URL`` or postgres://postgres@127.0.0.1:5432/infraaudit_bench, created
and migrated by this script. Prints a table; the numbers go to docs/benchmarks.md.
"""

# The benchmark runs psql and itself as child processes, with arguments it builds.
# ruff: noqa: S603, S607

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
from _common import bench_environment, ensure_database

REPO = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/infraaudit_bench"
BENCH_ORG = "bench-ingest"


# -- the synthetic export -------------------------------------------------------------
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


# -- Django and the database -----------------------------------------------------------
def _environment(url: str, import_root: Path) -> dict[str, str]:
    return bench_environment(url, INFRAAUDIT_IMPORT_ROOT=str(import_root))


def _django(env: dict[str, str]) -> None:
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def _bench_provider(rows: int) -> int:
    """A fresh FOCUS provider in the bench organization (older bench data removed)."""
    from accounts.models import Organization
    from costs.models import CostRecord
    from providers.models import Provider

    organization, _ = Organization.objects.get_or_create(
        slug=BENCH_ORG, defaults={"name": "Ingest benchmark"}
    )
    CostRecord.objects.filter(organization=organization).delete()
    Provider.objects.filter(organization=organization).delete()
    provider = Provider.objects.create(
        organization=organization, name=f"FOCUS {rows} rows", kind="focus", config={}
    )
    return provider.id


def _child_import(provider_id: int, path: str) -> None:
    """Runs in a child process: one import, its time and this process's peak RSS."""
    from costs.services.sync import cost_records_sync
    from providers.models import Provider

    provider = Provider.objects.get(pk=provider_id)
    started = time.perf_counter()
    outcome = cost_records_sync(provider=provider, source_file=path)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "seconds": seconds, "peak_mib": peak_kib / 1024, "rows_read": outcome.rows_read,
        "records": outcome.records_written, "changed": outcome.changed,
    }))


def _import(env: dict[str, str], provider_id: int, path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(provider_id), str(path)],
        env=env, check=True, capture_output=True, text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _raw_copy(url: str, path: Path) -> float:
    """Seconds ``psql \\copy`` takes to load the file into an unindexed TEXT table."""
    header = path.open().readline().strip().split(",")
    columns = ", ".join(f'"{name}" text' for name in header)
    table = "bench_raw_copy"
    subprocess.run(["psql", url, "-q", "-c", f"DROP TABLE IF EXISTS {table}",
                    "-c", f"CREATE TABLE {table} ({columns})"], check=True)
    started = time.perf_counter()
    subprocess.run(["psql", url, "-q", "-c",
                    f"\\copy {table} FROM '{path}' WITH (FORMAT csv, HEADER true)"], check=True)
    seconds = time.perf_counter() - started
    subprocess.run(["psql", url, "-q", "-c", f"DROP TABLE {table}"], check=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _django({})
        _child_import(int(args.child[0]), args.child[1])
        return

    url = os.environ.get("DATABASE_URL") or DEFAULT_URL
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    env = _environment(url, workdir)
    ensure_database(url)
    _django(env)
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)

    results = []
    try:
        for rows in args.rows:
            path = workdir / f"focus-{rows}.csv"
            started = time.perf_counter()
            write_focus_csv(path, rows)
            print(f"generated {rows:,} rows ({path.stat().st_size / 2**20:,.0f} MiB) in "
                  f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
            copy_seconds = _raw_copy(url, path)
            provider_id = _bench_provider(rows)
            first = _import(env, provider_id, path)
            again = _import(env, provider_id, path)
            assert first["rows_read"] == rows and first["changed"], first
            assert not again["changed"], again
            results.append((rows, path.stat().st_size, first, again, copy_seconds))
            path.unlink()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _print_table(results)


def _print_table(results: list) -> None:
    print("| rows | file | import | rows/s | peak RSS | daily records | `\\copy` raw | "
          "import / `\\copy` | unchanged re-run |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rows, size, first, again, copy_seconds in results:
        print(
            f"| {rows:,} | {size / 2**20:,.0f} MiB | {first['seconds']:.1f} s | "
            f"{rows / first['seconds']:,.0f} | {first['peak_mib']:,.0f} MiB | "
            f"{first['records']:,} | {copy_seconds:.1f} s | "
            f"{first['seconds'] / copy_seconds:.2f}x | {again['seconds']:.1f} s "
            f"({again['peak_mib']:,.0f} MiB) |"
        )


if __name__ == "__main__":
    main()
