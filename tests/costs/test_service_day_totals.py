"""Service-day totals: the database keeps them equal to the sums of the cost records,
however the records change (migration costs/0006's triggers)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from django.db.models import Count, Sum

from costs.models import CostRecord, ServiceDayTotal
from costs.services.sync import replace_window
from tests.factories import CostRecordFactory, ProviderFactory

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[2]
DAY = date(2024, 3, 5)


def summed_records() -> dict:
    """What the totals must be: the records grouped by provider, day, service, currency."""
    rows = (
        CostRecord.objects.values("organization_id", "provider_id", "day", "service", "currency")
        .annotate(billed=Sum("billed_amount"), effective=Sum("effective_amount"), n=Count("id"))
        .order_by()
    )
    return {
        (r["organization_id"], r["provider_id"], r["day"], r["service"], r["currency"]):
        (r["billed"], r["effective"], r["n"])
        for r in rows
    }


def totals() -> dict:
    return {
        (t.organization_id, t.provider_id, t.day, t.service, t.currency):
        (t.billed_amount, t.effective_amount, t.records)
        for t in ServiceDayTotal.objects.all()
    }


def test_service_day_totals_sum_inserted_records_over_regions_and_accounts(org):
    provider = ProviderFactory(organization=org)
    CostRecordFactory(provider=provider, day=DAY, region="us-east-1", billed_amount=Decimal("1.5"))
    CostRecordFactory(provider=provider, day=DAY, region="eu-west-1", account="2",
                      billed_amount=Decimal("0.000000000001"))
    CostRecord.objects.bulk_create([
        CostRecord(organization=org, provider=provider, day=DAY, billing_period=date(2024, 4, 1),
                   service="EC2", region="us-east-1", currency="USD",
                   billed_amount=Decimal("-0.5"), effective_amount=Decimal("-0.25")),
        CostRecord(organization=org, provider=provider, day=DAY, billing_period=DAY.replace(day=1),
                   service="S3", region="global", currency="USD",
                   billed_amount=Decimal("2"), effective_amount=Decimal("2")),
    ])

    assert totals() == summed_records()
    ec2 = ServiceDayTotal.objects.get(provider=provider, service="EC2")
    assert (ec2.billed_amount, ec2.effective_amount, ec2.records) == (
        Decimal("1.000000000001"), Decimal("1.250000000001"), 3
    )


def test_service_day_totals_follow_updates_and_deletes_and_drop_a_total_with_no_record(org):
    provider = ProviderFactory(organization=org)
    kept = CostRecordFactory(provider=provider, day=DAY, region="a", billed_amount=Decimal("4"))
    CostRecordFactory(provider=provider, day=DAY, region="b", billed_amount=Decimal("6"))
    moved = CostRecordFactory(provider=provider, day=DAY, service="S3", billed_amount=Decimal("1"))

    CostRecord.objects.filter(pk=kept.pk).update(billed_amount=Decimal("5"))
    CostRecord.objects.filter(pk=moved.pk).update(service="Lambda")  # another total's key
    assert totals() == summed_records()
    assert not ServiceDayTotal.objects.filter(service="S3").exists()

    CostRecord.objects.filter(service="EC2").delete()
    assert totals() == summed_records()
    assert list(ServiceDayTotal.objects.values_list("service", flat=True)) == ["Lambda"]


def test_service_day_totals_of_a_deleted_provider_go_with_it(org):
    gone, stays = ProviderFactory(organization=org), ProviderFactory(organization=org)
    CostRecordFactory(provider=gone, day=DAY)
    CostRecordFactory(provider=stays, day=DAY)

    gone.delete()

    assert totals() == summed_records()
    assert set(ServiceDayTotal.objects.values_list("provider_id", flat=True)) == {stays.id}


@pytest.mark.parametrize("vendor", ["postgresql", "python"])
def test_service_day_totals_follow_a_sync_that_restates_its_window(org, vendor, monkeypatch):
    import types

    from costs.services import sync

    if vendor == "python":  # the SQLite write path: Python comparison, bulk_create
        monkeypatch.setattr(sync, "connection", types.SimpleNamespace(vendor="sqlite"))
    provider = ProviderFactory(organization=org)
    first = {
        (DAY, "EC2", "us-east-1", "1", "USD"): [Decimal("10"), Decimal("9")],
        (DAY, "EC2", "eu-west-1", "1", "USD"): [Decimal("5"), Decimal("5")],
        (date(2024, 3, 6), "S3", "global", "", "USD"): [Decimal("1"), Decimal("1")],
    }
    replace_window(provider=provider, date_from=DAY, date_to=date(2024, 3, 6), totals=first)
    assert totals() == summed_records()

    restated = {(DAY, "EC2", "us-east-1", "1", "USD"): [Decimal("12"), Decimal("11")]}
    replace_window(provider=provider, date_from=DAY, date_to=date(2024, 3, 6), totals=restated)

    assert totals() == summed_records()
    assert totals() == {(org.id, provider.id, DAY, "EC2", "USD"): (Decimal("12"), Decimal("11"), 1)}


def test_service_day_totals_of_truncated_records_go_with_them(api, org, monkeypatch):
    # TRUNCATE fires no delete trigger: the overview went on showing the spend.
    from django.db import connection

    monkeypatch.setattr("costs.selectors.utc_today", lambda: DAY)
    CostRecordFactory(provider=ProviderFactory(organization=org), day=DAY,
                      billed_amount=Decimal("42"))
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the factories' deferred checks
        cursor.execute("TRUNCATE costs_costrecord")

    assert api.get("/api/v1/costs/overview").json()["current_month"]["amount"] == 0
    assert totals() == summed_records() == {}


def test_service_day_totals_are_left_out_of_fixtures_and_made_again_by_loading_them(
    org, tmp_path
):
    """dumpdata + loaddata (a move from the SQLite demo to PostgreSQL, a fixture): the
    totals are derived, so a dump leaves them out and loading the records makes them.
    Dumped too, the loaded totals collided with those the records' triggers made."""
    from django.core.management import call_command
    from django.db import connection

    provider = ProviderFactory(organization=org)
    for amount, (service, region) in enumerate([("S3", "a"), ("EC2", "a"), ("EC2", "b")]):
        CostRecordFactory(provider=provider, day=DAY, service=service, region=region,
                          billed_amount=Decimal(amount + 1))
    expected = totals()
    fixture = tmp_path / "dump.json"
    call_command("dumpdata", "costs.costrecord", "costs.servicedaytotal", output=str(fixture))
    assert "servicedaytotal" not in fixture.read_text()
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("TRUNCATE costs_costrecord")

    call_command("loaddata", str(fixture), verbosity=0)

    assert totals() == summed_records() == expected


_SQLITE_CHECK = """
import django
django.setup()
from datetime import date
from decimal import Decimal
from django.core.management import call_command
from django.db import connection
call_command("migrate", verbosity=0)
from accounts.models import Organization
from costs.models import CostRecord, ServiceDayTotal
from providers.models import Provider

org = Organization.objects.create(name="o", slug="o")
provider = Provider.objects.create(organization=org, name="p", kind="focus")
day = date(2024, 3, 5)


def record(region, amount, service="EC2"):
    return CostRecord(organization=org, provider=provider, day=day, billing_period=day,
                      service=service, region=region, currency="USD",
                      billed_amount=Decimal(amount), effective_amount=Decimal(amount))


CostRecord.objects.bulk_create([record("a", "1.25"), record("b", "2.5"), record("c", "4", "S3")])
CostRecord.objects.filter(region="a").update(billed_amount=Decimal("3"))
CostRecord.objects.filter(service="S3").delete()
# A large amount gone from a total leaves no float residue: an upfront fee restated away
# from a day that keeps a 1.5-cent correction (the total showed 0.01 where the records
# say 0.015).
CostRecord.objects.bulk_create([record("fee", "123456.78", "RDS"), record("fix", "0.015", "RDS")])
CostRecord.objects.filter(region="fee").delete()
print(sorted(name for (name,) in connection.cursor().execute(
    "SELECT name FROM sqlite_master WHERE type = 'trigger'")))
print(sorted((t.service, str(t.billed_amount), str(t.effective_amount), t.records)
             for t in ServiceDayTotal.objects.all()))
"""


def test_service_day_totals_are_kept_on_the_embedded_sqlite_default(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "INFRAAUDIT_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "infraaudit.settings", "DJANGO_DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "INFRAAUDIT_VAR_DIR": str(tmp_path),
    })
    result = subprocess.run(  # noqa: S603 (the test's own code, not input)
        [sys.executable, "-c", _SQLITE_CHECK],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 0, result.stderr
    triggers, kept = result.stdout.split("\n")[-3:-1]
    # A migration that alters costs_costrecord rebuilds it on SQLite, without them.
    assert triggers == str(["costs_servicedaytotal_delete", "costs_servicedaytotal_insert",
                            "costs_servicedaytotal_update"])
    assert kept == (
        "[('EC2', '5.500000000000', '3.750000000000', 2), "
        "('RDS', '0.015000000000', '0.015000000000', 1)]"
    ), result.stdout
