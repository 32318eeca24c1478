"""Counts in words that agree: "1 installment", "2 installments", "1,200 loans".

English only: a Kiswahili count follows its noun ("awamu 2", "siku 1") and the noun does
not change with it, so the USSD and SMS texts carry their own forms where they differ.
"""

from __future__ import annotations


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """The count and its noun, singular for exactly one (`nouns` when not noun + "s")."""
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"
