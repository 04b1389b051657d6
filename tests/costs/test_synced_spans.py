"""A provider keeps every span of days its syncs delivered: after a pause in syncing, the
days synced before it stay known, so a day there without records is a zero-spend day for
the forecast and the anomaly detector, while the days of the pause are missing."""

from datetime import date, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from costs.services.anomalies import provider_series
from costs.services.anomalies.service import HISTORY_DAYS
from costs.services.forecast import service as forecast_service
from costs.services.sync import replace_window
from providers.models import Provider
from tests.factories import ProviderFactory
from tests.migrations import migrate_to, migrate_to_latest

# Synced until the credentials broke, nothing for May, synced again from mid-June.
A = (date(2025, 6, 1), date(2026, 4, 30))
B = (date(2026, 6, 16), date(2026, 11, 25))
ZERO_DAY = date(2026, 4, 20)  # inside A: synced, nothing spent
GAP = pd.date_range(A[1] + timedelta(days=1), B[0] - timedelta(days=1))


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def sync(provider, first: date, last: date, *, skip=()) -> None:
    """One sync of ``first..last`` through the real write path: $100 a day of EC2,
    except on the days in ``skip`` (no records: nothing spent)."""
    totals = {
        (day, "EC2", "us-east-1", "", "USD"): [Decimal(100), Decimal(100)]
        for day in days(first, last)
        if day not in skip
    }
    replace_window(provider=provider, date_from=first, date_to=last, totals=totals)


def spans(*pairs: tuple[date, date]) -> list[list[str]]:
    return [[first.isoformat(), last.isoformat()] for first, last in pairs]


@pytest.fixture
def paused(org):
    """Window A synced (one day of it without spend), a pause, then window B."""
    provider = ProviderFactory(organization=org)
    sync(provider, *A, skip={ZERO_DAY})
    sync(provider, *B)
    return provider


@pytest.mark.django_db
def test_synced_spans_a_sync_of_the_gap_joins_the_coverage_across_it(paused):
    # The coverage is the latest span: filling the pause joins A, the pause and B (it
    # used to stay pause..B, as if A had never been synced).
    sync(paused, GAP[0].date(), GAP[-1].date())
    assert paused.synced_spans == spans((A[0], B[1]))
    assert (paused.coverage_start, paused.coverage_end) == (A[0], B[1])
    # An earlier window that touches nothing is kept, and leaves the coverage alone.
    sync(paused, date(2024, 1, 1), date(2024, 1, 31))
    assert paused.synced_spans == spans((date(2024, 1, 1), date(2024, 1, 31)), (A[0], B[1]))
    assert (paused.coverage_start, paused.coverage_end) == (A[0], B[1])


@pytest.mark.django_db
def test_synced_spans_keep_an_older_window_after_a_later_one_that_does_not_touch(paused):
    assert paused.synced_spans == spans(A, B)
    # The coverage means what it always meant: the later window replaced it.
    assert (paused.coverage_start, paused.coverage_end) == B


@pytest.mark.django_db
def test_synced_spans_merge_windows_that_touch_or_overlap(paused):
    may = (date(2026, 5, 1), date(2026, 5, 10))  # starts the day after A ends
    sync(paused, *may)
    assert paused.synced_spans == spans((A[0], may[1]), B)
    assert (paused.coverage_start, paused.coverage_end) == B  # earlier: left out of it

    sync(paused, date(2026, 5, 5), date(2026, 6, 20))  # overlaps both spans
    assert paused.synced_spans == spans((A[0], B[1]))
    assert (paused.coverage_start, paused.coverage_end) == (A[0], B[1])  # one span now

    sync(paused, date(2025, 1, 1), date(2025, 1, 31))  # long before: a span of its own
    assert paused.synced_spans == spans((date(2025, 1, 1), date(2025, 1, 31)), (A[0], B[1]))
    assert (paused.coverage_start, paused.coverage_end) == (A[0], B[1])  # one span now


@pytest.mark.django_db
def test_synced_spans_a_sync_of_days_already_synced_changes_nothing(paused):
    sync(paused, *A, skip={ZERO_DAY})
    assert paused.synced_spans == spans(A, B)


@pytest.mark.django_db
def test_synced_mask_is_the_spans_and_the_coverage(org):
    provider = ProviderFactory(organization=org, synced_spans=spans(
        (date(2026, 1, 2), date(2026, 1, 3)), (date(2026, 1, 6), date(2026, 1, 6))))
    mask = provider.synced_mask(date(2026, 1, 1), 8)
    assert mask.tolist() == [False, True, True, False, False, True, False, False]
    # A coverage set without a sync (the forecast's backtest sets one) is synced too.
    provider.coverage_start, provider.coverage_end = date(2026, 1, 8), date(2026, 2, 1)
    assert provider.synced_mask(date(2026, 1, 1), 8)[-1]
    assert not provider.synced_mask(date(2025, 12, 1), 30).any()


@pytest.mark.django_db
def test_provider_series_reads_a_day_without_records_in_an_older_span_as_zero(paused):
    # History from 20 days before the zero day to the last day synced.
    start = ZERO_DAY - timedelta(days=20) + timedelta(days=HISTORY_DAYS)
    series = provider_series(provider=paused, start=start, end=B[1])
    assert series.start == ZERO_DAY - timedelta(days=20)
    assert series.total[series.index(ZERO_DAY)] == 0.0
    assert series.services["EC2"][series.index(ZERO_DAY)] == 0.0
    gap = [series.index(day.date()) for day in GAP]
    assert np.isnan(series.total[gap]).all()
    assert np.isnan(series.services["EC2"][gap]).all()
    synced = [series.index(day) for day in days(series.start, A[1]) + days(*B)]
    assert np.isfinite(series.total[synced]).all()


@pytest.mark.django_db
def test_forecast_history_counts_a_day_without_records_in_an_older_span_as_zero(org, paused):
    total, components = forecast_service._scope_history(
        organization=org, provider=None, providers=[paused], last_day=B[1]
    )
    assert total.index[0] == pd.Timestamp(A[0])  # the first spend
    assert total[pd.Timestamp(ZERO_DAY)] == 0.0  # a known zero, not missing
    assert total[GAP].isna().all()
    known = len(days(*A)) + len(days(*B))
    assert int(total.notna().sum()) == known
    assert int(components[f"{paused.id}:EC2"].notna().sum()) == known


# -- the migration that backfills the spans ---------------------------------------------

# Organizations as they were then too (no aws_external_id column to fill).
BEFORE = [("providers", "0001_initial"), ("accounts", "0001_initial")]
AFTER = [("providers", "0002_provider_synced_spans")]


@pytest.mark.django_db(transaction=True)
def test_synced_spans_migration_backfills_the_coverage():
    try:
        old = migrate_to(BEFORE)
        organization = old.get_model("accounts", "Organization").objects.create(
            name="Migrated", slug="migrated")
        providers = old.get_model("providers", "Provider").objects
        synced = providers.create(organization=organization, name="Synced", kind="aws",
                                  config={}, coverage_start=B[0], coverage_end=B[1])
        never = providers.create(organization=organization, name="Never", kind="aws",
                                 config={})

        new = migrate_to(AFTER)
        migrated = new.get_model("providers", "Provider").objects
        assert migrated.get(pk=synced.pk).synced_spans == spans(B)
        assert migrated.get(pk=never.pk).synced_spans == []
    finally:
        migrate_to_latest()
    # After the backfill, the next sync keeps the coverage's span and adds its own.
    provider = Provider.objects.get(pk=synced.pk)
    sync(provider, *A)
    assert provider.synced_spans == spans(A, B)
