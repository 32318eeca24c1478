"""Guarantees and cover: what a member's deposits hold, for their own loans and for the
loans they guarantee, and how far a loan is secured (SPEC "Holds", "Guarantees").

A guarantee holds no money, so everything here is derived from the books as they stand:
an accepted guarantee holds its whole amount until the loan is paid out, then the share of
the amount that the loan's principal still owed is of the principal lent (it falls in
proportion as principal is repaid), and nothing once the loan has ended. The member's
deposits are their savings account (the basis of the loan limit) until the savings
products split withdrawable savings from deposits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from sqlalchemy import select

from app.extensions import db
from app.models import (
    Account,
    Collateral,
    Guarantee,
    GuaranteeRecovery,
    JournalLine,
    Loan,
    LoanProduct,
    Member,
)
from app.money import ZERO, round_money
from app.selectors.loans import LIVE_STATUSES, PENDING_STATUSES
from app.selectors.members import member_balances

# A loan whose guarantees hold: on its way to a payout, or paid out and still owing.
HOLDING_STATUSES = PENDING_STATUSES + LIVE_STATUSES
HUNDRED = Decimal(100)


def guarantee_exposure(
    *, amount: Decimal, loan_status: str, principal: Decimal, outstanding: Decimal
) -> Decimal:
    """What one accepted guarantee holds now (the one rule of exposure)."""
    if loan_status in PENDING_STATUSES:
        return amount
    if loan_status not in LIVE_STATUSES or principal <= 0 or outstanding <= 0:
        return ZERO
    return min(amount, round_money(amount * outstanding / principal))


def collateral_value(forced_sale_value: Decimal, haircut: Decimal) -> Decimal:
    """What a registered lien counts toward cover: the forced-sale value less the product's
    haircut, to the shilling below (a cover is never overstated by rounding)."""
    return round_money(
        forced_sale_value * (HUNDRED - haircut) / HUNDRED, Decimal(1), rounding=ROUND_FLOOR
    )


def _outstanding_principal(loan_ids: Iterable[int]) -> dict[int, Decimal]:
    """Each loan's principal still owed, from its principal receivable."""
    ids = list(set(loan_ids))
    if not ids:
        return {}
    rows = db.session.execute(
        select(Account.loan_id, Account.balance).where(
            Account.loan_id.in_(ids), Account.kind == "loan_principal"
        )
    ).all()
    return {loan_id: balance for loan_id, balance in rows if loan_id is not None}


def principal_owed(loan_id: int) -> Decimal:
    """One loan's principal still owed, from its principal receivable (0 before payout)."""
    return _outstanding_principal([loan_id]).get(loan_id, ZERO)


@dataclass(frozen=True)
class Held:
    """One accepted guarantee a member has given, as it stands."""

    guarantee_id: int
    loan_id: int
    loan_no: str
    loan_status: str
    borrower_id: int
    borrower_name: str
    amount: Decimal
    exposure: Decimal


def guarantees_held(member_id: int) -> list[Held]:
    """The member's accepted guarantees on loans that still hold, newest first."""
    rows = db.session.execute(
        select(
            Guarantee.id,
            Guarantee.amount,
            Loan.id,
            Loan.loan_no,
            Loan.status,
            Loan.principal,
            Member.id,
            Member.name,
        )
        .join(Loan, Loan.id == Guarantee.loan_id)
        .join(Member, Member.id == Loan.member_id)
        .where(
            Guarantee.guarantor_id == member_id,
            Guarantee.status == "accepted",
            Loan.status.in_(HOLDING_STATUSES),
        )
        .order_by(Guarantee.id.desc())
    ).all()
    owed = _outstanding_principal(row[2] for row in rows)
    return [
        Held(
            guarantee_id=gid,
            loan_id=loan_id,
            loan_no=loan_no or "",
            loan_status=status,
            borrower_id=borrower_id,
            borrower_name=name,
            amount=amount,
            exposure=guarantee_exposure(
                amount=amount,
                loan_status=status,
                principal=principal,
                outstanding=owed.get(loan_id, ZERO),
            ),
        )
        for gid, amount, loan_id, loan_no, status, principal, borrower_id, name in rows
    ]


def guarantor_standing(member_ids: Iterable[int]) -> dict[int, str]:
    """What a loan officer should know of its guarantors, in words, for those with a
    problem: a guarantor who has left (not an active member) or whose own loan is in
    default can no longer be counted on."""
    ids = list(set(member_ids))
    if not ids:
        return {}
    words: dict[int, str] = {}
    for member_id, status in db.session.execute(
        select(Member.id, Member.status).where(Member.id.in_(ids), Member.status != "active")
    ):
        words[member_id] = f"membership {status}"
    for member_id, loan_no in db.session.execute(
        select(Loan.member_id, Loan.loan_no)
        .where(Loan.member_id.in_(ids), Loan.in_default.is_(True), Loan.status.in_(LIVE_STATUSES))
        .order_by(Loan.id)
    ):
        words.setdefault(member_id, f"own loan {loan_no} in default")
    return words


def guaranteed_by(member_id: int) -> Decimal:
    """What the member's accepted guarantees of others' loans hold now."""
    return sum((held.exposure for held in guarantees_held(member_id)), ZERO)


def _guaranteed_on(loans: list[tuple[int, str, Decimal]]) -> dict[int, Decimal]:
    """Per loan (id, status, principal): what its accepted guarantees hold now."""
    if not loans:
        return {}
    by_id = {loan_id: (status, principal) for loan_id, status, principal in loans}
    owed = _outstanding_principal(by_id)
    held: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for loan_id, amount in db.session.execute(
        select(Guarantee.loan_id, Guarantee.amount).where(
            Guarantee.loan_id.in_(list(by_id)), Guarantee.status == "accepted"
        )
    ):
        status, principal = by_id[loan_id]
        held[loan_id] += guarantee_exposure(
            amount=amount,
            loan_status=status,
            principal=principal,
            outstanding=owed.get(loan_id, ZERO),
        )
    return held


def _collateral_on(loan_ids: list[int]) -> dict[int, Decimal]:
    """Per loan: what its registered collateral counts toward cover (0 where the product
    does not let collateral stand in for guarantees)."""
    if not loan_ids:
        return {}
    counted: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for loan_id, value, allowed, haircut in db.session.execute(
        select(
            Collateral.loan_id,
            Collateral.forced_sale_value,
            LoanProduct.collateral_allowed,
            LoanProduct.collateral_haircut,
        )
        .join(Loan, Loan.id == Collateral.loan_id)
        .join(LoanProduct, LoanProduct.id == Loan.product_id)
        .where(Collateral.loan_id.in_(loan_ids), Collateral.lien_status == "registered")
    ):
        if allowed:
            counted[loan_id] += collateral_value(value, haircut)
    return counted


@dataclass(frozen=True)
class Deposits:
    """A member's deposits and what holds them."""

    deposits: Decimal  # the savings balance
    guaranteed: Decimal  # held by the loans they guarantee
    own: Decimal  # held by their own secured loans (the part no guarantee or collateral covers)

    @property
    def free(self) -> Decimal:
        """Deposits less every hold: what can be pledged, moved out or lent against."""
        return max(ZERO, self.deposits - self.guaranteed - self.own)

    @property
    def free_of_guarantees(self) -> Decimal:
        """Deposits less what others' loans hold: the base of the member's own loan limit,
        whose formula subtracts the member's own debt by itself."""
        return max(ZERO, self.deposits - self.guaranteed)


def member_deposits(member_id: int, *, excluding_loan_id: int | None = None) -> Deposits:
    """The member's deposits and holds. `excluding_loan_id`: a loan of theirs that does not
    hold their deposits here (the application whose cover is being worked out)."""
    deposits = member_balances(member_id=member_id).savings
    guaranteed = guaranteed_by(member_id)
    own_loans = [
        (loan_id, status, principal)
        for loan_id, status, principal in db.session.execute(
            select(Loan.id, Loan.status, Loan.principal)
            .join(LoanProduct, LoanProduct.id == Loan.product_id)
            .where(
                Loan.member_id == member_id,
                Loan.status.in_(HOLDING_STATUSES),
                # Only secured products rest on the member's deposits; an instant loan
                # needs none (its limit is already a multiple of them).
                (LoanProduct.min_guarantors > 0) | (LoanProduct.guarantee_cover > 0),
            )
        )
        if loan_id != excluding_loan_id
    ]
    owed = _outstanding_principal(loan_id for loan_id, _, _ in own_loans)
    guaranteed_on = _guaranteed_on(own_loans)
    collateral_on = _collateral_on([loan_id for loan_id, _, _ in own_loans])
    own = ZERO
    for loan_id, status, principal in own_loans:
        debt = principal if status in PENDING_STATUSES else owed.get(loan_id, ZERO)
        own += max(ZERO, debt - guaranteed_on.get(loan_id, ZERO) - collateral_on.get(loan_id, ZERO))
    return Deposits(deposits=deposits, guaranteed=guaranteed, own=min(own, max(deposits, ZERO)))


@dataclass(frozen=True)
class Cover:
    """How far a loan is secured against what its product asks."""

    required: Decimal  # what guarantees (and collateral) must cover
    guaranteed: Decimal  # accepted guarantees
    asked: Decimal  # requests still waiting for an answer
    collateral: Decimal  # registered liens at the product's haircut
    guarantors: int  # accepted
    min_guarantors: int

    @property
    def covered(self) -> Decimal:
        return self.guaranteed + self.collateral

    @property
    def shortfall(self) -> Decimal:
        return max(ZERO, self.required - self.covered)

    @property
    def complete(self) -> bool:
        return self.shortfall == 0 and self.guarantors >= self.min_guarantors


def product_needs_security(product: LoanProduct) -> bool:
    return product.min_guarantors > 0 or product.guarantee_cover > 0


def loan_cover(loan: Loan) -> Cover:
    """The loan's cover as its product asks it: `guarantee_cover` percent of the amount
    above the applicant's own free deposits (their deposits less every hold of theirs but
    this loan), to the shilling above; guarantees at their full amount until payout."""
    product = loan.product
    own_free = member_deposits(loan.member_id, excluding_loan_id=loan.id).free
    above = max(ZERO, loan.principal - own_free)
    required = round_money(above * product.guarantee_cover / HUNDRED, Decimal(1), ROUND_CEILING)
    rows = db.session.execute(
        select(Guarantee.status, Guarantee.amount).where(
            Guarantee.loan_id == loan.id, Guarantee.status.in_(("requested", "accepted"))
        )
    ).all()
    accepted = [amount for status, amount in rows if status == "accepted"]
    asked = sum((amount for status, amount in rows if status == "requested"), ZERO)
    return Cover(
        required=required,
        guaranteed=sum(accepted, ZERO),
        asked=asked,
        collateral=_collateral_on([loan.id]).get(loan.id, ZERO),
        guarantors=len(accepted),
        min_guarantors=product.min_guarantors,
    )


def holds_problems() -> list[str]:
    """What the reconciliation checks of the holds (`ledger_check`), in words:
    - no member's guarantees hold more than their deposits;
    - a guarantee still accepted belongs to a loan that still holds (an ended loan
      released all it pledged: what is released is what was pledged);
    - no guarantee recovered more than it pledged;
    - every recovery from guarantors posted what it records (`recovery_problems`).
    Every accepted guarantee is read once with its loan, the loan's principal receivable
    and the guarantor's savings: one query, computed here with the one exposure rule."""
    savings = (
        select(Account.member_id, Account.balance)
        .where(Account.kind == "savings")
        .subquery("savings")
    )
    principal = (
        select(Account.loan_id, Account.balance)
        .where(Account.kind == "loan_principal")
        .subquery("principal")
    )
    rows = db.session.execute(
        select(
            Guarantee.id,
            Guarantee.guarantor_id,
            Guarantee.amount,
            Loan.loan_no,
            Loan.status,
            Loan.principal,
            principal.c.balance,
            savings.c.balance,
        )
        .join(Loan, Loan.id == Guarantee.loan_id)
        .outerjoin(principal, principal.c.loan_id == Loan.id)
        .outerjoin(savings, savings.c.member_id == Guarantee.guarantor_id)
        .where(Guarantee.status == "accepted")
        .order_by(Guarantee.id)
    ).all()
    problems: list[str] = []
    held: dict[int, Decimal] = defaultdict(lambda: ZERO)
    deposits: dict[int, Decimal] = {}
    for gid, guarantor, amount, loan_no, status, lent, owed, saved in rows:
        if status not in HOLDING_STATUSES:
            problems.append(f"guarantee {gid} of {loan_no} is still accepted; the loan is {status}")
            continue
        held[guarantor] += guarantee_exposure(
            amount=amount, loan_status=status, principal=lent, outstanding=owed or ZERO
        )
        deposits[guarantor] = -(saved or ZERO)
    problems += [
        f"member {member_id}: guarantees hold {held[member_id]}, deposits are {deposits[member_id]}"
        for member_id in sorted(held)
        if held[member_id] > deposits[member_id]
    ]
    over = db.session.execute(
        select(Guarantee.id, Guarantee.amount, Guarantee.recovered_amount)
        .where(Guarantee.recovered_amount > Guarantee.amount)
        .order_by(Guarantee.id)
    ).all()
    problems += [
        f"guarantee {gid} recovered {got} of a {amount} pledge" for gid, amount, got in over
    ]
    return problems + recovery_problems()


def recovery_problems() -> list[str]:
    """What reconciling the recoveries from guarantors finds wrong, in words (none when
    right), for the ledger check: every approved decision's entry debits each guarantor's
    savings exactly what their guarantee records as recovered, credits the loan's principal
    receivable the total, and no guarantor paid more than their exposure at the decision."""
    problems: list[str] = []
    approved = list(
        db.session.scalars(
            select(GuaranteeRecovery)
            .where(GuaranteeRecovery.status == "approved")
            .order_by(GuaranteeRecovery.id)
        )
    )
    if not approved:
        return problems
    entry_ids = [r.entry_id for r in approved if r.entry_id is not None]
    lines: dict[int, list[tuple[str, int | None, int | None, Decimal]]] = {}
    for entry_id, kind, member_id, loan_id, amount in db.session.execute(
        select(
            JournalLine.entry_id,
            Account.kind,
            Account.member_id,
            Account.loan_id,
            JournalLine.amount,
        )
        .join(Account, Account.id == JournalLine.account_id)
        .where(JournalLine.entry_id.in_(entry_ids))
    ):
        lines.setdefault(entry_id, []).append((kind, member_id, loan_id, amount))
    recovered = {
        g.id: g
        for g in db.session.scalars(
            select(Guarantee).where(Guarantee.loan_id.in_([r.loan_id for r in approved]))
        )
    }
    for r in approved:
        rows = lines.get(r.entry_id or 0, [])
        if not rows:
            problems.append(f"recovery {r.id} of loan {r.loan_id} has no journal entry")
            continue
        credited = -sum((a for k, _, lid, a in rows if k == "loan_principal"), ZERO)
        if credited != r.recovered_total:
            problems.append(
                f"recovery {r.id}: principal credited {credited}, recorded {r.recovered_total}"
            )
        debits = {mid: a for k, mid, _, a in rows if k == "savings"}
        for row in (r.recovered or {}).get("guarantors", []):
            g = recovered.get(row["guarantee_id"])
            taken = Decimal(row["recovered"])
            if taken > Decimal(row["exposure"]):
                problems.append(
                    f"recovery {r.id}: guarantee {row['guarantee_id']} paid above exposure"
                )
            if g is None or (taken > 0 and g.recovered_amount != taken):
                problems.append(
                    f"recovery {r.id}: guarantee {row['guarantee_id']} records "
                    f"{g.recovered_amount if g else None}, the decision {taken}"
                )
            if g is not None and debits.get(g.guarantor_id, ZERO) != taken:
                problems.append(
                    f"recovery {r.id}: guarantor {g.guarantor_id} debited "
                    f"{debits.get(g.guarantor_id, ZERO)}, recovered {taken}"
                )
    return problems
