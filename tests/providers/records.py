"""What a sync left in the database, as a comparable set."""

from costs.models import CostRecord


def records(provider) -> set[tuple]:
    return set(
        CostRecord.objects.filter(provider=provider).values_list(
            "day", "service", "region", "account", "currency", "billed_amount", "effective_amount"
        )
    )
