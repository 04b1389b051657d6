"""Load the demo: an organization with three providers and 13+ months of realistic
billing data, written as FOCUS exports and imported through the real sync path; an admin
user and an API key, printed with ready-to-paste curl commands."""

from __future__ import annotations

import csv
import secrets
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Membership
from accounts.services import api_key_create, membership_ensure
from costs.demo import DemoRow, generate
from costs.models import SyncJob
from costs.services.jobs import sync_job_request
from providers.configs import organization_import_folder
from providers.models import Provider

MIN_DAYS = 400
FOCUS_COLUMNS = [
    "BilledCost", "BillingCurrency", "BillingPeriodEnd", "BillingPeriodStart",
    "ChargeCategory", "ChargeFrequency", "ChargePeriodEnd", "ChargePeriodStart",
    "EffectiveCost", "ProviderName", "RegionId", "ServiceName", "SubAccountId",
]


def _month_after(day):
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def write_focus_export(path: Path, rows: list[DemoRow], provider_name: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FOCUS_COLUMNS)
        for row in rows:
            writer.writerow([
                row.billed, row.currency,
                f"{_month_after(row.day).isoformat()} 00:00:00",
                f"{row.day.replace(day=1).isoformat()} 00:00:00",
                "Purchase" if row.charge_frequency == "Recurring" else "Usage",
                row.charge_frequency,
                f"{row.day.isoformat()} 23:59:59", f"{row.day.isoformat()} 00:00:00",
                row.effective, provider_name,
                "NULL" if row.region == "global" else row.region,
                row.service, row.account,
            ])


class Command(BaseCommand):
    help = "Load demo data (FOCUS exports imported by the sync code), a superuser and an API key."

    def add_arguments(self, parser):
        parser.add_argument("--org", default="Demo Org")
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument(
            "--days", type=int, default=425, help=f"days of history (>= {MIN_DAYS})"
        )
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument(
            "--force", action="store_true",
            help="run with DJANGO_DEBUG off too (it resets the 'admin' user's password)",
        )

    def handle(self, *args, org, seed, days, base_url, force, **options):
        if not settings.DEBUG and not force:
            raise CommandError(
                "loaddemo is for demo installs: it makes 'admin' a superuser with a new "
                "password. Run it with DJANGO_DEBUG=1 (make demo does), or pass --force."
            )
        if days < MIN_DAYS:
            raise CommandError(f"--days: at least {MIN_DAYS} (the anomaly detector needs them)")
        # A few genuine spikes on services that matter, late enough in the history for the
        # detector (which needs 17 weeks of history per series) to judge them.
        dataset = generate(
            seed=seed, days=days, spikes=6, spike_first_day=150, spike_min_base=20.0
        )
        try:
            membership = membership_ensure(
                org_name=org, username="demo", role=Membership.Role.ADMIN
            )
        except ValidationError as exc:
            raise CommandError(f"--org: {' '.join(exc.message_dict.get('org', exc.messages))}") from None
        organization = membership.organization

        by_provider: dict[str, list[DemoRow]] = defaultdict(list)
        for row in dataset.rows:
            by_provider[row.provider].append(row)
        # The organization's own import folder: the only local folder its providers may read.
        export_root = organization_import_folder(organization.slug)
        for name, rows in by_provider.items():
            folder = export_root / name.lower().replace(" ", "-")
            write_focus_export(folder / "focus-export.csv", rows, name)
            Provider.objects.update_or_create(
                organization=organization,
                name=name,
                defaults={"kind": Provider.Kind.FOCUS, "config": {"uri": str(folder)},
                          "is_active": True},
            )
        self.stdout.write(
            f"Wrote {len(dataset.rows)} FOCUS rows for {len(by_provider)} providers "
            f"({dataset.start} .. {dataset.end}) under {export_root}; importing..."
        )
        with transaction.atomic():
            job = sync_job_request(organization=organization, user=membership.user)
        job = SyncJob.objects.prefetch_related("results__provider").get(pk=job.pk)
        for result in job.results.all():
            self.stdout.write(
                f"  {result.display_name}: {result.status}, {result.rows_read} rows read, "
                f"{result.records_written} records {result.error}"
            )

        user_model = get_user_model()
        admin, _ = user_model.objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True}
        )
        password = secrets.token_urlsafe(12)
        admin.set_password(password)
        admin.is_staff = admin.is_superuser = True
        admin.save()
        membership_ensure(org_name=org, username="admin", role=Membership.Role.ADMIN)
        _, raw_key = api_key_create(membership=membership, name="demo")

        api = f"{base_url}/api/v1"
        self.stdout.write(self.style.SUCCESS("\nDemo ready."))
        self.stdout.write(f"Admin: {base_url}/admin/  user: admin  password: {password}")
        self.stdout.write(f"API docs: {base_url}/api/docs/\n")
        self.stdout.write("Try:")
        self.stdout.write(f'  curl -s -H "Authorization: Bearer {raw_key}" {api}/costs/overview')
        self.stdout.write(
            f'  curl -s -H "Authorization: Bearer {raw_key}" '
            f'"{api}/costs/trend?days=90&granularity=week&group_by=service"'
        )
        self.stdout.write(
            f'  curl -s -X POST -H "Authorization: Bearer {raw_key}" {api}/costs/sync'
        )
        self.stdout.write("API key (shown once):")
        self.stdout.write(raw_key)
