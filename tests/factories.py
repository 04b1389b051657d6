"""factory-boy factories for every model."""

from datetime import date
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from accounts.models import ApiKey, Membership, Organization
from costs.models import Anomaly, CostRecord, SyncJob, SyncJobProvider
from providers.models import Provider


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Org {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]

    username = factory.Sequence(lambda n: f"user{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    organization = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)
    role = Membership.Role.ADMIN


class ApiKeyFactory(factory.django.DjangoModelFactory):
    """A key whose raw value is unknown; use accounts.services.api_key_create for a usable one."""

    class Meta:
        model = ApiKey

    membership = factory.SubFactory(MembershipFactory)
    prefix = factory.Sequence(lambda n: f"{n:08x}")
    key_hash = factory.Faker("sha256")


class ProviderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Provider

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Provider {n}")
    kind = Provider.Kind.FOCUS
    config = factory.LazyFunction(dict)


class CostRecordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CostRecord

    provider = factory.SubFactory(ProviderFactory)
    organization = factory.SelfAttribute("provider.organization")
    day = date(2024, 1, 1)
    billing_period = factory.LazyAttribute(lambda record: record.day.replace(day=1))
    service = "EC2"
    region = "us-east-1"
    account = ""
    currency = "USD"
    billed_amount = Decimal("10.00")
    effective_amount = factory.SelfAttribute("billed_amount")


class SyncJobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SyncJob

    organization = factory.SubFactory(OrganizationFactory)


class SyncJobProviderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SyncJobProvider

    job = factory.SubFactory(SyncJobFactory)
    provider = factory.SubFactory(
        ProviderFactory, organization=factory.SelfAttribute("..job.organization")
    )


class AnomalyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Anomaly

    provider = factory.SubFactory(ProviderFactory)
    organization = factory.SelfAttribute("provider.organization")
    date = date(2024, 1, 14)
    service = ""
    actual_amount = Decimal("452.30")
    expected_amount = Decimal("290.00")
    expected_lower = Decimal("250.00")
    expected_upper = Decimal("377.00")
    deviation_percent = Decimal("56.0")
    impact_amount = Decimal("162.30")
    currency = "USD"
    severity = Anomaly.Severity.HIGH
