import re
from datetime import date, timedelta
from decimal import Decimal
from html import unescape

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, Permission

from accounts.models import Membership
from costs.admin_review import CHART_W, PAD_L, PAD_R
from costs.models import AlertWebhook, Anomaly, WebhookDelivery
from tests.costs.test_anomalies import SPIKE, TODAY, detect, weekly_series, write_series
from tests.costs.test_anomaly_gaps import GAP, gapped_provider, spend
from tests.costs.test_anomaly_gaps import day as gap_day
from tests.costs.test_anomaly_gaps import detect as detect_gapped
from tests.factories import AnomalyFactory, MembershipFactory, ProviderFactory, UserFactory

LIST = "/admin/costs/anomaly/"
SECRET = "never-show-this-webhook-secret"
CREDENTIAL = "AKIA-NEVER-SHOWN-SECRET"


@pytest.fixture
def superuser(db):
    return UserFactory(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def reviewer(org):
    """A finance reviewer who is a viewer of ``org``: the admin shows them only its data."""
    user = UserFactory(username="finance", is_staff=True)
    user.groups.add(Group.objects.get(name="Finance reviewers"))
    MembershipFactory(organization=org, user=user, role=Membership.Role.VIEWER)
    return user


@pytest.fixture
def detected(org):
    """A provider with 200 days of records and a real spike, detected."""
    provider = ProviderFactory(organization=org, name="AWS Production")
    ec2 = weekly_series(base=400, seed=1)
    ec2[180] *= 3
    write_series(provider, {"EC2": ec2, "S3": weekly_series(base=60, weekend=1.0, seed=2)})
    detect(provider)
    return provider


def login(client, user):
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_admin_list_filters_search_and_impact_sort(client, reviewer, org):
    provider = ProviderFactory(organization=org, name="AWS Production")
    small = AnomalyFactory(provider=provider, service="S3", impact_amount=Decimal("20"), severity="low")
    big = AnomalyFactory(provider=provider, service="EC2", impact_amount=Decimal("900"))
    dismissed = AnomalyFactory(provider=provider, status="dismissed", dismiss_reason="ok")
    login(client, reviewer)

    response = client.get(LIST)
    assert response.status_code == 200
    html = response.content.decode()
    for column in ("impact", "deviation", "top services", "severity", "expected"):
        assert f">{column}" in html.lower() or column in html.lower()

    def listed(**params):
        return [a.pk for a in client.get(LIST, params).context["cl"].result_list]

    assert listed(status__exact="dismissed") == [dismissed.pk]
    assert listed(severity__exact="low") == [small.pk]
    assert listed(q="EC2") == [big.pk]
    impact_column = response.context["cl"].list_display.index("impact")
    assert listed(o=f"-{impact_column}") == [big.pk, dismissed.pk, small.pk]
    assert listed(o=f"{impact_column}")[0] == small.pk
    assert "Detect now" in html


@pytest.mark.django_db
def test_admin_change_page_draws_the_series_with_band_and_marker(client, reviewer, detected):
    anomaly = Anomaly.objects.get(provider=detected, service="EC2", date=SPIKE)
    response = login(client, reviewer).get(f"{LIST}{anomaly.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<svg id="anomaly-chart"' in html
    assert 'class="expected-band"' in html and 'class="actual-line"' in html
    assert 'class="anomaly-marker"' in html
    assert SPIKE.isoformat() in html
    assert "cdn" not in html.lower()
    assert "Dismiss with a reason" in html
    assert 'name="_save"' not in html  # amounts are read-only: nothing to save
    chart = response.context["anomaly_chart"]
    assert chart["marker"]["day"] == SPIKE
    assert chart["first"] == SPIKE - timedelta(days=35)
    assert chart["last"] == SPIKE + timedelta(days=14)


def _chart_svg(client, anomaly) -> str:
    html = client.get(f"{LIST}{anomaly.pk}/change/").content.decode()
    start = html.index('<svg id="anomaly-chart"')
    return html[start : html.index("</svg>", start)]


def _subpaths(svg: str, css_class: str) -> list[list[float]]:
    """The x coordinates of each subpath (``M ... L ...``) of the chart's ``css_class`` path."""
    d = re.search(rf'<path class="{css_class}"[^>]* d="([^"]+)"', svg).group(1)
    return [[float(x) for x in re.findall(r"([\d.]+),[\d.]+", part)] for part in d.split("M")[1:]]


@pytest.mark.django_db
def test_admin_chart_places_days_by_date_and_breaks_at_unsynced_days(client, reviewer, org):
    spike = GAP.stop + 6
    provider = gapped_provider(org, spend(spike_on=spike))
    detect_gapped(provider)
    anomaly = Anomaly.objects.get(provider=provider, service="", date=gap_day(spike))
    svg = _chart_svg(login(client, reviewer), anomaly)

    # Each dot's x, by the day in its tooltip.
    dots = {
        date.fromisoformat(day): float(x)
        for x, day in re.findall(r'<circle cx="([\d.]+)"[^>]*><title>\w+ (\d{4}-\d\d-\d\d):', svg)
    }
    before, after = gap_day(GAP.start - 1), gap_day(GAP.stop)
    assert before in dots and after in dots
    assert not {gap_day(i) for i in GAP} & set(dots)
    # By date over the chart's 50 days: the 20 unsynced days keep their width, they are
    # not squeezed out (by position, the days either side of the gap were neighbours).
    first = anomaly.date - timedelta(days=35)
    step = (CHART_W - PAD_L - PAD_R) / 49
    assert all(x == pytest.approx(PAD_L + step * (d - first).days, abs=0.06) for d, x in dots.items())
    assert dots[after] - dots[before] == pytest.approx((GAP.stop - GAP.start + 1) * step, abs=0.1)

    # The spend line breaks at the gap: one subpath on each side, none across it.
    actual = _subpaths(svg, "actual-line")
    assert len(actual) == 2
    assert actual[0][-1] == dots[before] and actual[1][0] == dots[after]
    # So do the expected line and band (judged again from the fifth day after the gap).
    for css_class in ("expected-band", "expected-line"):
        parts = _subpaths(svg, css_class)
        assert len(parts) == 2, css_class
        assert all(max(xs) <= dots[before] or min(xs) >= dots[after] for xs in parts)
    assert "not synced" in svg
    assert f"{gap_day(GAP.start).isoformat()} to {gap_day(GAP.stop - 1).isoformat()}" in svg


@pytest.mark.django_db
def test_admin_dismiss_asks_for_a_reason_and_records_who(client, reviewer, detected):
    anomaly = Anomaly.objects.get(provider=detected, service="", date=SPIKE)
    login(client, reviewer)
    url = f"{LIST}{anomaly.pk}/dismiss/"
    page = client.get(url)
    assert page.status_code == 200 and 'name="reason"' in page.content.decode()

    empty = client.post(url, {"reason": "  "})
    assert empty.status_code == 200 and "This field is required" in empty.content.decode()
    anomaly.refresh_from_db()
    assert anomaly.status == "active"

    done = client.post(url, {"reason": "Quarterly load test, approved"})
    assert done.status_code == 302 and done["Location"].endswith(f"{anomaly.pk}/change/")
    anomaly.refresh_from_db()
    assert anomaly.status == "dismissed"
    assert (anomaly.dismissed_by, anomaly.dismiss_reason) == (reviewer, "Quarterly load test, approved")
    assert anomaly.dismissed_at is not None

    again = client.post(url, {"reason": "other"}, follow=True)
    assert "already dismissed" in again.content.decode()
    anomaly.refresh_from_db()
    assert anomaly.dismiss_reason == "Quarterly load test, approved"

    reopened = client.post(f"{LIST}{anomaly.pk}/reopen/")
    assert reopened.status_code == 302
    anomaly.refresh_from_db()
    assert (anomaly.status, anomaly.dismissed_by, anomaly.dismiss_reason) == ("active", None, "")


@pytest.mark.django_db
def test_admin_bulk_dismiss_via_intermediate_form_then_reopen(client, reviewer, detected):
    ids = [str(pk) for pk in Anomaly.objects.filter(provider=detected).values_list("pk", flat=True)]
    assert len(ids) == 2
    login(client, reviewer)
    form = client.post(LIST, {"action": "dismiss_selected", "_selected_action": ids, "index": 0})
    assert form.status_code == 200
    html = form.content.decode()
    assert 'name="reason"' in html and 'value="dismiss_selected"' in html
    assert Anomaly.objects.filter(status="dismissed").count() == 0

    done = client.post(
        LIST,
        {"action": "dismiss_selected", "_selected_action": ids, "apply": "yes",
         "reason": "Migration weekend"},
    )
    assert done.status_code == 302
    assert set(Anomaly.objects.values_list("status", "dismiss_reason", "dismissed_by")) == {
        ("dismissed", "Migration weekend", reviewer.pk)
    }

    client.post(LIST, {"action": "reopen_selected", "_selected_action": ids, "index": 0})
    assert set(Anomaly.objects.values_list("status", flat=True)) == {"active"}


@pytest.mark.django_db
def test_admin_detect_now_runs_detection(client, superuser, org, django_capture_on_commit_callbacks, monkeypatch):
    provider = ProviderFactory(organization=org)
    ec2 = weekly_series(base=400, seed=1)
    ec2[180] *= 3
    write_series(provider, {"EC2": ec2})
    monkeypatch.setattr("costs.selectors.utc_today", lambda: TODAY)
    login(client, superuser)
    assert client.get(f"{LIST}detect/").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"{LIST}detect/",
            {"provider": provider.pk, "date_from": SPIKE.isoformat(), "date_to": SPIKE.isoformat()},
        )
    assert response.status_code == 302
    assert Anomaly.objects.filter(provider=provider, date=SPIKE).count() == 2


@pytest.mark.django_db
def test_finance_reviewer_cannot_manage_keys_members_or_see_credentials(client, reviewer, org):
    provider = ProviderFactory(organization=org)
    provider.credentials = {"access_key_id": CREDENTIAL, "secret_access_key": CREDENTIAL}
    provider.save()
    login(client, reviewer)
    assert client.get("/admin/accounts/apikey/").status_code == 403
    assert client.get("/admin/accounts/apikey/add/").status_code == 403
    assert client.get("/admin/accounts/membership/").status_code == 403
    assert client.get("/admin/costs/alertwebhook/add/").status_code == 403
    page = client.get(f"/admin/providers/provider/{provider.pk}/change/")
    assert page.status_code == 200
    assert CREDENTIAL not in page.content.decode()
    assert provider.credentials_encrypted not in page.content.decode()
    assert client.get("/admin/costs/costrecord/").status_code == 200
    assert client.get("/admin/costs/webhookdelivery/").status_code == 200


@pytest.mark.django_db
def test_admin_webhook_secret_is_write_only(client, superuser, reviewer, org):
    login(client, superuser)
    response = client.post(
        "/admin/costs/alertwebhook/add/",
        {"organization": org.pk, "name": "Finance", "url": "https://hooks.example.com/x",
         "min_severity": "high", "max_age_days": 7, "is_active": "on", "new_secret": SECRET},
    )
    assert response.status_code == 302
    webhook = AlertWebhook.objects.get()
    assert webhook.secret == SECRET and SECRET not in webhook.secret_encrypted
    change = client.get(f"/admin/costs/alertwebhook/{webhook.pk}/change/").content.decode()
    assert SECRET not in change and webhook.secret_encrypted not in change
    # Saving without a new secret keeps the stored one.
    client.post(
        f"/admin/costs/alertwebhook/{webhook.pk}/change/",
        {"organization": org.pk, "name": "Finance 2", "url": "https://hooks.example.com/x",
         "min_severity": "medium", "max_age_days": 7, "is_active": "on", "new_secret": ""},
    )
    webhook.refresh_from_db()
    assert (webhook.name, webhook.secret) == ("Finance 2", SECRET)
    missing = client.post(
        "/admin/costs/alertwebhook/add/",
        {"organization": org.pk, "name": "No secret", "url": "https://hooks.example.com/y",
         "min_severity": "high", "max_age_days": 7},
    )
    assert missing.status_code == 200 and "a signing secret is required" in missing.content.decode()

    anomaly = AnomalyFactory(provider=ProviderFactory(organization=org))
    WebhookDelivery.objects.create(
        webhook=webhook, anomaly=anomaly, payload={"event": "cost.anomaly"}, status="failed",
        attempts=7, error="HTTP 503",
    )
    log = login(client, reviewer).get("/admin/costs/webhookdelivery/").content.decode()
    assert "HTTP 503" in log and SECRET not in log


def _hidden_form(html: str) -> tuple[str, dict[str, list[str]]]:
    """The dismiss page's form as a browser would submit it: its action and hidden inputs."""
    form = html[html.index('<form method="post"'):]
    action = unescape(re.search(r'action="([^"]*)"', form).group(1))
    hidden: dict[str, list[str]] = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form):
        hidden.setdefault(name, []).append(unescape(value))
    return action, hidden


@pytest.mark.django_db
def test_admin_bulk_dismiss_select_across_more_than_the_field_limit(client, reviewer, org):
    provider = ProviderFactory(organization=org, name="AWS Production")
    other = AnomalyFactory(provider=ProviderFactory(organization=org, name="GCP"))
    Anomaly.objects.bulk_create(
        AnomalyFactory.build(provider=provider, service=f"svc-{i}") for i in range(1100)
    )
    login(client, reviewer)
    filtered = f"{LIST}?provider__id__exact={provider.pk}"
    page_ids = [str(a.pk) for a in client.get(filtered).context["cl"].result_list]
    assert len(page_ids) == 50

    # "Select all 1100" ticks the page and sets select_across, as Django's actions.js does.
    confirm = client.post(
        filtered,
        {"action": "dismiss_selected", "_selected_action": page_ids, "select_across": "1",
         "index": 0},
    )
    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert "Dismiss 1100 anomalies" in html
    action, hidden = _hidden_form(html)
    assert action == filtered  # the filters go back with the form
    assert hidden["select_across"] == ["1"]
    assert sum(map(len, hidden.values())) < 100  # not one field per anomaly

    done = client.post(action, {**hidden, "reason": "Migration weekend"})
    assert done.status_code == 302
    assert set(
        Anomaly.objects.filter(provider=provider).values_list(
            "status", "dismiss_reason", "dismissed_by"
        )
    ) == {("dismissed", "Migration weekend", reviewer.pk)}
    other.refresh_from_db()
    assert other.status == "active"  # outside the filter
    assert LogEntry.objects.filter(change_message='Dismissed: "Migration weekend"').count() == 1100


@pytest.mark.django_db
def test_admin_dismiss_and_reopen_are_in_the_history(client, reviewer, org):
    anomaly = AnomalyFactory(provider=ProviderFactory(organization=org))
    login(client, reviewer)
    client.post(f"{LIST}{anomaly.pk}/dismiss/", {"reason": "Planned <migration>"})
    client.post(f"{LIST}{anomaly.pk}/reopen/")
    anomaly.refresh_from_db()
    assert (anomaly.status, anomaly.dismissed_by, anomaly.dismiss_reason) == ("active", None, "")

    history = client.get(f"{LIST}{anomaly.pk}/history/")
    assert history.status_code == 200
    html = unescape(history.content.decode())
    assert 'Dismissed: "Planned <migration>"' in html
    assert 'Reopened (was dismissed by finance: "Planned <migration>")' in html
    assert "<migration>" not in history.content.decode()  # escaped on the page

    # The bulk actions record the same.
    client.post(LIST, {"action": "dismiss_selected", "_selected_action": [anomaly.pk],
                       "apply": "yes", "reason": "Again"})
    client.post(LIST, {"action": "reopen_selected", "_selected_action": [anomaly.pk],
                       "index": 0})
    messages = list(
        LogEntry.objects.filter(object_id=str(anomaly.pk))
        .order_by("action_time", "pk").values_list("change_message", "user__username")
    )
    assert messages[2:] == [
        ('Dismissed: "Again"', "finance"),
        ('Reopened (was dismissed by finance: "Again")', "finance"),
    ]


WEBHOOK_URL = "https://hooks.slack.com/services/T0001/B0001/XyZsecretTOKENabcd"


@pytest.fixture
def webhook(org):
    webhook = AlertWebhook(organization=org, name="Slack #finance", url=WEBHOOK_URL)
    webhook.secret = SECRET
    webhook.save()
    WebhookDelivery.objects.create(
        webhook=webhook, anomaly=AnomalyFactory(provider=ProviderFactory(organization=org)),
        payload={"event": "cost.anomaly"}, status="failed", attempts=7, error="HTTP 503",
    )
    return webhook


@pytest.mark.django_db
def test_admin_webhook_url_is_masked_for_reviewers(client, reviewer, webhook):
    delivery = webhook.deliveries.get()
    login(client, reviewer)
    pages = [
        "/admin/costs/alertwebhook/",
        f"/admin/costs/alertwebhook/{webhook.pk}/change/",
        f"/admin/costs/alertwebhook/{webhook.pk}/history/",
        "/admin/costs/webhookdelivery/",
        f"/admin/costs/webhookdelivery/{delivery.pk}/change/",
        f"{LIST}{delivery.anomaly_id}/change/",
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        html = unescape(response.content.decode())
        assert "secretTOKEN" not in html and "/services/T0001" not in html, url
    listing = client.get("/admin/costs/alertwebhook/")
    assert "https://hooks.slack.com/…abcd" in unescape(listing.content.decode())
    # The URL is not searchable: no guessing it a character at a time.
    assert list(client.get("/admin/costs/alertwebhook/?q=secretTOKEN").context["cl"].result_list) == []
    change = unescape(client.get(f"/admin/costs/alertwebhook/{webhook.pk}/change/").content.decode())
    assert "https://hooks.slack.com/…abcd" in change


@pytest.mark.django_db
def test_admin_webhook_url_is_write_only_for_non_superusers(client, superuser, webhook, org):
    editor = UserFactory(username="ops", is_staff=True)
    editor.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_alertwebhook", "change_alertwebhook"])
    )
    MembershipFactory(organization=org, user=editor)
    url = f"/admin/costs/alertwebhook/{webhook.pk}/change/"
    page = login(client, editor).get(url).content.decode()
    assert 'name="url"' in page and "secretTOKEN" not in unescape(page)
    form = {"organization": org.pk, "name": "Renamed", "url": "", "min_severity": "high",
            "max_age_days": 7, "is_active": "on", "new_secret": ""}
    assert client.post(url, form).status_code == 302
    webhook.refresh_from_db()
    assert (webhook.name, webhook.url) == ("Renamed", WEBHOOK_URL)  # empty keeps it
    assert client.post(url, {**form, "url": "https://hooks.example.com/new"}).status_code == 302
    webhook.refresh_from_db()
    assert webhook.url == "https://hooks.example.com/new"

    # Operators see and edit the URL itself.
    page = login(client, superuser).get(url).content.decode()
    assert 'value="https://hooks.example.com/new"' in page


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://127.0.0.1:6379/",
        "http://localhost:8000/admin/",
        "https://10.0.0.5/hook",
        "http://[::1]/hook",
        "http://127.0.0.1:6379\\@8.8.8.8/",  # urlsplit reads 8.8.8.8, urllib3 127.0.0.1
        "http://user@8.8.8.8/",
    ],
)
def test_admin_webhook_to_an_internal_address_is_refused(client, superuser, org, url):
    login(client, superuser)
    response = client.post(
        "/admin/costs/alertwebhook/add/",
        {"organization": org.pk, "name": "Internal", "url": url, "min_severity": "high",
         "max_age_days": 7, "is_active": "on", "new_secret": SECRET},
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "is an internal address" in page or "must not hold a user name" in page
    assert not AlertWebhook.objects.exists()


@pytest.mark.django_db
def test_admin_reviewer_cannot_spell_the_masked_url_out_with_list_lookups(
    client, reviewer, webhook
):
    login(client, reviewer)
    for prefix in ("https://hooks.slack.com/", "https://nothing.example/"):
        response = client.get("/admin/costs/alertwebhook/", {"url__startswith": prefix})
        # Refused alike, whether the prefix matches or not (it used to filter the list).
        assert response.status_code == 400


@pytest.mark.django_db
def test_admin_forbidden_page_is_html_not_the_api_error(client, org):
    from django.contrib.auth.models import Permission

    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_anomaly"))
    MembershipFactory(organization=org, user=viewer, role=Membership.Role.VIEWER)
    login(client, viewer)
    response = client.get("/admin/costs/anomaly/detect/")  # "detect now" needs change
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/html")
