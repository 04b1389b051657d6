from datetime import date, timedelta
from decimal import Decimal

import numpy as np
import pytest

from costs.models import Anomaly, AnomalyPolicy, CostRecord, SyncJob, SyncJobProvider
from costs.services import anomalies as detector
from costs.services.anomalies import (
    MIN_HISTORY_DAYS,
    Thresholds,
    anomalies_detect,
    anomaly_dismiss,
    expected_range,
    material_mask,
    severity_levels,
)
from costs.services.jobs import sync_job_finish_if_done
from infraaudit.errors import Conflict
from tests.factories import (
    AnomalyFactory,
    ProviderFactory,
    SyncJobFactory,
    SyncJobProviderFactory,
    UserFactory,
)

START = date(2023, 1, 2)  # a Monday
DAYS = 200
TODAY = START + timedelta(days=DAYS)  # the day after the last complete day


def weekly_series(days=DAYS, base=100.0, weekend=0.6, noise=0.03, seed=0, growth=0.0):
    rng = np.random.default_rng(seed)
    t = np.arange(days)
    weekday = np.array([(START + timedelta(days=int(i))).weekday() for i in t])
    return (
        base
        * (1 + growth * t / 365)
        * np.where(weekday >= 5, weekend, 1.0)
        * np.exp(rng.normal(0, noise, days))
    )


def flagged(values, start=START, thresholds=None):
    thresholds = thresholds or Thresholds()
    bands = expected_range(values, start, sensitivity=thresholds.sensitivity)
    levels = severity_levels(np.atleast_2d(values), bands.expected, bands.upper, thresholds)
    return set(np.nonzero(levels[0] >= 0)[0].tolist()), bands


# -- the pure detector ------------------------------------------------------------------


def test_expected_range_flags_a_spike_not_the_weekly_pattern():
    values = weekly_series(weekend=0.3)
    values[170] *= 2.5
    days, bands = flagged(values)
    assert days == {170}
    assert bands.upper[0, 170] < values[170]


def test_expected_range_learns_weekly_seasonality():
    values = weekly_series(weekend=0.3)
    _, bands = flagged(values)
    saturday = next(i for i in range(150, 160) if (START + timedelta(days=i)).weekday() == 5)
    friday = saturday - 1
    assert bands.expected[0, saturday] == pytest.approx(30, rel=0.15)
    assert bands.expected[0, friday] == pytest.approx(100, rel=0.1)


def test_expected_range_follows_trend():
    values = weekly_series(days=400, growth=2.0, weekend=1.0)
    days, bands = flagged(values)
    assert days == set()
    assert bands.expected[0, 399] == pytest.approx(100 * (1 + 2.0 * 399 / 365), rel=0.08)


def test_expected_range_recognises_month_start_charges():
    values = weekly_series(days=400)
    first_days = [i for i in range(400) if (START + timedelta(days=i)).day == 1]
    values[first_days] += 1500.0
    days, bands = flagged(values)
    assert days == set()
    judged = [i for i in first_days if i >= MIN_HISTORY_DAYS]
    assert judged
    for i in judged:
        assert bands.expected[0, i] == pytest.approx(values[i], rel=0.1)
        assert bands.lower[0, i] < values[i] <= bands.upper[0, i]


def test_expected_range_flags_a_new_monthly_charge_until_it_recurs():
    values = weekly_series(days=400)
    first_days = [i for i in range(400) if (START + timedelta(days=i)).day == 1 and i > 200]
    values[first_days] += 1500.0
    days, _ = flagged(values)
    assert days == set(first_days[:2])  # flagged twice, expected from the third billing


@pytest.mark.parametrize("day_of_month", [30, 31, 29])
def test_expected_range_learns_a_charge_late_in_the_month(day_of_month):
    values = weekly_series(days=500)
    billed = [
        i for i in range(200, 500)
        if (d := START + timedelta(days=i)).day == day_of_month
        or ((d + timedelta(days=1)).day == 1 and d.day < day_of_month)  # a shorter month's last
    ]
    values[billed] += 1500.0
    days, _ = flagged(values)
    # Flagged while new, then expected every month, month ends of every length included
    # (a charge on the 30th used to be flagged again on each 30 April, 30 June, 28 February).
    assert days <= set(billed[:3]) and days


def test_expected_range_is_not_dragged_up_by_earlier_anomalies():
    values = weekly_series(noise=0.02)
    clean = expected_range(values, START).expected[0, 190]
    for i in (183, 176, 169, 187, 188):
        values[i] *= 4
    dirty = expected_range(values, START).expected[0, 190]
    assert dirty == pytest.approx(clean, rel=0.05)


def test_expected_range_needs_minimum_history():
    values = weekly_series(days=MIN_HISTORY_DAYS + 1)
    bands = expected_range(values, START)
    assert not bands.evaluated[0, :MIN_HISTORY_DAYS].any()
    assert bands.evaluated[0, MIN_HISTORY_DAYS]
    short = expected_range(values[:MIN_HISTORY_DAYS], START)
    assert not short.evaluated.any()


def test_dips_are_not_anomalies():
    values = weekly_series()
    values[170] = 0.0
    values[171] *= 0.2
    days, _ = flagged(values)
    assert days == set()


def test_severity_tiers_need_money_and_percent():
    expected = np.array([[100.0, 100.0, 100.0, 1000.0, 100.0, 100.0]])
    actual = np.array([[115.0, 125.0, 200.0, 1500.0, 105.0, 1300.0]])
    upper = np.full_like(expected, 101.0)
    upper[0, 3] = 1001.0
    levels = severity_levels(actual, expected, upper, Thresholds())
    # 15 / 15% low; 25 / 25% low (impact < 50); 100 / 100% medium (impact < 150);
    # 500 / 50% high; 5 below min impact; 1200 / 1200% critical.
    assert levels.tolist() == [[0, 0, 1, 2, -1, 3]]
    custom = Thresholds(min_impact=20)
    assert severity_levels(actual, expected, upper, custom).tolist() == [[-1, 0, 1, 2, -1, 3]]


def test_material_mask_uses_absolute_and_share():
    total = np.full(100, 1000.0)
    services = np.vstack([np.full(100, 50.0), np.full(100, 6.0), np.full(100, 4.0)])
    mask = material_mask(services, total, min_daily=5.0)
    assert not mask[:, :56].any()
    assert mask[0, 60] and not mask[1, 60] and not mask[2, 60]  # 6 < 1% of 1000


# -- the service ------------------------------------------------------------------------


def write_series(provider, series: dict[str, np.ndarray], start=START):
    rows = []
    for service, values in series.items():
        for i, value in enumerate(values):
            if value:
                rows.append(
                    CostRecord(
                        organization=provider.organization, provider=provider,
                        day=start + timedelta(days=i), service=service, region="us-east-1",
                        billing_period=(start + timedelta(days=i)).replace(day=1),
                        currency="USD", billed_amount=Decimal(f"{value:.4f}"),
                        effective_amount=Decimal(f"{value:.4f}"),
                    )
                )
    CostRecord.objects.bulk_create(rows)
    provider.coverage_start = start
    provider.coverage_end = start + timedelta(days=len(next(iter(series.values()))) - 1)
    provider.save()


def restate(provider, service, day, amount):
    CostRecord.objects.filter(provider=provider, service=service, day=day).update(
        billed_amount=Decimal(amount), effective_amount=Decimal(amount)
    )


SPIKE = START + timedelta(days=180)


@pytest.fixture
def provider(org):
    provider = ProviderFactory(organization=org, name="AWS Production")
    ec2 = weekly_series(base=400, seed=1)
    ec2[180] *= 3
    write_series(
        provider,
        {"EC2": ec2, "S3": weekly_series(base=60, weekend=1.0, seed=2), "SQS": weekly_series(base=2, seed=3)},
    )
    return provider


def detect(provider, start=START + timedelta(days=150), end=START + timedelta(days=DAYS - 1)):
    return anomalies_detect(provider=provider, start=start, end=end, today=TODAY)


@pytest.mark.django_db
def test_anomalies_detect_records_provider_and_service_anomalies(provider):
    result = detect(provider)
    rows = {(a.service, a.date): a for a in Anomaly.objects.filter(provider=provider)}
    assert set(rows) == {("", SPIKE), ("EC2", SPIKE)}
    assert sorted(result.created) == sorted(a.id for a in rows.values())
    total = rows[("", SPIKE)]
    actual = sum(CostRecord.objects.filter(provider=provider, day=SPIKE).values_list("billed_amount", flat=True))
    assert total.actual_amount == actual
    assert total.expected_lower < total.expected_amount < total.expected_upper < total.actual_amount
    assert total.impact_amount == total.actual_amount - total.expected_amount
    expected_pct = (total.impact_amount / total.expected_amount * 100).quantize(Decimal("0.1"))
    assert abs(total.deviation_percent - expected_pct) <= Decimal("0.1")
    assert total.severity == "high"  # ~800 above ~460 expected: critical needs 1000
    assert total.top_services[0]["service"] == "EC2"
    assert total.top_services[0]["vs_expected"] > 400  # a Saturday: 3 x 240
    assert rows[("EC2", SPIKE)].top_services == []
    assert total.organization == provider.organization and total.currency == "USD"


@pytest.mark.django_db
def test_anomalies_detect_is_idempotent(provider):
    first = detect(provider)
    again = detect(provider)
    assert first.created and (again.created, again.updated, again.removed) == ([], [], [])
    assert Anomaly.objects.filter(provider=provider).count() == 2


@pytest.mark.django_db
def test_restated_day_updates_amounts_and_dismissed_stays_dismissed(provider, membership):
    detect(provider)
    service_row = Anomaly.objects.get(provider=provider, service="EC2")
    anomaly_dismiss(anomaly=service_row, user=membership.user, reason="Planned load test")
    restate(provider, "EC2", SPIKE, "2000.0000")
    result = detect(provider)
    service_row.refresh_from_db()
    total_row = Anomaly.objects.get(provider=provider, service="")
    assert result.created == [] and set(result.updated) == {service_row.id, total_row.id}
    assert service_row.status == "dismissed" and service_row.dismiss_reason == "Planned load test"
    assert service_row.actual_amount == Decimal("2000")
    assert total_row.status == "active"


@pytest.mark.django_db
def test_day_no_longer_anomalous_is_removed_if_active_kept_if_dismissed(provider, membership):
    detect(provider)
    total_row = Anomaly.objects.get(provider=provider, service="")
    anomaly_dismiss(anomaly=total_row, user=membership.user, reason="Known")
    restate(provider, "EC2", SPIKE, "240.0000")
    result = detect(provider)
    assert Anomaly.objects.filter(provider=provider, service="EC2").count() == 0
    assert len(result.removed) == 1
    total_row.refresh_from_db()
    assert total_row.status == "dismissed"


@pytest.mark.django_db
def test_detection_only_touches_its_window_and_complete_days(provider):
    outside = AnomalyFactory(provider=provider, date=START + timedelta(days=100))
    result = anomalies_detect(provider=provider, start=SPIKE, end=TODAY + timedelta(days=5), today=SPIKE)
    assert result.created == [] and result.date_to == SPIKE - timedelta(days=1)
    assert Anomaly.objects.filter(pk=outside.pk).exists()


@pytest.mark.django_db
def test_policy_thresholds_are_per_organization(provider):
    AnomalyPolicy.objects.create(organization=provider.organization, min_impact_amount=5000)
    assert detect(provider).created == []
    AnomalyPolicy.objects.filter(organization=provider.organization).update(
        min_impact_amount=10, high_impact_amount=100, critical_impact_amount=100000
    )
    detect(provider)
    assert Anomaly.objects.get(provider=provider, service="").severity == "high"


@pytest.mark.django_db
def test_small_services_are_not_analysed_alone(org):
    provider = ProviderFactory(organization=org)
    sqs = weekly_series(base=3, seed=4)
    sqs[180] *= 10  # $27 above a $3 service: immaterial alone, visible in the total
    write_series(provider, {"EC2": weekly_series(base=100, seed=5), "SQS": sqs})
    detect(provider)
    assert not Anomaly.objects.filter(provider=provider, service="SQS").exists()


@pytest.mark.django_db
def test_sync_job_finish_runs_detection_before_the_final_status(provider):
    job = SyncJobFactory(organization=provider.organization, status=SyncJob.Status.RUNNING)
    SyncJobProviderFactory(
        job=job, provider=provider, status=SyncJobProvider.Status.SUCCEEDED, changed=True,
        date_from=SPIKE - timedelta(days=3), date_to=SPIKE + timedelta(days=3),
    )
    sync_job_finish_if_done(job_id=job.id)
    job.refresh_from_db()
    assert job.status == SyncJob.Status.SUCCEEDED and job.error == ""
    assert Anomaly.objects.filter(provider=provider, date=SPIKE).count() == 2


@pytest.mark.django_db
def test_sync_job_records_a_detection_failure_and_still_finishes(provider, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(detector, "anomalies_detect", broken)
    job = SyncJobFactory(organization=provider.organization, status=SyncJob.Status.RUNNING)
    result = SyncJobProviderFactory(
        job=job, provider=provider, status=SyncJobProvider.Status.SUCCEEDED, changed=True,
        date_from=SPIKE, date_to=SPIKE,
    )
    sync_job_finish_if_done(job_id=job.id)
    job.refresh_from_db()
    result.refresh_from_db()
    # The records stay written, but the anomalies are not fresh: the job says so.
    assert job.status == SyncJob.Status.PARTIAL and job.finished_at is not None
    assert "anomaly detection" in job.error
    assert result.status == SyncJobProvider.Status.SUCCEEDED
    assert result.error.startswith("records written, but anomaly detection")


@pytest.mark.django_db
def test_dismiss_twice_is_a_conflict_and_changes_nothing(membership):
    anomaly = AnomalyFactory(provider__organization=membership.organization)
    anomaly_dismiss(anomaly=anomaly, user=membership.user, reason="first")
    other = UserFactory()
    with pytest.raises(Conflict):
        anomaly_dismiss(anomaly=anomaly, user=other, reason="second")
    anomaly.refresh_from_db()
    assert (anomaly.dismiss_reason, anomaly.dismissed_by) == ("first", membership.user)


# -- the API ----------------------------------------------------------------------------

URL = "/api/v1/costs/anomalies"


def recent(days_ago: int) -> date:
    from costs.selectors import utc_today

    return utc_today() - timedelta(days=days_ago)


@pytest.fixture
def listed(org):
    aws = ProviderFactory(organization=org, name="AWS Production")
    gcp = ProviderFactory(organization=org, name="GCP")
    return {
        "old": AnomalyFactory(provider=aws, date=recent(40)),
        "total": AnomalyFactory(provider=aws, date=recent(2), impact_amount=Decimal("162.3"),
                                top_services=[{"service": "EC2", "amount": 380.0, "vs_expected": 180.0}]),
        "service": AnomalyFactory(provider=aws, date=recent(2), service="EC2", impact_amount=Decimal("90")),
        "gcp": AnomalyFactory(provider=gcp, date=recent(1), status="dismissed", dismiss_reason="ok"),
    }


@pytest.mark.django_db
def test_list_anomalies_shape_and_order(api, listed):
    response = api.get(URL)
    assert response.status_code == 200
    body = response.json()
    assert [item["id"] for item in body["data"]] == [
        listed["gcp"].id, listed["total"].id, listed["service"].id
    ]
    assert body["count"] == 3
    item = body["data"][1]
    assert item == {
        "id": listed["total"].id, "provider_id": listed["total"].provider_id,
        "provider_name": "AWS Production", "date": recent(2).isoformat(), "service": None,
        "actual_amount": 452.3, "expected_amount": 290.0, "expected_lower": 250.0,
        "expected_upper": 377.0, "deviation_percent": 56.0, "impact_amount": 162.3,
        "currency": "USD", "severity": "high",
        "top_services": [{"service": "EC2", "amount": 380.0, "vs_expected": 180.0}],
        "status": "active", "detected_at": item["detected_at"], "dismissed_at": None,
        "dismissed_by": None, "dismiss_reason": None,
    }
    assert body["data"][2]["service"] == "EC2"


@pytest.mark.django_db
def test_list_anomalies_impact_is_the_difference_of_the_amounts_shown(api, org):
    # Each amount rounded on its own showed 1234.56 - 241.26 = 993.31 (the exact 993.309).
    AnomalyFactory(provider=ProviderFactory(organization=org), date=recent(2),
                   actual_amount=Decimal("1234.564"), expected_amount=Decimal("241.255"),
                   impact_amount=Decimal("993.309"))
    item = api.get(URL).json()["data"][0]
    assert (item["actual_amount"], item["expected_amount"]) == (1234.56, 241.26)
    assert item["impact_amount"] == 993.30


@pytest.mark.django_db
def test_list_anomalies_filters(api, listed):
    def ids(**params):
        return {item["id"] for item in api.get(URL, params).json()["data"]}

    assert ids(days=60) == {a.id for a in listed.values()}
    assert ids(status="dismissed") == {listed["gcp"].id}
    assert ids(status="active") == {listed["total"].id, listed["service"].id}
    assert ids(provider_id=listed["gcp"].provider_id) == {listed["gcp"].id}
    assert ids(days=1) == {listed["gcp"].id}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params, name",
    [({"days": "0"}, "days"), ({"days": "abc"}, "days"), ({"days": "3651"}, "days"),
     ({"status": "open"}, "status"), ({"provider_id": "x"}, "provider_id")],
)
def test_list_anomalies_rejects_bad_parameters(api, params, name):
    response = api.get(URL, params)
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_PARAMETER"
    assert name in response.json()["details"]
    if name == "days":  # every rejection of days says the range, as the trend's do
        assert response.json()["details"]["days"] == ["must be between 1 and 3650"]


@pytest.mark.django_db
def test_list_anomalies_tenancy(api, other_api, listed):
    assert other_api.get(URL, {"days": 60}).json()["data"] == []
    response = other_api.get(URL, {"provider_id": listed["total"].provider_id})
    assert response.status_code == 404
    response = other_api.post(f"{URL}/{listed['total'].id}/dismiss", {"reason": "x"}, format="json")
    assert response.status_code == 404


@pytest.mark.django_db
def test_dismiss_anomaly(api, membership, listed):
    anomaly = listed["total"]
    response = api.post(f"{URL}/{anomaly.id}/dismiss", {"reason": "Planned migration"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "dismissed" and body["dismiss_reason"] == "Planned migration"
    assert body["dismissed_by"] == membership.user.username and body["dismissed_at"]
    again = api.post(f"{URL}/{anomaly.id}/dismiss/", {"reason": "other"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "ALREADY_DISMISSED"
    anomaly.refresh_from_db()
    assert anomaly.dismiss_reason == "Planned migration"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [{}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 501}, {"reason": 5}, {"reason": True}],
)
def test_dismiss_requires_a_reason(api, listed, body):
    response = api.post(f"{URL}/{listed['total'].id}/dismiss", body, format="json")
    assert response.status_code == 400
    assert "reason" in response.json()["details"]
    listed["total"].refresh_from_db()
    assert listed["total"].status == "active"


@pytest.mark.django_db
def test_dismiss_is_for_admins_only(viewer_api, listed):
    response = viewer_api.post(f"{URL}/{listed['total'].id}/dismiss", {"reason": "x"}, format="json")
    assert response.status_code == 403
    assert viewer_api.get(URL).status_code == 200


@pytest.mark.django_db
def test_dismiss_unknown_anomaly_is_404(api):
    assert api.post(f"{URL}/999999/dismiss", {"reason": "x"}, format="json").status_code == 404


@pytest.mark.django_db
def test_anomalies_need_authentication(client):
    assert client.get(URL).status_code == 401


@pytest.mark.django_db
def test_schema_describes_anomaly_endpoints(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").content.decode()
    assert "/api/v1/costs/anomalies" in schema and "dismiss" in schema


@pytest.mark.django_db
def test_dismissing_an_anomaly_a_re_detection_just_removed_is_404_not_500(api, org):
    # The API reads the anomaly, a re-detection deletes it (its day is normal again),
    # then the dismissal locks it: that lock's .get() raised DoesNotExist, a 500.
    from django.http import Http404

    from costs.services.anomalies import anomaly_dismiss, anomaly_reopen

    anomaly = AnomalyFactory(provider=ProviderFactory(organization=org), date=recent(2))
    read = Anomaly.objects.get(pk=anomaly.pk)
    Anomaly.objects.filter(pk=anomaly.pk).delete()
    with pytest.raises(Http404, match="no longer exists"):
        anomaly_dismiss(anomaly=read, user=None, reason="Planned")
    with pytest.raises(Http404, match="no longer exists"):
        anomaly_reopen(anomaly=read)
    response = api.post(f"{URL}/{anomaly.pk}/dismiss", {"reason": "Planned"}, format="json")
    assert response.status_code == 404 and response.json()["code"] == "NOT_FOUND"


@pytest.mark.django_db
def test_dismissal_through_the_api_is_in_the_anomalys_admin_history(
    api, membership, org, admin_client
):
    # Finance staff read who dismissed what and why in the admin's History; a dismissal
    # made through the API left nothing there.
    from django.contrib.admin.models import LogEntry

    anomaly = AnomalyFactory(provider=ProviderFactory(organization=org), date=recent(2))
    assert api.post(f"{URL}/{anomaly.pk}/dismiss", {"reason": "Planned migration"},
                    format="json").status_code == 200
    assert api.post(f"{URL}/{anomaly.pk}/dismiss", {"reason": "Again"},
                    format="json").status_code == 409  # no second entry
    entries = LogEntry.objects.filter(object_id=str(anomaly.pk))
    assert [entry.change_message for entry in entries] == [
        'Dismissed through the API: "Planned migration"']
    assert entries.get().user == membership.user
    history = admin_client.get(f"/admin/costs/anomaly/{anomaly.pk}/history/")
    assert "Dismissed through the API: &quot;Planned migration&quot;" in history.content.decode()
