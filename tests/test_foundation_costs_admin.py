"""The costs admin: cost records and sync jobs are read-only there."""

from decimal import Decimal

import pytest

from costs.models import CostRecord
from tests.factories import CostRecordFactory, SyncJobProviderFactory


@pytest.mark.django_db
def test_costs_admin_cost_record_pages_load(admin_client):
    record = CostRecordFactory(service="AmazonEC2", billed_amount=Decimal("12.345"))
    listing = admin_client.get("/admin/costs/costrecord/")
    assert listing.status_code == 200
    assert "AmazonEC2" in listing.content.decode()
    assert admin_client.get("/admin/costs/costrecord/?day__year=2024").status_code == 200
    assert admin_client.get(f"/admin/costs/costrecord/{record.pk}/change/").status_code == 200


@pytest.mark.django_db
def test_costs_admin_cost_records_are_read_only(admin_client):
    record = CostRecordFactory(billed_amount=Decimal("10.00"))
    assert admin_client.get("/admin/costs/costrecord/add/").status_code == 403
    change = admin_client.get(f"/admin/costs/costrecord/{record.pk}/change/")
    assert 'name="billed_amount"' not in change.content.decode()
    response = admin_client.post(
        f"/admin/costs/costrecord/{record.pk}/change/", {"billed_amount": "99.00"}
    )
    assert response.status_code == 403
    assert admin_client.post(f"/admin/costs/costrecord/{record.pk}/delete/").status_code == 403
    record.refresh_from_db()
    assert record.billed_amount == Decimal("10.00")
    assert CostRecord.objects.count() == 1


@pytest.mark.django_db
def test_costs_admin_sync_job_pages_load(admin_client):
    result = SyncJobProviderFactory(error="throttled by provider")
    assert admin_client.get("/admin/costs/syncjob/").status_code == 200
    change = admin_client.get(f"/admin/costs/syncjob/{result.job_id}/change/")
    assert change.status_code == 200
    assert "throttled by provider" in change.content.decode()
    assert admin_client.get("/admin/costs/syncjob/add/").status_code == 403
