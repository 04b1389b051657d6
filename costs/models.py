"""Daily cost records, sync jobs and anomalies."""

from __future__ import annotations

from django.conf import settings
from django.db import models

MONEY = {"max_digits": 30, "decimal_places": 12}


class CostRecord(models.Model):
    """One provider's spend on one UTC day for one (service, region, account, currency).

    The natural key is unique, so a sync that replaces a window of days can never leave
    two rows for the same thing. ``region`` is ``"global"`` for charges without a region.
    """

    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="cost_records"
    )
    provider = models.ForeignKey(
        "providers.Provider", on_delete=models.CASCADE, related_name="cost_records"
    )
    day = models.DateField()
    service = models.CharField(max_length=200)
    region = models.CharField(max_length=64)
    account = models.CharField(max_length=128, blank=True, default="")
    currency = models.CharField(max_length=3)
    billed_amount = models.DecimalField(**MONEY)
    effective_amount = models.DecimalField(**MONEY)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "day", "service", "region", "account", "currency"],
                name="costrecord_natural_key",
            )
        ]
        indexes = [
            models.Index(fields=["organization", "day"], name="costrecord_org_day"),
            models.Index(fields=["provider", "day"], name="costrecord_provider_day"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.service} {self.region} {self.billed_amount} {self.currency}"


class SyncJob(models.Model):
    """A request to sync (or import into) one or more providers; one result per provider."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        PARTIAL = "partial"
        FAILED = "failed"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)

    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="sync_jobs"
    )
    kind = models.CharField(max_length=32, default="cost_sync")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # Explicit window asked for (null: each provider's default re-pull window).
    date_from = models.DateField(null=True, blank=True)
    date_to = models.DateField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["organization", "status"], name="syncjob_org_status")]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.status})"


class SyncJobProvider(models.Model):
    """The result of one provider within a job."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    job = models.ForeignKey(SyncJob, on_delete=models.CASCADE, related_name="results")
    provider = models.ForeignKey(
        "providers.Provider", on_delete=models.CASCADE, related_name="sync_results"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    rows_read = models.PositiveBigIntegerField(default=0)
    records_written = models.PositiveBigIntegerField(default=0)
    date_from = models.DateField(null=True, blank=True)
    date_to = models.DateField(null=True, blank=True)
    changed = models.BooleanField(default=False)
    error = models.TextField(blank=True, default="")
    # For uploads: the stored file this result imports (deleted after import).
    source_file = models.CharField(max_length=1024, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["provider__name"]
        constraints = [
            models.UniqueConstraint(fields=["job", "provider"], name="syncjobprovider_unique")
        ]

    def __str__(self) -> str:
        return f"{self.provider} in job #{self.job_id}: {self.status}"


class Anomaly(models.Model):
    """A billing day whose spend exceeded its expected range, for a provider (service "")
    or for one of its services. One row per (provider, service, date)."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        DISMISSED = "dismissed"

    class Severity(models.TextChoices):
        LOW = "low"
        MEDIUM = "medium"
        HIGH = "high"
        CRITICAL = "critical"

    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="anomalies"
    )
    provider = models.ForeignKey(
        "providers.Provider", on_delete=models.CASCADE, related_name="anomalies"
    )
    # "" for the provider's daily total (shown as null in the API).
    service = models.CharField(max_length=200, blank=True, default="")
    date = models.DateField()
    actual_amount = models.DecimalField(**MONEY)
    expected_amount = models.DecimalField(**MONEY)
    expected_lower = models.DecimalField(**MONEY)
    expected_upper = models.DecimalField(**MONEY)
    deviation_percent = models.DecimalField(max_digits=12, decimal_places=1)
    impact_amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    top_services = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    detected_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    dismissed_at = models.DateTimeField(null=True, blank=True)
    dismissed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="dismissed_anomalies",
    )
    dismiss_reason = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        verbose_name_plural = "anomalies"
        ordering = ["-date", "-impact_amount"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "service", "date"], name="anomaly_unique_provider_service_date"
            )
        ]
        indexes = [
            models.Index(fields=["organization", "status", "date"], name="anomaly_org_status_date")
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.service or 'total'} {self.date}"
