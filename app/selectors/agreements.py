"""Reads about compromise agreements for the console: a page of them with their loan and
member (one query for the page, not one per row)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select

from app.extensions import db
from app.models import Agreement, Loan, Member, StaffUser


@dataclass(frozen=True)
class AgreementRow:
    agreement: Agreement
    loan_no: str
    member_no: str | None  # the column is nullable: set from the id right after insert
    member_name: str
    drafted_by: str

    @property
    def outstanding(self) -> Decimal:
        return self.agreement.settlement_amount - self.agreement.paid_amount


def agreements_page(
    *,
    page: int,
    per_page: int,
    status: str | None = None,
    loan_id: int | None = None,
) -> tuple[list[AgreementRow], int]:
    """Newest first; deleted drafts only when asked for by status."""
    where = []
    if status:
        where.append(Agreement.status == status)
    else:
        where.append(Agreement.status != "deleted")
    if loan_id is not None:
        where.append(Agreement.loan_id == loan_id)
    total = db.session.scalar(select(func.count()).select_from(Agreement).where(*where)) or 0
    rows = db.session.execute(
        select(Agreement, Loan.loan_no, Member.member_no, Member.name, StaffUser.email)
        .join(Loan, Loan.id == Agreement.loan_id)
        .join(Member, Member.id == Loan.member_id)
        .join(StaffUser, StaffUser.id == Agreement.drafted_by_id)
        .where(*where)
        .order_by(Agreement.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    return [
        AgreementRow(
            agreement=a, loan_no=loan_no or "", member_no=no, member_name=name, drafted_by=email
        )
        for a, loan_no, no, name, email in rows
    ], total


def agreement_people(agreement: Agreement) -> dict[str, str]:
    """Who drafted and who approved, by email, for the details page."""
    ids = [i for i in (agreement.drafted_by_id, agreement.approved_by_id) if i is not None]
    emails = dict(
        db.session.execute(select(StaffUser.id, StaffUser.email).where(StaffUser.id.in_(ids))).all()
    )
    return {
        "drafted_by": emails.get(agreement.drafted_by_id, ""),
        "approved_by": emails.get(agreement.approved_by_id, "") if agreement.approved_by_id else "",
    }
