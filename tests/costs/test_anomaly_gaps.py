"""Days a provider never synced are missing to the anomaly detector, not zero spend; days
it synced without records stay zero-spend days."""

from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest

from costs.models import Anomaly
from costs.services.anomalies import (
    HISTORY_DAYS,
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
LONG_DAYS = 300
LONG_GAP = range(140, 200)  # two months nothing synced (a provider's credentials broken)


def day(index: int):
    return START + timedelta(days=index)


def spend(spike_on: int | None = None, *, days=DAYS, gap=GAP) -> dict[str, np.ndarray]:
    ec2 = weekly_series(days=days, base=400, seed=1)
    if spike_on is not None:
        ec2[spike_on] *= 3
    series = {"EC2": ec2, "S3": weekly_series(days=days, base=60, weekend=1.0, seed=2)}
    for values in series.values():
        values[gap.start : gap.stop] = 0.0  # no records on those days
    return series


def with_charges_on_the_1st(values: np.ndarray, amount: float = 400.0) -> np.ndarray:
    """``values`` plus a charge billed on the 1st of every month (a support plan)."""
    dates = np.datetime64(START) + np.arange(len(values))
    return values + np.where(dates.astype("datetime64[M]").astype("datetime64[D]") == dates, amount, 0.0)


def sync(provider, series: dict[str, np.ndarray], first: int, last: int) -> None:
    """One sync of days ``first..last`` through the real write path (records and coverage)."""
    totals = {
        (day(i), service, "us-east-1", "", "USD"): [Decimal(f"{v:.4f}"), Decimal(f"{v:.4f}")]
        for service, values in series.items()
        for i, v in enumerate(values)
        if first <= i <= last and v
    }
    replace_window(provider=provider, date_from=day(first), date_to=day(last), totals=totals)


def gapped_provider(org, series, *, gap=GAP):
    """Synced up to the gap, then again from after it: the second window does not touch
    the first, so the coverage is the second one and the gap's days were never synced."""
    days = len(series["EC2"])
    provider = ProviderFactory(organization=org)
    sync(provider, series, 0, gap.start - 1)
    sync(provider, series, gap.stop, days - 1)
    assert (provider.coverage_start, provider.coverage_end) == (day(gap.stop), day(days - 1))
    return provider


def detect(provider, *, gap=GAP, days=DAYS):
    anomalies_detect(
        provider=provider, start=day(gap.start), end=day(days - 1), today=day(days)
    )
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


def test_expected_range_judges_again_from_the_fifth_day_after_a_two_month_gap():
    values = weekly_series(days=LONG_DAYS)
    missing = values.copy()
    missing[LONG_GAP.start : LONG_GAP.stop] = np.nan
    days, bands = flagged(missing)
    assert days == set()
    judged_from = LONG_GAP.stop + 4  # the level now needs 4 of the last 7 days
    assert not bands.evaluated[0, LONG_GAP.stop : judged_from].any()
    assert bands.evaluated[0, judged_from:].all()  # not from about the 64th day
    # The weekday effect and the noise scale of the weeks before the gap.
    reference = expected_range(values, START)
    np.testing.assert_allclose(bands.expected[0, judged_from:], reference.expected[0, judged_from:], rtol=0.05)
    np.testing.assert_allclose(bands.upper[0, judged_from:], reference.upper[0, judged_from:], rtol=0.1)


def test_expected_range_finds_a_spike_two_weeks_after_a_two_month_gap():
    values = weekly_series(days=LONG_DAYS, weekend=0.3, seed=3)
    values[LONG_GAP.start : LONG_GAP.stop] = np.nan
    values[LONG_GAP.stop + 13] *= 2.5
    assert flagged(values)[0] == {LONG_GAP.stop + 13}


@pytest.mark.parametrize("length", [45, 60, 90, 97])
def test_expected_range_expects_charges_on_the_1st_whose_last_billings_were_not_synced(length):
    """A gap that took the last two to four billings of a charge on the 1st: the next
    billings are expected from those before the gap, not flagged (a 45-day gap left the
    1st of the second month after it one earlier billing of three, and it was flagged)."""
    gap_end = 246  # 2023-09-05: the gaps take the 1sts of August and September (from 90
    # days July's too, at 97 June's)
    values = with_charges_on_the_1st(weekly_series(days=gap_end + 120, seed=4))
    values[gap_end - length : gap_end] = np.nan
    days, bands = flagged(values)
    assert days == set()
    firsts = [i for i in range(gap_end, len(values)) if day(i).day == 1]
    assert len(firsts) == 4
    assert bands.evaluated[0, firsts].all()
    np.testing.assert_allclose(bands.expected[0, firsts], values[firsts], rtol=0.1)


def test_expected_range_reads_no_further_back_than_history_days():
    """The service reads ``HISTORY_DAYS`` before the days it judges: no statistic may
    reach further back, missing days or not."""
    values = with_charges_on_the_1st(weekly_series(days=420, base=5.0, seed=5), amount=40.0)
    values[150:210] = np.nan
    values[265:280] = np.nan
    whole = expected_range(values, START)
    for cut in (60, 120, 180, 230):
        part = expected_range(values[cut:], START + timedelta(days=cut))
        for band in ("expected", "lower", "upper"):
            np.testing.assert_allclose(
                getattr(part, band)[0, HISTORY_DAYS:], getattr(whole, band)[0, cut + HISTORY_DAYS :],
                rtol=1e-9, err_msg=f"{band}, series from day {cut}",
            )


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
def test_anomalies_detect_finds_a_spike_two_weeks_after_a_two_month_gap(org):
    spike = LONG_GAP.stop + 13
    provider = gapped_provider(
        org, spend(spike_on=spike, days=LONG_DAYS, gap=LONG_GAP), gap=LONG_GAP
    )
    assert detect(provider, gap=LONG_GAP, days=LONG_DAYS) == {("", day(spike)), ("EC2", day(spike))}


@pytest.mark.django_db
def test_anomalies_detect_judges_a_steady_provider_soon_after_a_two_month_gap(org):
    provider = gapped_provider(org, spend(days=LONG_DAYS, gap=LONG_GAP), gap=LONG_GAP)
    assert detect(provider, gap=LONG_GAP, days=LONG_DAYS) == set()
    series = provider_series(provider=provider, start=day(LONG_GAP.start), end=day(LONG_DAYS - 1))
    bands = expected_range(series.total, series.start)
    assert bands.evaluated[0, series.index(day(LONG_GAP.stop + 4)) :].all()


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
