"""RQ jobs for imports: they take ids and call the service."""

from __future__ import annotations

from datetime import date

from app.services.loan_import import loan_book_arrears_update


def loan_book_arrears(loan_ids: list[int], as_of: str) -> str:
    """Days late and penalties of the loans a console import brought in arrears, by the
    nightly job's rule, right after the import (its request has no time for them)."""
    problem = loan_book_arrears_update(loan_ids=loan_ids, as_of=date.fromisoformat(as_of))
    return problem or f"{len(loan_ids)} loans brought up to date"
