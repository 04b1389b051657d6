"""GET /costs/trend on hand-computed data: zero-filled buckets, Monday weeks across years,
months cut by the window, leap days, exact sums and largest-remainder rounding."""

import json
import random
from datetime import date, timedelta
from decimal import Decimal

import pytest

from costs.money import round_parts, to_cents
from tests.factories import CostRecordFactory, ProviderFactory

URL = "/api/v1/costs/trend"


@pytest.fixture
def today(monkeypatch):
    def set_today(day: date) -> None:
        monkeypatch.setattr("costs.selectors.utc_today", lambda: day)

    return set_today


@pytest.fixture
def aws(org):
    return ProviderFactory(organization=org, name="AWS")


def _trend(api, query=""):
    response = api.get(f"{URL}?{query}")
    assert response.status_code == 200, response.content
    return json.loads(response.content, parse_float=Decimal)


def _spend(provider, day, amount, **fields):
    return CostRecordFactory(provider=provider, day=day, billed_amount=Decimal(amount), **fields)


def _by_date(body):
    return {item["date"]: (item["amount"], item["breakdown"]) for item in body["data"]}


# --- day buckets -----------------------------------------------------------------------


@pytest.mark.django_db
def test_trend_default_is_30_daily_buckets_ending_today_zero_filled(api, aws, today):
    today(date(2024, 3, 1))  # 30 days back from March 1 of a leap year starts on Feb 1
    _spend(aws, date(2024, 1, 31), "5")  # one day before the window
    _spend(aws, date(2024, 2, 28), "10")
    _spend(aws, date(2024, 2, 29), "20")
    _spend(aws, date(2024, 2, 29), "1.5", service="S3")
    _spend(aws, date(2024, 3, 1), "7")
    body = _trend(api)
    dates = [item["date"] for item in body["data"]]
    assert len(dates) == 30
    assert dates[0] == "2024-02-01"
    assert dates[-1] == "2024-03-01"
    assert dates == [(date(2024, 2, 1) + timedelta(days=n)).isoformat() for n in range(30)]
    buckets = _by_date(body)
    assert buckets["2024-02-01"] == (0, {})
    assert buckets["2024-02-27"] == (0, {})
    assert buckets["2024-02-28"] == (Decimal("10.00"), {"AWS": Decimal("10.00")})
    assert buckets["2024-02-29"] == (Decimal("21.50"), {"AWS": Decimal("21.50")})
    assert buckets["2024-03-01"] == (Decimal("7.00"), {"AWS": Decimal("7.00")})
    assert body["currency"] == "USD"


@pytest.mark.django_db
def test_trend_days_1_is_today_only(api, aws, today):
    today(date(2024, 2, 29))
    _spend(aws, date(2024, 2, 28), "1")
    _spend(aws, date(2024, 2, 29), "2")
    assert _trend(api, "days=1")["data"] == [
        {"date": "2024-02-29", "amount": Decimal("2.00"), "breakdown": {"AWS": Decimal("2.00")}}
    ]


@pytest.mark.django_db
def test_trend_ignores_future_records(api, aws, today):
    today(date(2024, 3, 1))
    _spend(aws, date(2024, 3, 2), "100")
    body = _trend(api, "days=2")
    assert [item["amount"] for item in body["data"]] == [0, 0]


@pytest.mark.django_db
def test_trend_empty_period_is_all_zero_buckets(api, aws, today):
    today(date(2024, 3, 31))
    _spend(aws, date(2023, 1, 1), "100")  # long ago
    # 31 days from Friday 2024-03-01: weeks of Feb 26, Mar 4, 11, 18, 25.
    for query, count in (("days=7", 7), ("days=31&granularity=week", 5),
                         ("days=61&granularity=month", 3)):  # Jan 31 .. Mar 31
        data = _trend(api, query)["data"]
        assert len(data) == count
        assert all(item["amount"] == 0 and item["breakdown"] == {} for item in data)


# --- week buckets ----------------------------------------------------------------------


@pytest.mark.django_db
def test_trend_week_buckets_start_on_monday_across_the_new_year(api, aws, today):
    # Window of 10 days: Friday 2024-12-27 .. Sunday 2025-01-05.
    today(date(2025, 1, 5))
    _spend(aws, date(2024, 12, 26), "100")  # Thursday of the first week, before the window
    _spend(aws, date(2024, 12, 27), "10")
    _spend(aws, date(2024, 12, 29), "5")
    _spend(aws, date(2024, 12, 30), "1")  # Monday: the week 2024-12-30..2025-01-05
    _spend(aws, date(2025, 1, 1), "2")
    _spend(aws, date(2025, 1, 5), "3")
    body = _trend(api, "days=10&granularity=week")
    assert body["data"] == [
        # The cut first week keeps its Monday as date but sums only Dec 27..29.
        {"date": "2024-12-23", "amount": Decimal("15.00"), "breakdown": {"AWS": Decimal("15.00")}},
        {"date": "2024-12-30", "amount": Decimal("6.00"), "breakdown": {"AWS": Decimal("6.00")}},
    ]


@pytest.mark.django_db
def test_trend_week_window_starting_mid_week_counts_only_days_inside(api, aws, today):
    # 8 days: Wednesday 2024-03-06 .. Wednesday 2024-03-13.
    today(date(2024, 3, 13))
    _spend(aws, date(2024, 3, 4), "1000")  # Monday of the first week, outside the window
    _spend(aws, date(2024, 3, 5), "1000")  # Tuesday, outside
    _spend(aws, date(2024, 3, 6), "4")
    _spend(aws, date(2024, 3, 10), "6")  # Sunday
    _spend(aws, date(2024, 3, 11), "8")  # Monday
    _spend(aws, date(2024, 3, 13), "0.5")
    body = _trend(api, "days=8&granularity=week")
    assert [(item["date"], item["amount"]) for item in body["data"]] == [
        ("2024-03-04", Decimal("10.00")),
        ("2024-03-11", Decimal("8.50")),
    ]


@pytest.mark.django_db
def test_trend_week_today_monday_is_its_own_bucket(api, aws, today):
    today(date(2024, 1, 1))  # a Monday
    _spend(aws, date(2023, 12, 31), "2")
    _spend(aws, date(2024, 1, 1), "3")
    body = _trend(api, "days=2&granularity=week")
    assert [(item["date"], item["amount"]) for item in body["data"]] == [
        ("2023-12-25", Decimal("2.00")),
        ("2024-01-01", Decimal("3.00")),
    ]


@pytest.mark.django_db
def test_trend_week_empty_weeks_are_present(api, aws, today):
    today(date(2024, 3, 31))  # Sunday; 21 days = three full weeks from Monday 2024-03-11
    _spend(aws, date(2024, 3, 12), "1")
    _spend(aws, date(2024, 3, 30), "2")
    body = _trend(api, "days=21&granularity=week")
    assert body["data"] == [
        {"date": "2024-03-11", "amount": Decimal("1.00"), "breakdown": {"AWS": Decimal("1.00")}},
        {"date": "2024-03-18", "amount": 0, "breakdown": {}},
        {"date": "2024-03-25", "amount": Decimal("2.00"), "breakdown": {"AWS": Decimal("2.00")}},
    ]


# --- month buckets ---------------------------------------------------------------------


@pytest.mark.django_db
def test_trend_month_buckets_start_on_the_first_and_first_is_cut(api, aws, today):
    today(date(2024, 3, 15))  # 60 days: 2024-01-16 .. 2024-03-15
    _spend(aws, date(2024, 1, 15), "1000")  # before the window, same month
    _spend(aws, date(2024, 1, 16), "1")
    _spend(aws, date(2024, 1, 31), "1")
    _spend(aws, date(2024, 2, 29), "2")
    _spend(aws, date(2024, 3, 1), "4")
    _spend(aws, date(2024, 3, 15), "8")
    _spend(aws, date(2024, 3, 16), "16")  # tomorrow
    body = _trend(api, "days=60&granularity=month")
    assert [(item["date"], item["amount"]) for item in body["data"]] == [
        ("2024-01-01", Decimal("2.00")),
        ("2024-02-01", Decimal("2.00")),
        ("2024-03-01", Decimal("12.00")),
    ]


@pytest.mark.django_db
def test_trend_month_buckets_across_the_year_end(api, aws, today):
    today(date(2025, 1, 31))
    _spend(aws, date(2024, 11, 30), "3")
    _spend(aws, date(2024, 12, 31), "5")
    _spend(aws, date(2025, 1, 1), "7")
    body = _trend(api, "days=92&granularity=month")  # 2024-11-01 .. 2025-01-31
    assert [(item["date"], item["amount"]) for item in body["data"]] == [
        ("2024-11-01", Decimal("3.00")),
        ("2024-12-01", Decimal("5.00")),
        ("2025-01-01", Decimal("7.00")),
    ]


@pytest.mark.django_db
def test_trend_maximum_window_of_3650_days(api, aws, today):
    today(date(2024, 3, 31))  # 3650 days: 2014-04-04 .. 2024-03-31
    _spend(aws, date(2014, 4, 3), "1000")  # one day too old
    _spend(aws, date(2014, 4, 4), "1")
    months = _trend(api, "days=3650&granularity=month")["data"]
    assert len(months) == 120
    assert (months[0]["date"], months[0]["amount"]) == ("2014-04-01", Decimal("1.00"))
    assert months[-1]["date"] == "2024-03-01"
    weeks = _trend(api, "days=3650&granularity=week")["data"]
    assert weeks[0]["date"] == "2014-03-31"  # Monday before Friday 2014-04-04
    assert weeks[-1]["date"] == "2024-03-25"
    assert len(weeks) == 522
    days = _trend(api, "days=3650")["data"]
    assert len(days) == 3650
    assert days[0]["date"] == "2014-04-04"


# --- group_by --------------------------------------------------------------------------


@pytest.mark.django_db
def test_trend_group_by_provider_service_and_region(api, org, aws, today):
    today(date(2024, 3, 1))
    gcp = ProviderFactory(organization=org, name="GCP")
    _spend(aws, date(2024, 3, 1), "180", service="EC2", region="us-east-1")
    _spend(aws, date(2024, 3, 1), "45", service="S3", region="")
    _spend(aws, date(2024, 3, 1), "0.40", service="S3", region="global")
    _spend(gcp, date(2024, 3, 1), "60", service="EC2", region="europe-west1")
    expected = {
        "provider": {"AWS": Decimal("225.40"), "GCP": Decimal("60.00")},
        "service": {"EC2": Decimal("240.00"), "S3": Decimal("45.40")},
        "region": {
            "us-east-1": Decimal("180.00"),
            "global": Decimal("45.40"),
            "europe-west1": Decimal("60.00"),
        },
    }
    for group_by, breakdown in expected.items():
        data = _trend(api, f"days=1&group_by={group_by}")["data"]
        assert data == [{"date": "2024-03-01", "amount": Decimal("285.40"), "breakdown": breakdown}]


@pytest.mark.django_db
def test_trend_provider_id_scopes_to_one_provider(api, org, aws, today):
    today(date(2024, 3, 1))
    gcp = ProviderFactory(organization=org, name="GCP")
    _spend(aws, date(2024, 3, 1), "1")
    _spend(gcp, date(2024, 3, 1), "2", currency="EUR")
    data = _trend(api, f"days=1&provider_id={gcp.id}")
    assert data["currency"] == "EUR"
    assert data["data"][0]["breakdown"] == {"GCP": Decimal("2.00")}


@pytest.mark.django_db
def test_trend_mixed_currencies_is_422_naming_them(api, org, aws, today):
    today(date(2024, 3, 1))
    _spend(aws, date(2024, 3, 1), "1", currency="USD")
    _spend(ProviderFactory(organization=org), date(2024, 2, 28), "2", currency="GBP")
    response = api.get(f"{URL}?days=7")
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "MIXED_CURRENCIES"
    assert body["details"] == {"currencies": ["GBP", "USD"]}
    assert "GBP" in body["error"]
    # A window that holds only one currency answers.
    assert api.get(f"{URL}?days=1").status_code == 200


# --- money -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_trend_sums_exactly_and_rounds_only_on_output(api, org, aws, today):
    today(date(2024, 3, 1))
    for service in ("A", "B", "C", "D"):
        _spend(aws, date(2024, 3, 1), "0.0025", service=service)
    _spend(aws, date(2024, 3, 1), "0.1", service="E")
    _spend(aws, date(2024, 3, 1), "0.2", service="F")
    data = _trend(api, "days=1")["data"]
    # 4 x 0.0025 + 0.1 + 0.2 = 0.31 exactly (rounding each record first would give 0.30).
    assert data[0]["amount"] == Decimal("0.31")
    assert data[0]["breakdown"] == {"AWS": Decimal("0.31")}


@pytest.mark.django_db
def test_trend_amount_equals_sum_of_rounded_breakdown(api, org, today):
    today(date(2024, 3, 1))
    for name in ("A", "B", "C"):
        _spend(ProviderFactory(organization=org, name=name), date(2024, 3, 1), "0.335")
    item = _trend(api, "days=1")["data"][0]
    # 3 x 0.335 = 1.005 -> 1.01; rounding each part alone would give 3 x 0.34 = 1.02.
    assert item["amount"] == Decimal("1.01")
    assert sum(item["breakdown"].values()) == item["amount"]
    assert sorted(item["breakdown"].values()) == [Decimal("0.33"), Decimal("0.34"), Decimal("0.34")]


@pytest.mark.django_db
def test_trend_amount_equals_sum_of_breakdown_with_credits(api, org, today):
    today(date(2024, 3, 1))
    _spend(ProviderFactory(organization=org, name="A"), date(2024, 3, 1), "10.006")
    _spend(ProviderFactory(organization=org, name="B"), date(2024, 3, 1), "-3.333")
    _spend(ProviderFactory(organization=org, name="C"), date(2024, 3, 1), "0.004")
    item = _trend(api, "days=1")["data"][0]
    assert item["amount"] == Decimal("6.68")  # 6.677
    assert sum(item["breakdown"].values()) == item["amount"]
    for name, exact in (("A", "10.006"), ("B", "-3.333"), ("C", "0.004")):
        assert abs(item["breakdown"][name] - Decimal(exact)) < Decimal("0.01")


@pytest.mark.django_db
def test_trend_amounts_are_json_numbers(api, aws, today):
    today(date(2024, 3, 1))
    _spend(aws, date(2024, 3, 1), "285.40")
    item = api.get(f"{URL}?days=1").json()["data"][0]
    assert item["amount"] == 285.4
    assert isinstance(item["breakdown"]["AWS"], float)


def test_round_parts_rounded_parts_always_add_up_to_rounded_total():
    rng = random.Random(20240229)
    for _ in range(500):
        parts = {
            f"k{n}": Decimal(rng.randint(-500_000, 5_000_000)) / Decimal(10**rng.choice([3, 4, 6]))
            for n in range(rng.randint(1, 12))
        }
        total, rounded = round_parts(parts)
        exact = sum(parts.values(), Decimal(0))
        assert total == to_cents(exact)
        assert sum(rounded.values(), Decimal(0)) == total
        assert set(rounded) == set(parts)
        for key, value in rounded.items():
            assert value == value.quantize(Decimal("0.01"))
            assert abs(value - parts[key]) < Decimal("0.01")


def test_round_parts_empty_breakdown_is_zero():
    assert round_parts({}) == (Decimal("0.00"), {})


@pytest.mark.parametrize(
    ("value", "cents"),
    [("0.005", "0.01"), ("0.004999", "0.00"), ("-0.005", "-0.01"), ("2.675", "2.68"), (None, "0.00")],
)
def test_to_cents_rounds_half_up(value, cents):
    assert to_cents(Decimal(value) if value else None) == Decimal(cents)


# --- tenancy ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_trend_counts_only_the_callers_organization(api, aws, today):
    today(date(2024, 3, 1))
    _spend(aws, date(2024, 3, 1), "1")
    _spend(ProviderFactory(name="Theirs"), date(2024, 3, 1), "1000")
    assert _trend(api, "days=1")["data"][0]["breakdown"] == {"AWS": Decimal("1.00")}


@pytest.mark.django_db
def test_trend_provider_id_of_another_org_is_404_like_unknown(api, other_api, aws, today):
    today(date(2024, 3, 1))
    foreign = other_api.get(f"{URL}?provider_id={aws.id}")
    missing = api.get(f"{URL}?provider_id={aws.id + 1000}")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()
    assert foreign.json()["code"] == "NOT_FOUND"
    assert api.get(f"{URL}?provider_id={aws.id}").status_code == 200


@pytest.mark.django_db
def test_trend_viewer_reads(viewer_api, aws, today):
    today(date(2024, 3, 1))
    assert viewer_api.get(URL).status_code == 200


# --- parameters ------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("days=abc", "days"),
        ("days=0", "days"),
        ("days=-3", "days"),
        ("days=3651", "days"),
        ("days=1.5", "days"),
        ("days=99999999999999999999999", "days"),
        ("granularity=hour", "granularity"),
        ("granularity=Week", "granularity"),
        ("group_by=color", "group_by"),
        ("provider_id=x", "provider_id"),
        ("provider_id=0", "provider_id"),
        ("provider_id=-1", "provider_id"),
    ],
)
def test_trend_bad_parameter_is_400_naming_it(api, query, param):
    response = api.get(f"{URL}?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid query parameter"
    assert body["code"] == "INVALID_PARAMETER"
    assert list(body["details"]) == [param]
    assert all(isinstance(message, str) for message in body["details"][param])


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["abc", "0", "-3", "3651"])
def test_trend_days_error_message_names_the_range(api, value):
    body = api.get(f"{URL}?days={value}").json()
    assert body["details"] == {"days": ["must be between 1 and 3650"]}


@pytest.mark.django_db
def test_trend_several_bad_parameters_are_all_named(api):
    body = api.get(f"{URL}?days=0&granularity=hour&group_by=color&provider_id=x").json()
    assert set(body["details"]) == {"days", "granularity", "group_by", "provider_id"}


@pytest.mark.django_db
def test_trend_huge_provider_id_is_not_a_server_error(api):
    response = api.get(f"{URL}?provider_id=99999999999999999999")
    assert response.status_code in (400, 404)
    assert response.json()["code"] in ("INVALID_PARAMETER", "NOT_FOUND")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "count"),
    [
        ("days=1", 1),
        ("days=3650", 3650),
        ("granularity=day", 30),
        ("granularity=week", 5),  # 2024-02-01 (Thursday) .. 2024-03-01: Jan 29 .. Feb 26
        ("granularity=month", 2),
        ("group_by=provider", 30),
        ("group_by=service", 30),
        ("group_by=region", 30),
        ("color=blue&days=7", 7),
        ("days=7&days_typo=9", 7),
    ],
)
def test_trend_each_valid_parameter_value_is_accepted(api, aws, today, query, count):
    today(date(2024, 3, 1))
    assert len(_trend(api, query)["data"]) == count


@pytest.mark.django_db
def test_trend_trailing_slash_works(api, aws, today):
    today(date(2024, 3, 1))
    response = api.get(URL + "/?days=3")
    assert response.status_code == 200
    assert len(response.json()["data"]) == 3
