from django.core.management.base import BaseCommand

from accounts.models import Membership
from accounts.services import api_key_create, membership_ensure


class Command(BaseCommand):
    help = (
        "Create an API key for USER in ORG (both created when missing). "
        "The key is printed as the last line."
    )

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization name")
        parser.add_argument("--user", required=True, help="username")
        parser.add_argument(
            "--role", choices=[c.value for c in Membership.Role], default=Membership.Role.ADMIN
        )
        parser.add_argument("--name", default="", help="a label for the key")

    def handle(self, *args, org, user, role, name, **options):
        membership = membership_ensure(org_name=org, username=user, role=role)
        api_key, raw_key = api_key_create(membership=membership, name=name or "cli")
        self.stdout.write(
            f"Created API key {api_key.prefix}… for {user} ({role}) in {membership.organization}. "
            "It is shown only once:"
        )
        self.stdout.write(raw_key)
