"""Days a provider never synced are missing to the anomaly detector, not zero spend; days
it synced without records stay zero-spend days."""

from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest

from costs.models import Anomaly
from costs.services.anomalies import (
    Thresholds,
    anomalies_detect,
    anomaly_chart_series,
    detect_arrays,
    expected_range,
    material_mask,
    provider_series,
)
from costs.services.sync import replace_window
from tests.costs.test_anomalies import START, flagged, weekly_series
from tests.factories import AnomalyFactory, ProviderFactory

DAYS = 260
GAP = range(140, 160)  # 20 days nothing synced (or, in the control, synced without records)
TODAY = START + timedelta(days=DAYS)
FIRST_AFTER = START + timedelta(days=GAP.stop)


def day(index: int):
    return START + timedelta(days=index)


def spend(spike_on: int | None = None) -> dict[str, np.ndarray]:
    ec2 = weekly_series(days=DAYS, base=400, seed=1)
    if spike_on is not None:
        ec2[spike_on] *= 3
    series = {"EC2": ec2, "S3": weekly_series(days=DAYS, base=60, weekend=1.0, seed=2)}
    for values in series.values():
        values[GAP.start : GAP.stop] = 0.0  # no records on those days
    return series


def sync(provider, series: dict[str, np.ndarray], first: int, last: int) -> None:
    """One sync of days ``first..last`` through the real write path (records and coverage)."""
    totals = {
        (day(i), service, "us-east-1", "", "USD"): [Decimal(f"{v:.4f}"), Decimal(f"{v:.4f}")]
        for service, values in series.items()
        for i, v in enumerate(values)
        if first <= i <= last and v
    }
    replace_window(provider=provider, date_from=day(first), date_to=day(last), totals=totals)


def gapped_provider(org, series):
    """Synced up to the gap, then again from after it: the second window does not touch
    the first, so the coverage is the second one and the gap's days were never synced."""
    provider = ProviderFactory(organization=org)
    sync(provider, series, 0, GAP.start - 1)
    sync(provider, series, GAP.stop, DAYS - 1)
    assert (provider.coverage_start, provider.coverage_end) == (FIRST_AFTER, day(DAYS - 1))
    return provider


def detect(provider):
    anomalies_detect(provider=provider, start=day(GAP.start), end=day(DAYS - 1), today=TODAY)
    return {(a.service, a.date) for a in Anomaly.objects.filter(provider=provider)}


# -- the pure detector ------------------------------------------------------------------


def test_expected_range_skips_missing_days_where_zeros_raise_false_alarms():
    values = weekly_series(days=DAYS)
    zeros, missing = values.copy(), values.copy()
    zeros[GAP.start : GAP.stop] = 0.0
    missing[GAP.start : GAP.stop] = np.nan
    assert flagged(zeros)[0] & set(range(GAP.stop, GAP.stop + 7))  # the old reading
    days, bands = flagged(missing)
    assert days == set()
    assert not bands.evaluated[0, GAP.start : GAP.stop].any()  # nothing to judge there
    judged_from = GAP.stop + 4  # the level now needs 4 of the last 7 days
    assert not bands.evaluated[0, GAP.stop : judged_from].any()
    assert bands.evaluated[0, judged_from:].all()
    reference = expected_range(values, START).expected[0, judged_from:]
    np.testing.assert_allclose(bands.expected[0, judged_from:], reference, rtol=0.05)


def test_expected_range_finds_a_spike_soon_after_missing_days():
    values = weekly_series(days=DAYS, weekend=0.3)
    values[GAP.start : GAP.stop] = np.nan
    values[GAP.stop + 6] *= 2.5
    assert flagged(values)[0] == {GAP.stop + 6}


def test_material_mask_averages_the_days_present():
    total = np.full(DAYS, 1000.0)
    services = np.vstack([np.full(DAYS, 50.0), np.full(DAYS, 6.0)])
    total[GAP.start : GAP.stop] = np.nan
    services[:, GAP.start : GAP.stop] = np.nan
    mask = material_mask(services, total, min_daily=5.0)
    assert mask[0, 56:].all() and not mask[1].any()  # 6 < 1% of 1000, gap or not


# -- the service ------------------------------------------------------------------------


@pytest.mark.django_db
def test_anomalies_detect_reads_an_unsynced_gap_as_missing(org):
    provider = gapped_provider(org, spend())
    assert detect(provider) == set()
    series = provider_series(provider=provider, start=day(GAP.start), end=day(DAYS - 1))
    gap = [series.index(day(i)) for i in GAP]
    assert np.isnan(series.total[gap]).all()
    assert all(np.isnan(values[gap]).all() for values in series.services.values())
    # Not quiet for want of judging: the days after the gap have an expected range again.
    bands = expected_range(series.total, series.start)
    assert bands.evaluated[0, series.index(FIRST_AFTER + timedelta(days=4)) :].all()


@pytest.mark.django_db
def test_anomalies_detect_keeps_synced_days_without_records_as_zero_spend(org):
    series_in = spend()
    provider = ProviderFactory(organization=org)
    sync(provider, series_in, 0, DAYS - 1)  # the gap's days were synced: nothing was spent
    found = detect(provider)
    series = provider_series(provider=provider, start=day(GAP.start), end=day(DAYS - 1))
    gap = [series.index(day(i)) for i in GAP]
    assert (series.total[gap] == 0).all()
    # Exactly what the detector makes of the zero-filled series: the days spend came back
    # are above a range learnt on zeros.
    findings = detect_arrays(
        start=series.start, total=series.total, services=series.services,
        window=(series.index(day(GAP.start)), series.index(day(DAYS - 1))),
        thresholds=Thresholds(),
    )
    assert found == {(f.service, series.day(f.index)) for f in findings}
    assert ("", FIRST_AFTER) in found


@pytest.mark.django_db
def test_anomalies_detect_finds_a_spike_after_an_unsynced_gap(org):
    spike = GAP.stop + 6
    provider = gapped_provider(org, spend(spike_on=spike))
    assert detect(provider) == {("", day(spike)), ("EC2", day(spike))}


@pytest.mark.django_db
def test_anomaly_chart_series_leaves_unsynced_days_out(org):
    provider = gapped_provider(org, spend())
    anomaly = AnomalyFactory(provider=provider, date=FIRST_AFTER + timedelta(days=10))
    points = anomaly_chart_series(anomaly=anomaly, today=TODAY)
    days = [p.day for p in points]
    assert days[0] == anomaly.date - timedelta(days=35) and days[-1] == anomaly.date + timedelta(days=14)
    assert not {day(i) for i in GAP} & set(days)
    assert all(np.isfinite(p.actual) for p in points)
    assert all(p.upper is not None for p in points if p.day >= FIRST_AFTER + timedelta(days=4))
