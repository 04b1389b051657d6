"""Speed of the forecast on this machine: the demo's three providers with 730 days of
history in the database, the first forecast of the organization (fit and calibration,
``FIRST_REPEATS`` times with the cache cleared) and cached forecasts, through the
service and through the HTTP API."""

from __future__ import annotations

import os
import statistics
import time
from datetime import timedelta

from django.core.cache import cache
from django.test import Client

from accounts.models import Membership
from accounts.services import api_key_create, membership_ensure
from costs.demo import generate
from costs.models import CostRecord
from costs.selectors import utc_today
from costs.services.forecast import cost_forecast, usage
from providers.models import Provider

FIRST_REPEATS = 3


def _speed_scope(stdout):
    """The demo's three providers with 730 days of history up to yesterday, in the
    database as a sync would leave them; returns (membership, providers by name)."""
    membership = membership_ensure(
        org_name="bench-forecast", username="bench-forecast", role=Membership.Role.ADMIN
    )
    org = membership.organization
    dataset = generate(seed=7, days=730, end=utc_today() - timedelta(days=1))
    CostRecord.objects.filter(organization=org).delete()
    providers = {}
    for spec_name in sorted({row.provider for row in dataset.rows}):
        provider, _ = Provider.objects.update_or_create(
            organization=org, name=spec_name, defaults={"kind": Provider.Kind.FOCUS}
        )
        provider.coverage_start, provider.coverage_end = dataset.start, dataset.end
        provider.data_version += 1  # what a sync that writes these records does
        provider.save()
        providers[spec_name] = provider
    CostRecord.objects.bulk_create(
        (
            CostRecord(
                organization=org, provider=providers[row.provider], day=row.day,
                billing_period=row.day.replace(day=1),
                service=row.service, region=row.region, account=row.account,
                currency=row.currency, billed_amount=row.billed,
                effective_amount=row.effective,
            )
            for row in dataset.rows
        ),
        batch_size=5000,
    )
    stdout.write(f"speed: {len(dataset.rows)} records, 3 providers, 730 days of history")
    return membership, providers


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _first_forecasts(org) -> tuple[list[float], int]:
    """First forecasts of the organization (the cache cleared before each) and the
    Prophet fits one of them takes."""
    firsts, fits = [], 0
    for _ in range(FIRST_REPEATS):
        cache.clear()
        fits_before = usage.FIT_COUNTER["fits"]
        firsts.append(_timed(lambda: cost_forecast(organization=org, days=30)))
        fits = usage.FIT_COUNTER["fits"] - fits_before
    return firsts, fits


def _http_forecasts(membership) -> tuple[float, list[float]]:
    """The process's first (warm-up) request and 21 cached ones through the API."""
    _, raw_key = api_key_create(membership=membership, name="bench")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw_key}", HTTP_HOST="localhost")

    def get(days):
        response = client.get(f"/api/v1/costs/forecast?days={days}")
        assert response.status_code == 200, response.content

    warm_up = _timed(lambda: get(30))  # loads the URL conf and middleware
    return warm_up, [_timed(lambda d=days: get(d)) for days in (30, 60, 90) * 7]


def speed_rows(stdout) -> list[str]:
    """Speed rows: first and cached forecasts of a 2-year organization scope."""
    membership, providers = _speed_scope(stdout)
    org = membership.organization
    import_seconds = _timed(usage.prophet_class)
    load = os.getloadavg()[0]
    firsts, fits = _first_forecasts(org)
    cached = [_timed(lambda d=days: cost_forecast(organization=org, days=d))
              for days in (30, 60, 90) * 7]
    warm_up, http = _http_forecasts(membership)
    one_provider = next(iter(providers.values()))
    first_provider = _timed(
        lambda: cost_forecast(organization=org, provider=one_provider, days=30)
    )
    return [
        "| measurement | time |",
        "|---|---|",
        f"| Prophet import and model load (once per process) | {import_seconds:.2f} s |",
        f"| first forecast, organization (3 providers, 730 days, {fits} Prophet fits), "
        f"median / max of {len(firsts)}, load average {load:.2f} at the start "
        f"| {statistics.median(firsts):.2f} s / {max(firsts):.2f} s "
        f"({', '.join(f'{t:.2f}' for t in firsts)}) |",
        f"| first forecast, one provider | {first_provider:.2f} s |",
        f"| cached forecast, service (median of {len(cached)}) "
        f"| {1000 * statistics.median(cached):.1f} ms |",
        f"| cached forecast, HTTP GET /api/v1/costs/forecast (median / max of {len(http)}) "
        f"| {1000 * statistics.median(http):.1f} ms / {1000 * max(http):.1f} ms |",
        f"| the process's first HTTP request (loads URL conf and middleware, cached fit) "
        f"| {1000 * warm_up:.1f} ms |",
    ]
