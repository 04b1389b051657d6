from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.models import ApiKey, Membership
from accounts.services import api_key_create, membership_ensure


class Command(BaseCommand):
    help = (
        "Create an API key for USER in the organization named ORG (organization, user and "
        "membership created when missing). The key is printed as the last line."
    )

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization name (exact)")
        parser.add_argument("--user", required=True, help="username")
        parser.add_argument(
            "--role", choices=[c.value for c in Membership.Role], default=None,
            help="the member's role: admin for a new member; an existing member keeps "
            "theirs unless this is given",
        )
        parser.add_argument("--name", default="", help="a label for the key")

    def handle(self, *args, org, user, role, name, **options):
        limit = ApiKey._meta.get_field("name").max_length
        if len(name) > limit:
            raise CommandError(f"--name: at most {limit} characters")
        try:
            membership = membership_ensure(org_name=org, username=user, role=role)
        except ValidationError as exc:
            raise CommandError(
                "; ".join(f"--{key}: {' '.join(messages)}" for key, messages in exc.message_dict.items())
            ) from None
        api_key, raw_key = api_key_create(membership=membership, name=name or "cli")
        self.stdout.write(
            f"Created API key {api_key.prefix}… for {membership.user.username} "
            f"({membership.role}) in {membership.organization} "
            f"(slug {membership.organization.slug}). It is shown only once:"
        )
        self.stdout.write(raw_key)
