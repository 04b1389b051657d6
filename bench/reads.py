"""Read benchmark: the API's and the admin's reads over a large organization.

    .venv/bin/python bench/reads.py [--per-day 1000 3000] [--days 730] [--repeats 7]

For each size it fills one organization with ``--days`` days of daily cost records up to
today across three providers (``--per-day`` records a day: 50 services, 15 regions and
``per-day / 750 + 1`` accounts per provider; amounts with 12 decimals), and 400
anomalies, by ``COPY`` into emptied tables (how the rows get there is not what is
measured), runs ``VACUUM ANALYZE``, then times each request ``--repeats`` times through
Django's test client (URL routing, authentication, serialization and the queries, no
network): the API as a Bearer-key client, the admin as a superuser; then the forecast's
history read and the organization's first forecast (3 runs). It prints the median and
the slowest time of each.

Database: ``DATABASE_URL`` or postgres://postgres@127.0.0.1:5432/infraaudit_reads_bench,
created and migrated by this script. The numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import time
from datetime import timedelta

from _common import setup_django

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/infraaudit_reads_bench"
ORG = "bench-reads"
PROVIDERS = ["aws-main", "gcp-data", "azure-corp"]
SERVICES = 50
REGIONS = 15
ANOMALIES = 400


def _fill(per_day: int, days: int):
    """The organization, its providers and its records; returns (membership, providers)."""
    from django.db import connection

    from accounts.models import Membership
    from accounts.services import membership_ensure
    from costs.models import Anomaly
    from costs.selectors import utc_today
    from providers.models import Provider

    membership = membership_ensure(org_name=ORG, username=ORG, role=Membership.Role.ADMIN)
    org = membership.organization
    with connection.cursor() as cursor:  # the database is the benchmark's own
        cursor.execute(
            "TRUNCATE costs_costrecord, costs_servicedaytotal, costs_anomaly CASCADE"
        )
    today = utc_today()
    start = today - timedelta(days=days - 1)
    providers = []
    for name in PROVIDERS:
        provider, _ = Provider.objects.update_or_create(
            organization=org, name=name, defaults={"kind": Provider.Kind.FOCUS}
        )
        provider.coverage_start, provider.coverage_end = start, today
        provider.data_version += 1
        provider.save()
        providers.append(provider)

    rng = random.Random(per_day)
    per_provider = per_day // len(providers)
    accounts = max(1, per_provider // (SERVICES * REGIONS) + 1)
    keys = [(s, r, a) for s in range(SERVICES) for r in range(REGIONS) for a in range(accounts)]
    columns = ("organization_id", "provider_id", "day", "billing_period", "service", "region",
               "account", "currency", "billed_amount", "effective_amount")
    copy_sql = f"COPY costs_costrecord ({', '.join(columns)}) FROM STDIN"
    with connection.cursor() as cursor, cursor.copy(copy_sql) as copy:
        for provider in providers:
            chosen = rng.sample(keys, min(per_provider, len(keys)))
            for offset in range(days):
                day = start + timedelta(days=offset)
                buffer = io.StringIO()
                for service, region, account in chosen:
                    amount = rng.lognormvariate(1.0, 1.5)
                    buffer.write(
                        f"{org.id}\t{provider.id}\t{day}\t{day.replace(day=1)}\t"
                        f"{provider.name} service {service:02d}\tregion-{region:02d}\t"
                        f"{account:012d}\tUSD\t{amount:.12f}\t{amount * 0.9:.12f}\n"
                    )
                copy.write(buffer.getvalue())
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE costs_costrecord, costs_servicedaytotal")
    Anomaly.objects.bulk_create(
        Anomaly(
            organization=org, provider=providers[i % len(providers)],
            service=f"{providers[i % len(providers)].name} service {i % SERVICES:02d}",
            date=today - timedelta(days=1 + i // 3), currency="USD",
            expected_amount=100, expected_lower=80, expected_upper=120, actual_amount=300,
            deviation_percent=200, impact_amount=200, severity=Anomaly.Severity.MEDIUM,
        )
        for i in range(ANOMALIES)
    )
    return membership, providers


def _clients(membership):
    from django.contrib.auth import get_user_model
    from django.test import Client

    from accounts.services import api_key_create

    _, raw_key = api_key_create(membership=membership, name="bench-reads")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {raw_key}", HTTP_HOST="localhost")
    user_model = get_user_model()
    staff, _ = user_model.objects.get_or_create(
        username="bench-reads-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    admin = Client(HTTP_HOST="localhost")
    admin.force_login(staff)
    return api, admin


def _requests(providers) -> list[tuple[str, str]]:
    """(client, path) of each request measured."""
    from costs.selectors import utc_today

    month = utc_today().replace(day=1)
    one = providers[0].id
    return [
        ("api", "/api/v1/costs/overview"),
        ("api", f"/api/v1/costs/overview?provider_id={one}"),
        ("api", "/api/v1/costs/trend?days=30&granularity=day&group_by=service"),
        ("api", "/api/v1/costs/trend?days=90&granularity=week&group_by=provider"),
        ("api", "/api/v1/costs/trend?days=365&granularity=month&group_by=region"),
        ("api", "/api/v1/costs/trend?days=365&granularity=day&group_by=service"),
        ("api", "/api/v1/costs/anomalies?days=90"),
        ("api", "/api/v1/costs/anomalies?days=365&status=active"),
        ("admin", "/admin/costs/costrecord/"),
        ("admin", f"/admin/costs/costrecord/?provider__id__exact={one}&billing_period={month}"),
        ("admin", "/admin/costs/costrecord/?q=service+07"),
        ("admin", "/admin/costs/anomaly/"),
    ]


def _time(client, path: str, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, (path, response.status_code, response.content[:300])
    return times


def _history_read(org, repeats: int) -> list[float]:
    """The forecast's read of its whole history (the first forecast's query)."""
    from costs.selectors import daily_component_totals

    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        daily_component_totals(organization=org)
        times.append(time.perf_counter() - started)
    return times


def _first_forecasts(org, repeats: int = 3) -> list[float]:
    """The organization's first forecast (history read, fit, calibration), the cache
    cleared before each; Prophet is loaded before the first."""
    from django.core.cache import cache

    from costs.services.forecast import cost_forecast, usage

    usage.prophet_class()
    times = []
    for _ in range(repeats):
        cache.clear()
        started = time.perf_counter()
        cost_forecast(organization=org, days=30)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-day", type=int, nargs="+", default=[1000, 3000])
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    setup_django(os.environ.get("DATABASE_URL") or DEFAULT_URL)

    from costs.models import CostRecord

    print("| records | client | request | median | slowest |")
    print("|---:|---|---|---:|---:|")
    for per_day in args.per_day:
        started = time.perf_counter()
        membership, providers = _fill(per_day, args.days)
        org = membership.organization
        count = CostRecord.objects.filter(organization=org).count()
        print(f"<!-- {count:,} records filled in {time.perf_counter() - started:.0f} s -->",
              flush=True)
        api, admin = _clients(membership)
        clients = {"api": api, "admin": admin}
        for name, path in _requests(providers):
            clients[name].get(path)  # warm-up: URL conf, middleware, the query plan
            times = _time(clients[name], path, args.repeats)
            print(f"| {count:,} | {name} | `{path}` | {1000 * statistics.median(times):.0f} ms "
                  f"| {1000 * max(times):.0f} ms |", flush=True)
        times = _history_read(org, args.repeats)
        print(f"| {count:,} | service | forecast history read (`daily_component_totals`, "
              f"{args.days} days) | {1000 * statistics.median(times):.0f} ms "
              f"| {1000 * max(times):.0f} ms |", flush=True)
        times = _first_forecasts(org)
        print(f"| {count:,} | service | first forecast (`cost_forecast`, 30 days, cache "
              f"cleared; {len(times)} runs) | {1000 * statistics.median(times):.0f} ms "
              f"| {1000 * max(times):.0f} ms |", flush=True)


if __name__ == "__main__":
    main()
