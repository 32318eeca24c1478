"""A loan ended or remade other than by being paid: written off, settled by a compromise
agreement, or restructured onto a new schedule."""

from __future__ import annotations

from datetime import date

from app.extensions import db
from app.models import Loan, StaffUser
from app.money import ZERO, to_decimal
from app.selectors.loans import LIVE_STATUSES, LoanDebt, current_installments, loan_debt
from app.services.audit import audit_record
from app.services.ledger import Line, credit, debit, gl_account, journal_post
from app.services.loans._common import (
    COMPONENTS,
    LoanError,
    _actor_name,
    _get_loan,
    _periods,
    _transition,
    loan_account,
)
from app.services.loans.disburse import _write_schedule
from app.services.permissions import permission_require


def loan_write_off(*, loan_id: int, staff: StaffUser, reason: str, value_date: date) -> Loan:
    """Take a defaulted loan off the books: every receivable moves to the write-off expense."""
    permission_require(staff, "loan.write_off")
    loan = _get_loan(loan_id)
    if not loan.in_default:
        raise LoanError(
            f"loan {loan.loan_no} is not in default; only defaulted loans are written off"
        )
    _transition(loan, "write_off", staff, reason)
    # What it still said is kept on the loan, for recoveries to count against.
    loan.written_off_amount = _write_off_receivables(
        loan,
        value_date=value_date,
        description=f"Write-off {loan.loan_no}: {reason}",
        idempotency_key=f"write_off:{loan.loan_no}",
        actor=staff,
    ).total
    loan.closed_on = value_date
    db.session.commit()
    return loan


def _write_off_receivables(
    loan: Loan,
    *,
    value_date: date,
    description: str,
    idempotency_key: str,
    actor: StaffUser | str | None,
) -> LoanDebt:
    """Move everything the loan still owes to the write-off expense in one entry and
    retire its schedule (the rows stay, superseded, for the record); returns what went.
    A write-off and a settlement's discount both end a loan's debt this way."""
    debt = loan_debt(loan_id=loan.id)
    if debt.total <= 0:
        return debt
    # `fresh` as in loan_restructure: every caller took the loan's lock, which re-read them.
    for row in current_installments(loan.id, fresh=True):  # pragma: no mutate
        row.superseded = True
    lines: list[Line] = [debit(gl_account("GL-WRITE-OFF"), debt.total)]
    for component in COMPONENTS:
        owed = getattr(debt, component)
        if owed > 0:
            lines.append(credit(loan_account(loan, component), owed))
    journal_post(
        kind="write_off",
        lines=lines,
        value_date=value_date,
        description=description,
        idempotency_key=idempotency_key,
        actor=_actor_name(actor),
        member_id=loan.member_id,
        loan_id=loan.id,
    )
    return debt


def loan_settle(
    *,
    loan_id: int,
    actor: StaffUser | str,
    reason: str,
    value_date: date,
    commit: bool = True,
) -> Loan:
    """Close a loan whose compromise settlement is paid: what it still owes (the discount
    agreed, and any penalty charged since) is written off by the write-off's journal path,
    and the loan is closed, not written off: the member settled, so money paid after it
    is theirs (savings), not a recovery. Audited; `written_off_amount` says what went.

    The agreement's approval by a branch manager is the authority; a staff actor needs
    agreement.approve. `commit=False` when the caller (a repayment) commits.
    """
    permission_require(actor, "agreement.approve")
    loan = _get_loan(loan_id)
    if loan.status not in LIVE_STATUSES:
        raise LoanError(f"loan {loan.loan_no} is {loan.status}; there is nothing to settle")
    debt = _write_off_receivables(
        loan,
        value_date=value_date,
        description=f"Settlement discount {loan.loan_no}: {reason}",
        idempotency_key=f"settle:{loan.loan_no}",
        actor=actor,
    )
    loan.written_off_amount = debt.total
    _transition(loan, "close", actor, reason)
    audit_record(
        actor=_actor_name(actor),
        action="loan.settle",
        object_type="loan",
        object_id=loan.loan_no,
        before={c: getattr(debt, c) for c in COMPONENTS},
        after={"status": "closed", "written_off": debt.total},
        note=reason,
    )
    loan.closed_on = value_date
    loan.days_past_due, loan.aging_bucket, loan.in_default = 0, "current", False
    if commit:
        db.session.commit()
    return loan


def loan_restructure(
    *,
    loan_id: int,
    staff: StaffUser,
    term: int,
    start_date: date,
    reason: str,
    annual_rate: object | None = None,
) -> Loan:
    """Replace the rest of a loan in arrears with a new schedule for what is owed.

    Arrears (penalties, fees and interest already due) are added to the new principal;
    interest scheduled for dates not yet reached is reversed, since the new schedule
    charges its own. The old rows stay, marked superseded.
    """
    permission_require(staff, "loan.restructure")
    reason = (reason or "").strip()
    if not reason:
        raise LoanError("a restructure needs a reason")
    loan = _get_loan(loan_id)
    if loan.status not in LIVE_STATUSES or loan.days_past_due <= 0:
        raise LoanError(
            f"loan {loan.loan_no} is not in arrears; only loans in arrears are restructured"
        )
    product = loan.product
    if not (1 <= term <= product.max_term):  # a product's max_term is 1 or more
        raise LoanError(f"the new term must be 1 to {product.max_term} {_periods(product)}")
    # `fresh` is belt and braces: _get_loan's populate_existing re-read the rows already
    # (Loan.installments loads by selectin), so no test can tell it apart.
    rows = current_installments(loan.id, fresh=True)  # pragma: no mutate
    future_interest = sum(
        (r.interest_due - r.interest_paid for r in rows if r.due_date > start_date), ZERO
    )
    capitalised = {
        c: sum((getattr(r, f"{c}_due") - getattr(r, f"{c}_paid") for r in rows), ZERO)
        for c in ("interest", "fees", "penalty")
    }
    capitalised["interest"] -= future_interest
    debt = loan_debt(loan_id=loan.id)
    new_principal = debt.principal + sum(capitalised.values(), ZERO)
    before = {"principal": loan.principal, "term": loan.term, "rate": loan.annual_rate}
    _transition(loan, "restructure", staff, reason)
    version = max(r.version for r in rows) + 1
    for row in rows:
        row.superseded = True
    loan.term = term
    if annual_rate is not None:
        loan.annual_rate = to_decimal(annual_rate)
    new_interest = _write_schedule(loan, new_principal, start_date, version=version).total_interest

    lines: list[Line] = []
    if future_interest > 0:
        lines += [  # pragma: no mutate: lines is still empty here, so = and += agree
            debit(gl_account("GL-INCOME-INTEREST"), future_interest),
            credit(loan_account(loan, "interest"), future_interest),
        ]
    for component, owed in capitalised.items():
        if owed > 0:
            lines += [
                debit(loan_account(loan, "principal"), owed),
                credit(loan_account(loan, component), owed),
            ]
    if new_interest > 0:
        lines += [
            debit(loan_account(loan, "interest"), new_interest),
            credit(gl_account("GL-INCOME-INTEREST"), new_interest),
        ]
    if lines:
        journal_post(
            kind="restructure",
            lines=lines,
            value_date=start_date,
            description=f"Restructure {loan.loan_no} v{version}",
            idempotency_key=f"restructure:{loan.loan_no}:v{version}",
            actor=_actor_name(staff),
            member_id=loan.member_id,
            loan_id=loan.id,
        )
    audit_record(
        actor=_actor_name(staff),
        action="loan.reschedule",
        object_type="loan",
        object_id=loan.loan_no,
        before=before,
        after={
            "principal": new_principal,
            "term": term,
            "rate": loan.annual_rate,
            "version": version,
        },
        note=reason,
    )
    loan.days_past_due = 0
    loan.aging_bucket = "current"
    loan.in_default = False
    db.session.commit()
    return loan
