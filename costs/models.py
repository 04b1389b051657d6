"""Daily cost records, sync jobs and anomalies."""

from __future__ import annotations

import itertools
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Coalesce

from providers.crypto import decrypt_json, encrypt_json

MONEY = {"max_digits": 30, "decimal_places": 12}


class CostRecord(models.Model):
    """One provider's spend on one UTC day for one (service, region, account, currency),
    as billed in one billing period.

    The natural key is unique, so a sync that replaces a window of days can never leave
    two rows for the same thing. ``region`` is ``"global"`` for charges without a region.
    ``billing_period`` is the first day of the invoice period the charge came in: FOCUS's
    ``BillingPeriodStart``, the day's month for the cloud APIs. A FOCUS export delivers
    whole billing periods, and a later period may correct an earlier one's days (a
    ``Correction`` charge dated in October in November's export): an import replaces the
    records of the periods it delivers, never another period's records of the same days.
    """

    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="cost_records"
    )
    provider = models.ForeignKey(
        "providers.Provider", on_delete=models.CASCADE, related_name="cost_records"
    )
    day = models.DateField()
    billing_period = models.DateField()
    service = models.CharField(max_length=200)
    region = models.CharField(max_length=64)
    account = models.CharField(max_length=128, blank=True, default="")
    currency = models.CharField(max_length=3)
    billed_amount = models.DecimalField(**MONEY)
    effective_amount = models.DecimalField(**MONEY)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "day", "service", "region", "account", "currency",
                        "billing_period"],
                name="costrecord_natural_key",
            )
        ]
        indexes = [
            models.Index(fields=["organization", "day"], name="costrecord_org_day"),
            models.Index(fields=["provider", "day"], name="costrecord_provider_day"),
            models.Index(fields=["provider", "billing_period"], name="costrecord_provider_period"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.service} {self.region} {self.billed_amount} {self.currency}"


class _Derived(models.Manager):
    """The default manager of rows the database derives from others: it returns none,
    so ``dumpdata`` leaves them out of fixtures and ``loaddata`` of the rows they derive
    from makes them again (loaded as well, they collided with the ones it made)."""

    def get_queryset(self):
        return super().get_queryset().none()


class ServiceDayTotal(models.Model):
    """One provider's spend on one day for one service and currency: the sum of its cost
    records over regions, accounts and billing periods, which the reads that do not
    group by region (overview, trends, forecasts, anomaly detection) use instead of the
    records themselves (an organization with two years of 3,000 records a day has
    ~2.2M records, and aggregating them took seconds a request; see docs/benchmarks.md).

    Maintained by the database, not by Python: triggers on ``costs_costrecord`` (migration
    0006) add every inserted record and subtract every deleted one, within the statement
    that wrote it (on SQLite they sum the total's records again), and a TRUNCATE clears
    them. So every way records change (a sync's COPY, ``bulk_create``, a cascade from a
    deleted provider) keeps the totals exact, in the same transaction. ``records`` counts
    the records summed; a total whose last record goes is deleted. Derived rows are left
    out of fixtures (``_Derived``).
    """

    # No index of their own: the key's and (organization, day) lead with them.
    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    provider = models.ForeignKey(
        "providers.Provider", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    day = models.DateField()
    service = models.CharField(max_length=200)
    currency = models.CharField(max_length=3)
    # Ten more digits than a record: a sum of records each up to 1e18 stays exact.
    billed_amount = models.DecimalField(max_digits=40, decimal_places=12)
    effective_amount = models.DecimalField(max_digits=40, decimal_places=12)
    records = models.IntegerField()

    objects = models.Manager()
    derived = _Derived()

    class Meta:
        default_manager_name = "derived"
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "day", "service", "currency"], name="servicedaytotal_key"
            )
        ]
        indexes = [
            models.Index(fields=["organization", "day"], name="servicedaytotal_org_day"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.service} {self.billed_amount} {self.currency}"


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
    """The result of one provider within a job.

    A job's history outlives its providers: deleting a provider sets ``provider`` to null
    and the entry keeps the id, name and kind the provider had when the entry was created
    (``provider_pk``, ``provider_name``, ``provider_kind``). Build entries with
    ``for_provider`` (``bulk_create`` skips ``save``, which takes the snapshot otherwise)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    job = models.ForeignKey(SyncJob, on_delete=models.CASCADE, related_name="results")
    provider = models.ForeignKey(
        "providers.Provider",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sync_results",
    )
    # The provider as it was when the entry was created; kept once it is deleted.
    provider_pk = models.PositiveBigIntegerField()
    provider_name = models.CharField(max_length=200, blank=True, default="")
    provider_kind = models.CharField(max_length=16, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    rows_read = models.PositiveBigIntegerField(default=0)
    records_written = models.PositiveBigIntegerField(default=0)
    date_from = models.DateField(null=True, blank=True)
    date_to = models.DateField(null=True, blank=True)
    changed = models.BooleanField(default=False)
    error = models.TextField(blank=True, default="")
    # For uploads: the stored file this result imports (deleted after import).
    source_file = models.CharField(max_length=1024, blank=True, default="")
    # Deliveries of its task that started it: more than its retries plus one means a
    # worker died running it (killed for memory, restarted), and the broker delivered it
    # again (costs.services.jobs.MAX_LOST_RUNS).
    runs = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # By the name shown (the provider's current one, or its last known once deleted),
        # the same on every database (PostgreSQL and SQLite place nulls apart).
        ordering = [Coalesce("provider__name", "provider_name"), "pk"]
        constraints = [
            models.UniqueConstraint(fields=["job", "provider"], name="syncjobprovider_unique")
        ]

    def __str__(self) -> str:
        return f"{self.display_name} in job #{self.job_id}: {self.status}"

    def save(self, *args, **kwargs):
        if self.provider_pk is None and self.provider_id is not None:
            self.take_snapshot()
        super().save(*args, **kwargs)

    @classmethod
    def for_provider(cls, provider, **fields) -> SyncJobProvider:
        """An unsaved entry of ``provider`` with its snapshot taken."""
        entry = cls(provider=provider, **fields)
        entry.take_snapshot()
        return entry

    def take_snapshot(self) -> None:
        self.provider_pk = self.provider.pk
        self.provider_name = self.provider.name
        self.provider_kind = self.provider.kind

    @property
    def provider_deleted(self) -> bool:
        return self.provider_id is None

    @property
    def display_name(self) -> str:
        """The provider's name now, or the one it had when this entry was created once the
        provider is deleted."""
        return self.provider_name if self.provider is None else self.provider.name


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


class AnomalyPolicy(models.Model):
    """An organization's anomaly thresholds (money in the currency of the series, percent
    of the expected amount). Without a row the defaults below apply.

    A day above its expected range is recorded only when its impact (actual - expected)
    and deviation reach ``min_impact_amount`` and ``min_deviation_percent`` (that is the
    ``low`` tier); each higher tier needs both its money and its percent threshold."""

    organization = models.OneToOneField(
        "accounts.Organization", on_delete=models.CASCADE, related_name="anomaly_policy"
    )
    min_impact_amount = models.DecimalField(max_digits=14, decimal_places=2, default=10)
    min_deviation_percent = models.DecimalField(max_digits=8, decimal_places=1, default=10)
    medium_impact_amount = models.DecimalField(max_digits=14, decimal_places=2, default=50)
    medium_deviation_percent = models.DecimalField(max_digits=8, decimal_places=1, default=20)
    high_impact_amount = models.DecimalField(max_digits=14, decimal_places=2, default=150)
    high_deviation_percent = models.DecimalField(max_digits=8, decimal_places=1, default=40)
    critical_impact_amount = models.DecimalField(max_digits=14, decimal_places=2, default=1000)
    critical_deviation_percent = models.DecimalField(max_digits=8, decimal_places=1, default=100)
    material_daily_spend = models.DecimalField(
        max_digits=14,
        decimal_places=2,
        default=5,
        help_text="A service is analysed on its own only when its mean daily spend over the "
        "previous 56 days reaches this (and 1% of the provider's).",
    )
    sensitivity = models.DecimalField(
        max_digits=4,
        decimal_places=2,
        default=Decimal("4.4"),
        validators=[MinValueValidator(Decimal("2")), MaxValueValidator(Decimal("10"))],
        help_text="Half-width of the expected band in noise standard deviations; higher "
        "means fewer, larger anomalies.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "anomaly policies"

    def __str__(self) -> str:
        return f"Anomaly policy of {self.organization}"

    def clean(self):
        tiers = [
            (self.min_impact_amount, self.min_deviation_percent),
            (self.medium_impact_amount, self.medium_deviation_percent),
            (self.high_impact_amount, self.high_deviation_percent),
            (self.critical_impact_amount, self.critical_deviation_percent),
        ]
        if any(a is None or p is None or a < 0 or p < 0 for a, p in tiers):
            raise ValidationError("thresholds must be zero or more")
        for lower, higher in itertools.pairwise(tiers):
            if higher[0] < lower[0] or higher[1] < lower[1]:
                raise ValidationError(
                    "each severity tier needs thresholds at least those of the tier below"
                )


class AlertWebhook(models.Model):
    """Where an organization's new anomalies are POSTed (``cost.anomaly`` events), signed
    with HMAC-SHA256 of the body under ``secret``, which is stored encrypted and never
    shown again."""

    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="alert_webhooks"
    )
    name = models.CharField(max_length=100)
    url = models.URLField(max_length=1000)
    secret_encrypted = models.TextField(editable=False, default="")
    min_severity = models.CharField(
        max_length=16, choices=Anomaly.Severity.choices, default=Anomaly.Severity.HIGH
    )
    max_age_days = models.PositiveIntegerField(
        default=7,
        help_text="Anomalies on days older than this when detected (a backfill) are not "
        "alerted.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def secret(self) -> str:
        return decrypt_json(self.secret_encrypted).get("secret", "")

    @secret.setter
    def secret(self, value: str) -> None:
        self.secret_encrypted = encrypt_json({"secret": value}) if value else ""


class WebhookDelivery(models.Model):
    """One alert of one anomaly to one webhook (unique: never two alerts per anomaly),
    with the frozen body, so retries send the same signed bytes."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RETRYING = "retrying"
        DELIVERED = "delivered"
        FAILED = "failed"

    webhook = models.ForeignKey(AlertWebhook, on_delete=models.CASCADE, related_name="deliveries")
    anomaly = models.ForeignKey(Anomaly, on_delete=models.CASCADE, related_name="deliveries")
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["webhook", "anomaly"], name="webhookdelivery_unique_webhook_anomaly"
            )
        ]

    def __str__(self) -> str:
        return f"{self.webhook} / anomaly #{self.anomaly_id}: {self.status}"
