"""Exact money helpers: sums stay Decimal; rounding to cents happens only on output."""

from __future__ import annotations

from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
ZERO = Decimal("0")


def to_cents(value: Decimal | None) -> Decimal:
    return (value or ZERO).quantize(CENT, rounding=ROUND_HALF_UP)


def round_parts(parts: dict[str, Decimal]) -> tuple[Decimal, dict[str, Decimal]]:
    """Round a breakdown to cents so that the rounded parts add up exactly to the rounded
    total (largest-remainder method): a chart's stacked bars then equal its line."""
    total = to_cents(sum(parts.values(), ZERO))
    if not parts:
        return total, {}
    floors = {key: value.quantize(CENT, rounding=ROUND_FLOOR) for key, value in parts.items()}
    remaining = int((total - sum(floors.values(), ZERO)) / CENT)
    # remaining is within [0, len(parts)] since every floor is at most one cent low.
    by_remainder = sorted(parts, key=lambda key: (parts[key] - floors[key], key), reverse=True)
    for key in by_remainder[:remaining]:
        floors[key] += CENT
    return total, floors
