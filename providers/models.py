"""A connected billing source of an organization."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

import numpy as np
from django.db import models

from providers.crypto import decrypt_json, encrypt_json

Span = tuple[date, date]  # first and last day, both included


def spans_merged(spans: Iterable[Span]) -> list[Span]:
    """``spans`` sorted, with those that overlap or touch (one ends the day before the
    next starts) joined into one."""
    merged: list[Span] = []
    for first, last in sorted(spans):
        if merged and first <= merged[-1][1] + timedelta(days=1):
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


class Provider(models.Model):
    """One billing source: an AWS account, a GCP billing export, an Azure subscription or a
    FOCUS export location. ``config`` holds non-secret settings (validated per kind in
    ``providers.configs``); credentials are encrypted at rest and never leave the server."""

    class Kind(models.TextChoices):
        AWS = "aws", "AWS"
        GCP = "gcp", "Google Cloud"
        AZURE = "azure", "Azure"
        FOCUS = "focus", "FOCUS export"

    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="providers"
    )
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    config = models.JSONField(default=dict, blank=True)
    credentials_encrypted = models.TextField(blank=True, default="", editable=False)
    is_active = models.BooleanField(default=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    # The latest span of synced days: the last window and those that touched it (a later
    # window that does not touch it replaces it, an earlier one is left out). A sync after
    # a pause resumes from its end.
    coverage_start = models.DateField(null=True, blank=True)
    coverage_end = models.DateField(null=True, blank=True)
    # Every span of days syncs have delivered, coverage included: [[first, last], ...] as
    # ISO dates, sorted and merged. After a pause in syncing, the days synced before it
    # stay synced (a day there without records is still a zero-spend day). The database
    # default serves inserts that do not know the column (the release before, during a
    # deploy; tests that migrate back to an older state).
    synced_spans = models.JSONField(default=list, db_default=[], blank=True, editable=False)
    # Bumped whenever a sync changes this provider's records; caches key on it.
    data_version = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"], name="provider_unique_org_name"
            )
        ]

    def __str__(self) -> str:
        return self.name

    def synced_days(self) -> list[Span]:
        """The spans of days syncs delivered, merged: ``synced_spans`` and the coverage
        (a coverage set without a sync, e.g. by the forecast's backtest, counts too)."""
        spans = [(date.fromisoformat(first), date.fromisoformat(last))
                 for first, last in self.synced_spans]
        if self.coverage_start and self.coverage_end:
            spans.append((self.coverage_start, self.coverage_end))
        return spans_merged(spans)

    def synced_spans_with(self, first: date, last: date) -> list[list[str]]:
        """``synced_spans`` once the days ``first..last`` have been synced too."""
        merged = spans_merged([*self.synced_days(), (first, last)])
        return [[start.isoformat(), end.isoformat()] for start, end in merged]

    def synced_mask(self, first_day: date, n_days: int) -> np.ndarray:
        """For each of the ``n_days`` days from ``first_day``, whether a sync delivered
        it. The one rule of the forecast and the anomaly detector: on a synced day
        without records nothing was spent; on any other day without records the data
        are missing."""
        mask = np.zeros(n_days, dtype=bool)
        for first, last in self.synced_days():
            lo = max((first - first_day).days, 0)
            hi = min((last - first_day).days + 1, n_days)
            if lo < hi:
                mask[lo:hi] = True
        return mask

    @property
    def credentials(self) -> dict:
        return decrypt_json(self.credentials_encrypted)

    @credentials.setter
    def credentials(self, value: dict | None) -> None:
        self.credentials_encrypted = encrypt_json(value) if value else ""

    @property
    def has_credentials(self) -> bool:
        return bool(self.credentials_encrypted)
