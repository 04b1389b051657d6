"""GET /costs/overview on hand-computed data (leap years, month lengths, empty months)."""

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from tests.factories import CostRecordFactory, ProviderFactory

URL = "/api/v1/costs/overview"


@pytest.fixture
def today(monkeypatch):
    """Set the server's UTC day: ``today(date(2024, 3, 31))``."""

    def set_today(day: date) -> None:
        monkeypatch.setattr("costs.selectors.utc_today", lambda: day)

    return set_today


def _get(api, path=URL):
    response = api.get(path)
    assert response.status_code == 200, response.content
    return json.loads(response.content, parse_float=Decimal)


def _spend(provider, day, amount, **fields):
    return CostRecordFactory(provider=provider, day=day, billed_amount=Decimal(amount), **fields)


@pytest.mark.django_db
def test_overview_march_31_of_leap_year_compares_with_february_1_to_29(api, org, today):
    today(date(2024, 3, 31))
    aws = ProviderFactory(organization=org, name="AWS")
    gcp = ProviderFactory(organization=org, name="GCP")
    idle = ProviderFactory(organization=org, name="Idle")
    _spend(aws, date(2024, 1, 31), "999")  # two months ago: nowhere
    _spend(aws, date(2024, 2, 1), "100")
    _spend(aws, date(2024, 2, 28), "10")
    _spend(aws, date(2024, 2, 29), "20", service="S3")
    _spend(aws, date(2024, 3, 1), "50")
    _spend(aws, date(2024, 3, 31), "25.005")
    _spend(aws, date(2024, 4, 1), "777")  # the future: nowhere
    _spend(gcp, date(2024, 3, 15), "30")
    _spend(ProviderFactory(), date(2024, 3, 10), "5000")  # another organization

    body = _get(api)
    assert body["current_month"] == {
        "amount": Decimal("105.01"),  # 50 + 25.005 + 30, rounded half up only on output
        "currency": "USD",
        "from": "2024-03-01",
        "to": "2024-03-31",
    }
    assert body["last_month"] == {"amount": Decimal("130.00"), "currency": "USD"}
    # (105.005 - 130) / 130 = -19.227 %
    assert body["mom_change_percent"] == Decimal("-19.2")
    assert body["by_provider"] == [
        {"provider_id": aws.id, "name": "AWS", "amount": Decimal("75.01")},
        {"provider_id": gcp.id, "name": "GCP", "amount": Decimal("30.00")},
        {"provider_id": idle.id, "name": "Idle", "amount": 0},
    ]


@pytest.mark.django_db
def test_overview_march_31_of_common_year_compares_with_february_1_to_28(api, org, today):
    today(date(2023, 3, 31))
    aws = ProviderFactory(organization=org)
    _spend(aws, date(2023, 2, 1), "20")
    _spend(aws, date(2023, 2, 28), "20")
    _spend(aws, date(2023, 3, 31), "60")
    body = _get(api)
    assert body["last_month"]["amount"] == Decimal("40.00")
    assert body["mom_change_percent"] == Decimal("50.0")


@pytest.mark.django_db
def test_overview_leap_day_today_compares_with_january_1_to_29(api, org, today):
    today(date(2024, 2, 29))
    aws = ProviderFactory(organization=org)
    _spend(aws, date(2024, 1, 29), "10")
    _spend(aws, date(2024, 1, 30), "1000")  # after the comparable days
    _spend(aws, date(2024, 2, 29), "15")
    body = _get(api)
    assert body["current_month"]["from"] == "2024-02-01"
    assert body["current_month"]["to"] == "2024-02-29"
    assert body["current_month"]["amount"] == Decimal("15.00")
    assert body["last_month"]["amount"] == Decimal("1010.00")
    assert body["mom_change_percent"] == Decimal("50.0")


@pytest.mark.django_db
def test_overview_mid_month_compares_same_days_only(api, org, today):
    today(date(2024, 3, 15))
    aws = ProviderFactory(organization=org)
    _spend(aws, date(2024, 2, 15), "100")
    _spend(aws, date(2024, 2, 16), "500")  # day 16 is not comparable yet
    _spend(aws, date(2024, 3, 10), "92")
    body = _get(api)
    assert body["last_month"]["amount"] == Decimal("600.00")
    assert body["mom_change_percent"] == Decimal("-8.0")


@pytest.mark.django_db
def test_overview_january_compares_with_december_of_previous_year(api, org, today):
    today(date(2024, 1, 14))
    aws = ProviderFactory(organization=org)
    _spend(aws, date(2023, 11, 30), "1")  # not last month
    _spend(aws, date(2023, 12, 1), "3")
    _spend(aws, date(2023, 12, 31), "5")
    _spend(aws, date(2024, 1, 1), "4")
    body = _get(api)
    assert body["current_month"]["from"] == "2024-01-01"
    assert body["last_month"]["amount"] == Decimal("8.00")
    assert body["mom_change_percent"] == Decimal("33.3")  # (4 - 3) / 3


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("current", "comparable", "expected"),
    [("8.5", "8", "6.3"), ("7.5", "8", "-6.3"), ("0", "8", "-100.0"), ("16", "8", "100.0")],
)
def test_overview_mom_change_percent_has_one_decimal_rounded_half_up(
    api, org, today, current, comparable, expected
):
    today(date(2024, 5, 10))
    aws = ProviderFactory(organization=org)
    _spend(aws, date(2024, 4, 10), comparable)
    if current != "0":
        _spend(aws, date(2024, 5, 10), current)
    assert _get(api)["mom_change_percent"] == Decimal(expected)


@pytest.mark.django_db
def test_overview_mom_change_is_null_when_comparable_days_have_no_spend(api, org, today):
    today(date(2024, 3, 5))
    aws = ProviderFactory(organization=org)
    _spend(aws, date(2024, 2, 20), "20")  # last month, but after day 5
    _spend(aws, date(2024, 3, 1), "10")
    body = _get(api)
    assert body["last_month"]["amount"] == Decimal("20.00")
    assert body["current_month"]["amount"] == Decimal("10.00")
    assert body["mom_change_percent"] is None


@pytest.mark.django_db
def test_overview_empty_organization_is_all_zero(api, today):
    today(date(2024, 3, 31))
    body = _get(api)
    assert body["current_month"] == {
        "amount": 0, "currency": "USD", "from": "2024-03-01", "to": "2024-03-31"
    }
    assert body["last_month"] == {"amount": 0, "currency": "USD"}
    assert body["mom_change_percent"] is None
    assert body["by_provider"] == []


@pytest.mark.django_db
def test_overview_shape_matches_spec_with_numbers_not_strings(api, org, today):
    today(date(2024, 1, 14))
    ProviderFactory(organization=org, name="AWS Production")
    _spend(ProviderFactory(organization=org, name="GCP"), date(2024, 1, 2), "431.50")
    body = api.get(URL).json()
    assert {"current_month", "last_month", "mom_change_percent", "by_provider"} <= set(body)
    assert set(body["current_month"]) == {"amount", "currency", "from", "to"}
    assert set(body["last_month"]) == {"amount", "currency"}
    assert all(set(item) == {"provider_id", "name", "amount"} for item in body["by_provider"])
    assert body["current_month"]["amount"] == 431.5
    assert isinstance(body["by_provider"][0]["amount"], float)
    assert [item["name"] for item in body["by_provider"]] == ["GCP", "AWS Production"]


@pytest.mark.django_db
def test_overview_ties_are_ordered_by_name(api, org, today):
    today(date(2024, 3, 3))
    for name in ("b", "a", "c"):
        _spend(ProviderFactory(organization=org, name=name), date(2024, 3, 1), "1")
    assert [item["name"] for item in _get(api)["by_provider"]] == ["a", "b", "c"]


@pytest.mark.django_db
def test_overview_negative_credits_are_summed(api, org, today):
    today(date(2024, 3, 3))
    aws = ProviderFactory(organization=org)
    _spend(aws, date(2024, 3, 1), "10.10")
    _spend(aws, date(2024, 3, 2), "-2.106", service="Credit")
    assert _get(api)["current_month"]["amount"] == Decimal("7.99")  # 7.994


@pytest.mark.django_db
def test_overview_mixed_currencies_is_422_naming_them(api, org, today):
    today(date(2024, 3, 31))
    _spend(ProviderFactory(organization=org), date(2024, 3, 1), "1", currency="USD")
    _spend(ProviderFactory(organization=org), date(2024, 2, 1), "1", currency="EUR")
    response = api.get(URL)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "MIXED_CURRENCIES"
    assert body["details"] == {"currencies": ["EUR", "USD"]}
    assert "EUR" in body["error"]
    assert "USD" in body["error"]


@pytest.mark.django_db
def test_overview_of_one_provider_answers_an_organization_of_several_currencies(api, org, today):
    # The 422 above tells the client to scope the request with provider_id: each
    # provider's overview is then in its own currency, its by_provider that provider only.
    today(date(2024, 3, 31))
    dollars = ProviderFactory(organization=org, name="AWS")
    euros = ProviderFactory(organization=org, name="Azure")
    _spend(dollars, date(2024, 2, 10), "40", currency="USD")
    _spend(dollars, date(2024, 3, 10), "30", currency="USD")
    _spend(euros, date(2024, 2, 5), "200", currency="EUR")
    _spend(euros, date(2024, 3, 5), "100", currency="EUR")
    _spend(euros, date(2024, 3, 6), "50", currency="EUR")
    assert api.get(URL).status_code == 422

    body = _get(api, f"{URL}?provider_id={euros.id}")
    assert body["current_month"] == {
        "amount": 150, "currency": "EUR", "from": "2024-03-01", "to": "2024-03-31"
    }
    assert body["last_month"] == {"amount": 200, "currency": "EUR"}
    assert body["mom_change_percent"] == Decimal("-25.0")
    assert body["by_provider"] == [{"provider_id": euros.id, "name": "Azure", "amount": 150}]
    body = _get(api, f"{URL}?provider_id={dollars.id}")
    assert body["current_month"]["amount"] == 30 and body["current_month"]["currency"] == "USD"
    assert body["by_provider"] == [{"provider_id": dollars.id, "name": "AWS", "amount": 30}]


@pytest.mark.django_db
def test_overview_provider_id_must_be_a_provider_of_the_organization(api, other_api, org, today):
    today(date(2024, 3, 31))
    mine = ProviderFactory(organization=org)
    response = api.get(f"{URL}?provider_id=x")
    assert response.status_code == 400
    assert set(response.json()["details"]) == {"provider_id"}
    assert api.get(f"{URL}?provider_id=999999").status_code == 404
    assert other_api.get(f"{URL}?provider_id={mine.id}").status_code == 404  # tenancy


@pytest.mark.django_db
def test_overview_single_non_default_currency_is_reported(api, org, today):
    today(date(2024, 3, 31))
    _spend(ProviderFactory(organization=org), date(2024, 3, 1), "1", currency="EUR")
    _spend(ProviderFactory(organization=org), date(2023, 1, 1), "1", currency="USD")  # old
    body = _get(api)
    assert body["current_month"]["currency"] == "EUR"
    assert body["last_month"]["currency"] == "EUR"


@pytest.mark.django_db
def test_overview_viewer_reads_and_unknown_params_are_ignored(viewer_api, org, today):
    today(date(2024, 3, 31))
    _spend(ProviderFactory(organization=org), date(2024, 3, 2), "3")
    body = _get(viewer_api, URL + "/?days=abc&group_by=x")
    assert body["current_month"]["amount"] == Decimal("3.00")


@pytest.mark.django_db
def test_overview_other_organization_sees_only_its_own(other_api, org, today):
    today(date(2024, 3, 31))
    _spend(ProviderFactory(organization=org), date(2024, 3, 2), "3")
    body = _get(other_api)
    assert body["current_month"]["amount"] == 0
    assert body["by_provider"] == []


@pytest.mark.django_db
def test_overview_default_today_is_the_utc_day(api, org, monkeypatch):
    # 00:30 UTC on April 1 is still March 31 in the Americas: the billing day is April 1.
    instant = datetime(2024, 4, 1, 0, 30, tzinfo=UTC)
    monkeypatch.setattr("django.utils.timezone.now", lambda: instant)
    body = _get(api)
    assert (body["current_month"]["from"], body["current_month"]["to"]) == (
        "2024-04-01", "2024-04-01"
    )
