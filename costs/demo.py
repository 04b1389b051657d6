"""A seeded generator of realistic billing data, for the demo, tests and benchmarks.

Each service of each provider gets a daily base spend, a weekly pattern (quieter
weekends), growth, multiplicative noise, and optionally a monthly charge billed on the 1st
(support plans, reservations, subscriptions). A few genuine spikes are injected and
returned as labels, so detectors and forecasters can be scored against the truth.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

QUANTUM = Decimal("0.0001")


@dataclass(frozen=True)
class ServiceSpec:
    service: str
    regions: tuple[str, ...]
    base: float  # daily spend at the start, per region
    weekend_factor: float = 0.75  # Saturday/Sunday spend relative to weekdays
    growth_per_year: float = 0.25
    noise: float = 0.06  # sigma of the multiplicative log-normal noise
    monthly_charge: float = 0.0  # billed on the 1st of each month instead of daily usage


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    kind: str
    account: str
    services: tuple[ServiceSpec, ...]


@dataclass(frozen=True)
class DemoRow:
    provider: str
    day: date
    service: str
    region: str
    account: str
    billed: Decimal
    effective: Decimal
    currency: str = "USD"
    charge_frequency: str = "Usage-Based"


@dataclass(frozen=True)
class Spike:
    """An injected anomaly: ``extra`` was added on top of the normal spend of that day."""

    provider: str
    service: str
    region: str
    day: date
    extra: Decimal


@dataclass
class DemoDataset:
    start: date
    end: date
    rows: list[DemoRow] = field(default_factory=list)
    spikes: list[Spike] = field(default_factory=list)


_US = ("us-east-1", "us-west-2")
_EU = ("eu-west-1", "eu-central-1")
_GLOBAL = ("global",)

DEFAULT_PROVIDERS: tuple[ProviderSpec, ...] = (
    ProviderSpec(
        "AWS Production", "aws", "123456789012",
        (
            ServiceSpec("Amazon Elastic Compute Cloud", _US + _EU, 180.0, 0.8, 0.30, 0.05),
            ServiceSpec("Amazon Simple Storage Service", _US + _EU, 42.0, 0.97, 0.35, 0.03),
            ServiceSpec("Amazon Relational Database Service", _US, 95.0, 0.95, 0.20, 0.03),
            ServiceSpec("AWS Lambda", _US, 14.0, 0.55, 0.45, 0.12),
            ServiceSpec("Amazon CloudFront", _GLOBAL, 30.0, 0.7, 0.25, 0.10),
            ServiceSpec("Amazon DynamoDB", _US, 22.0, 0.8, 0.30, 0.08),
            ServiceSpec("Amazon Elastic Kubernetes Service", _US + _EU, 9.6, 1.0, 0.10, 0.01),
            ServiceSpec("Elastic Load Balancing", _US + _EU, 12.0, 0.85, 0.20, 0.05),
            ServiceSpec("AmazonCloudWatch", _US, 8.0, 0.9, 0.30, 0.07),
            ServiceSpec("Amazon Simple Queue Service", _US, 2.5, 0.6, 0.40, 0.15),
            ServiceSpec("Amazon Route 53", _GLOBAL, 1.8, 0.9, 0.05, 0.05),
            ServiceSpec("Amazon ElastiCache", _US, 26.0, 1.0, 0.15, 0.02),
            ServiceSpec("AWS Support (Business)", _GLOBAL, 0.0, monthly_charge=1450.0),
            ServiceSpec("Savings Plans for AWS Compute usage", _GLOBAL, 0.0, monthly_charge=2200.0),
        ),
    ),
    ProviderSpec(
        "GCP Analytics", "gcp", "analytics-prod-4411",
        (
            ServiceSpec("Compute Engine", ("us-central1", "europe-west1"), 120.0, 0.8, 0.25, 0.06),
            ServiceSpec("BigQuery", ("US",), 85.0, 0.45, 0.50, 0.18),
            ServiceSpec("Cloud Storage", ("us-central1", "europe-west1"), 28.0, 0.97, 0.35, 0.03),
            ServiceSpec("Cloud SQL", ("us-central1",), 46.0, 0.95, 0.15, 0.03),
            ServiceSpec("Kubernetes Engine", ("us-central1",), 7.3, 1.0, 0.10, 0.01),
            ServiceSpec("Cloud Run", ("us-central1",), 6.0, 0.6, 0.60, 0.14),
            ServiceSpec("Cloud Pub/Sub", ("us-central1",), 4.5, 0.7, 0.40, 0.10),
            ServiceSpec("Networking", _GLOBAL, 18.0, 0.75, 0.30, 0.08),
            ServiceSpec("Cloud Logging", _GLOBAL, 5.0, 0.85, 0.25, 0.07),
            ServiceSpec("Support", _GLOBAL, 0.0, monthly_charge=500.0),
        ),
    ),
    ProviderSpec(
        "Azure Corp", "azure", "6f1c2a7e-1b2d-4c3e-9f00-1a2b3c4d5e6f",
        (
            ServiceSpec("Virtual Machines", ("eastus", "westeurope"), 75.0, 0.7, 0.15, 0.06),
            ServiceSpec("Storage", ("eastus", "westeurope"), 19.0, 0.97, 0.25, 0.03),
            ServiceSpec("SQL Database", ("eastus",), 38.0, 0.9, 0.10, 0.03),
            ServiceSpec("Azure Kubernetes Service", ("eastus",), 4.8, 1.0, 0.05, 0.01),
            ServiceSpec("Azure App Service", ("westeurope",), 16.0, 0.8, 0.20, 0.05),
            ServiceSpec("Functions", ("eastus",), 3.0, 0.5, 0.50, 0.15),
            ServiceSpec("Azure Cosmos DB", ("eastus",), 21.0, 0.85, 0.30, 0.06),
            ServiceSpec("Bandwidth", _GLOBAL, 9.0, 0.7, 0.25, 0.10),
            ServiceSpec("Azure Monitor", _GLOBAL, 6.0, 0.9, 0.20, 0.06),
            ServiceSpec("Reserved VM Instances", _GLOBAL, 0.0, monthly_charge=900.0),
        ),
    ),
)


def _q(value: float) -> Decimal:
    return Decimal(repr(round(value, 4))).quantize(QUANTUM)


def generate(
    *,
    seed: int = 0,
    end: date | None = None,
    days: int = 400,
    providers: tuple[ProviderSpec, ...] = DEFAULT_PROVIDERS,
    spikes: int = 4,
    spike_factor: tuple[float, float] = (2.5, 5.0),
    spike_first_day: int = 28,
    spike_min_base: float = 0.0,
) -> DemoDataset:
    """Daily rows for ``days`` days ending at ``end`` (default: yesterday, UTC).

    ``spikes`` random (provider, usage service, day) triples get ``spike_factor`` times
    their normal spend, from day ``spike_first_day`` on and never in the last 7 days (so a
    forecast's recent history is clean unless a caller injects more); only services with a
    daily ``base`` of at least ``spike_min_base`` are chosen."""
    rng = random.Random(seed)
    end = end or date.today() - timedelta(days=1)
    start = end - timedelta(days=days - 1)
    dataset = DemoDataset(start=start, end=end)

    usage = [
        (p, s)
        for p in providers
        for s in p.services
        if not s.monthly_charge and s.base >= spike_min_base
    ]
    chosen: dict[tuple[str, str, date], float] = {}
    for _ in range(spikes):
        provider, spec = rng.choice(usage)
        day = start + timedelta(
            days=rng.randrange(spike_first_day, max(spike_first_day + 1, days - 7))
        )
        chosen[(provider.name, spec.service, day)] = rng.uniform(*spike_factor)

    for provider in providers:
        for spec in provider.services:
            # Each service has its own phase of growth noise, so series are not copies.
            wobble_phase = rng.uniform(0, 2 * math.pi)
            for region in spec.regions:
                region_scale = rng.uniform(0.6, 1.4)
                for offset in range(days):
                    day = start + timedelta(days=offset)
                    years = offset / 365.0
                    if spec.monthly_charge:
                        if day.day != 1:
                            continue
                        amount = spec.monthly_charge * (1 + spec.growth_per_year * years * 0.2)
                        frequency = "Recurring"
                    else:
                        weekday = day.weekday() >= 5
                        amount = (
                            spec.base
                            * region_scale
                            * (1 + spec.growth_per_year * years)
                            * (spec.weekend_factor if weekday else 1.0)
                            * (1 + 0.03 * math.sin(2 * math.pi * offset / 91 + wobble_phase))
                            * math.exp(rng.gauss(0, spec.noise))
                        )
                        frequency = "Usage-Based"
                    factor = chosen.get((provider.name, spec.service, day))
                    billed = _q(amount)
                    if factor and region == spec.regions[0]:
                        extra = _q(amount * (factor - 1))
                        billed += extra
                        dataset.spikes.append(
                            Spike(provider.name, spec.service, region, day, extra)
                        )
                    effective = billed if frequency == "Usage-Based" else _q(float(billed) * 0.97)
                    dataset.rows.append(
                        DemoRow(
                            provider=provider.name,
                            day=day,
                            service=spec.service,
                            region=region,
                            account=provider.account,
                            billed=billed,
                            effective=effective,
                            charge_frequency=frequency,
                        )
                    )
    return dataset
