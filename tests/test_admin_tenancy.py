"""The admin is limited to the user's organizations (as the API is); superusers see all."""

from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Group, Permission

from accounts.models import ApiKey, Membership, Organization
from accounts.services import api_key_create
from costs.models import AlertWebhook, Anomaly, AnomalyPolicy, CostRecord, SyncJob, WebhookDelivery
from providers.models import Provider
from tests.factories import (
    AnomalyFactory,
    CostRecordFactory,
    MembershipFactory,
    OrganizationFactory,
    ProviderFactory,
    SyncJobProviderFactory,
    UserFactory,
)

ADMIN = "/admin"


@dataclass
class Tenant:
    org: Organization
    provider: Provider
    record: CostRecord
    job: SyncJob
    anomaly: Anomaly
    webhook: AlertWebhook
    delivery: WebhookDelivery
    policy: AnomalyPolicy
    membership: Membership
    api_key: ApiKey


def _tenant(name: str) -> Tenant:
    org = OrganizationFactory(name=f"{name} Org", slug=name.lower())
    provider = ProviderFactory(organization=org, name=f"{name} Provider")
    anomaly = AnomalyFactory(provider=provider)
    webhook = AlertWebhook.objects.create(
        organization=org, name=f"{name} Hook", url=f"https://hooks.example.com/{name}"
    )
    membership = MembershipFactory(organization=org, user=UserFactory(username=f"{name}-admin"))
    return Tenant(
        org=org,
        provider=provider,
        record=CostRecordFactory(provider=provider),
        job=SyncJobProviderFactory(job__organization=org, provider=provider).job,
        anomaly=anomaly,
        webhook=webhook,
        delivery=WebhookDelivery.objects.create(webhook=webhook, anomaly=anomaly, payload={}),
        policy=AnomalyPolicy.objects.create(organization=org),
        membership=membership,
        api_key=api_key_create(membership=membership)[0],
    )


@pytest.fixture
def a(db):
    return _tenant("Alpha")


@pytest.fixture
def b(db):
    return _tenant("Bravo")


@pytest.fixture
def member_of_a(a):
    """A finance reviewer who is only a viewer of A, also allowed to read members and keys
    and to add providers (to see the foreign-key choices)."""
    user = UserFactory(username="finance", is_staff=True)
    user.groups.add(Group.objects.get(name="Finance reviewers"))
    user.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_membership", "view_apikey", "view_organization", "add_provider"]
    ))
    MembershipFactory(organization=a.org, user=user, role=Membership.Role.VIEWER)
    return user


# changelist path -> the tenant's object listed there
PAGES = {
    "providers/provider": "provider",
    "costs/costrecord": "record",
    "costs/syncjob": "job",
    "costs/anomaly": "anomaly",
    "costs/alertwebhook": "webhook",
    "costs/webhookdelivery": "delivery",
    "costs/anomalypolicy": "policy",
    "accounts/organization": "org",
    "accounts/membership": "membership",
    "accounts/apikey": "api_key",
}


@pytest.mark.django_db
@pytest.mark.parametrize("page", PAGES)
def test_admin_tenancy_lists_show_only_member_organizations(client, member_of_a, a, b, page):
    client.force_login(member_of_a)
    response = client.get(f"{ADMIN}/{page}/")
    assert response.status_code == 200
    listed = [obj.pk for obj in response.context["cl"].result_list]
    own = getattr(a, PAGES[page]).pk
    assert own in listed and getattr(b, PAGES[page]).pk not in listed
    html = response.content.decode()
    # Nor in the filters' choices.
    assert b.org.name not in html and b.provider.name not in html and b.webhook.name not in html


@pytest.mark.django_db
@pytest.mark.parametrize("page", PAGES)
def test_admin_tenancy_other_organizations_objects_are_not_found(client, member_of_a, a, b, page):
    client.force_login(member_of_a)
    theirs, ours = getattr(b, PAGES[page]).pk, getattr(a, PAGES[page]).pk
    assert client.get(f"{ADMIN}/{page}/{theirs}/change/").status_code == 404
    assert client.get(f"{ADMIN}/{page}/{theirs}/history/").status_code == 404
    assert client.get(f"{ADMIN}/{page}/{ours}/change/").status_code == 200


@pytest.mark.django_db
def test_admin_tenancy_cannot_dismiss_or_reopen_other_organizations_anomalies(
    client, member_of_a, a, b
):
    client.force_login(member_of_a)
    url = f"{ADMIN}/costs/anomaly/"
    assert client.get(f"{url}{b.anomaly.pk}/dismiss/").status_code == 404
    assert client.post(f"{url}{b.anomaly.pk}/dismiss/", {"reason": "not ours"}).status_code == 404
    client.post(url, {"action": "dismiss_selected", "_selected_action": [b.anomaly.pk],
                      "apply": "yes", "reason": "not ours"})
    b.anomaly.refresh_from_db()
    assert b.anomaly.status == "active"

    Anomaly.objects.filter(pk=b.anomaly.pk).update(status="dismissed", dismiss_reason="theirs")
    assert client.post(f"{url}{b.anomaly.pk}/reopen/").status_code == 404
    client.post(url, {"action": "reopen_selected", "_selected_action": [b.anomaly.pk], "index": 0})
    b.anomaly.refresh_from_db()
    assert (b.anomaly.status, b.anomaly.dismiss_reason) == ("dismissed", "theirs")

    # Their own anomalies they can review.
    client.post(url, {"action": "dismiss_selected", "_selected_action": [a.anomaly.pk],
                      "apply": "yes", "reason": "ours"})
    a.anomaly.refresh_from_db()
    assert a.anomaly.status == "dismissed"


@pytest.mark.django_db
def test_admin_tenancy_foreign_key_choices_are_member_organizations(client, member_of_a, a, b):
    client.force_login(member_of_a)
    add = client.get(f"{ADMIN}/providers/provider/add/")
    assert list(add.context["adminform"].form.fields["organization"].queryset) == [a.org]
    response = client.post(
        f"{ADMIN}/providers/provider/add/",
        {"organization": b.org.pk, "name": "Sneaky", "kind": "aws", "config": "{}",
         "is_active": "on", "new_credentials": ""},
    )
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not Provider.objects.filter(name="Sneaky").exists()

    detect = client.get(f"{ADMIN}/costs/anomaly/detect/")
    assert list(detect.context["form"].fields["provider"].queryset) == [a.provider]


@pytest.mark.django_db
def test_admin_tenancy_superusers_see_every_organization(client, a, b):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    for page, attribute in PAGES.items():
        response = client.get(f"{ADMIN}/{page}/")
        listed = {obj.pk for obj in response.context["cl"].result_list}
        assert {getattr(a, attribute).pk, getattr(b, attribute).pk} <= listed, page
    assert client.get(f"{ADMIN}/costs/anomaly/{b.anomaly.pk}/change/").status_code == 200


@pytest.mark.django_db
def test_admin_tenancy_staff_without_membership_sees_nothing(client, a):
    user = UserFactory(username="nobody", is_staff=True)
    user.groups.add(Group.objects.get(name="Finance reviewers"))
    client.force_login(user)
    response = client.get(f"{ADMIN}/costs/anomaly/")
    assert list(response.context["cl"].result_list) == []
    assert client.get(f"{ADMIN}/costs/anomaly/{a.anomaly.pk}/change/").status_code == 404


@pytest.mark.django_db
def test_admin_tenancy_cost_record_currency_filter_offers_member_currencies_only(
    client, member_of_a, a, b
):
    CostRecordFactory(provider=a.provider, service="Own EUR", currency="EUR")
    CostRecordFactory(provider=b.provider, service="Theirs JPY", currency="JPY")
    client.force_login(member_of_a)

    page = client.get(f"{ADMIN}/costs/costrecord/")
    (currency_filter,) = [f for f in page.context["cl"].filter_specs if f.title == "currency"]
    assert [value for value, _ in currency_filter.lookup_choices] == ["EUR", "USD"]

    filtered = client.get(f"{ADMIN}/costs/costrecord/?currency=EUR")
    assert [r.service for r in filtered.context["cl"].result_list] == ["Own EUR"]
