"""Who may borrow how much, and applications refused with a reason and nothing written."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import Loan, LoanProduct, Member
from app.selectors.loans import loan_eligibility
from app.services.ledger import ledger_check
from app.services.loans import (
    LoanError,
    loan_apply,
    loan_disburse,
    loan_repay,
    loan_start_payout,
    loan_write_off,
)
from app.services.members import member_buy_shares, member_deposit
from tests.loan_factories import (
    counts,
    make_borrower,
    make_loan,
    make_loan_in_default,
    make_product,
    make_staff,
    reload,
    run_job,
)

D = Decimal
ON = date(2026, 3, 2)  # every application and eligibility check in this file


def eligibility(member_id: int, product_id: int, as_of: date = ON):
    return loan_eligibility(
        member=db.session.get(Member, member_id),
        product=db.session.get(LoanProduct, product_id),
        as_of=as_of,
    )


# -- the limit ---------------------------------------------------------------------------


def test_limit_is_savings_times_multiple_less_outstanding_principal(app):
    product = make_product()  # V1: three times savings, no maximum
    member = make_borrower(savings="4000.40")

    # 4,000.40 × 3 = 12,001.20, floored to whole shillings.
    first = eligibility(member.id, product.id, as_of=date(2026, 1, 31))
    assert (first.eligible, first.limit, first.reason) == (True, D("12001"), None)

    loan = make_loan(product=product, amount=10000, on=date(2026, 1, 31), member=member)
    # 12,001.20 − 10,000.00 principal outstanding (the interest owed does not count).
    assert eligibility(member.id, product.id).limit == D("2001")

    loan_repay(
        loan_id=loan.id, amount="888.49", reference="RCLIM00001", value_date=date(2026, 2, 28)
    )
    # Only principal counts: 12,001.20 − 9,211.51 = 2,789.69, floored.
    assert eligibility(member.id, product.id).limit == D("2789")
    assert ledger_check() == []


def test_an_approved_loan_not_yet_paid_out_counts_against_its_members_limit_alone(app):
    """An application approved and on its way to a payout is owed already, so it counts
    against the limit of the member who applied, and of no one else."""
    v1_id, instant_id = make_product().id, make_product("INSTANT").id
    member_id, neighbour_id = (make_borrower(savings="4000").id for _ in range(2))
    loan = loan_apply(member_id=member_id, product_id=instant_id, amount=3000, as_of=ON)
    assert loan.status == "approved"  # within INSTANT's auto-approve limit, not paid out

    # 4,000 × 3 = 12,000, less the 3,000 approved; the neighbour's is untouched.
    assert eligibility(member_id, v1_id).limit == D("9000")
    assert eligibility(neighbour_id, v1_id).limit == D("12000")
    # The payout asked of M-PESA, its answer not in yet: still owed.
    loan_start_payout(loan_id=loan.id)
    assert reload(loan.id).status == "disbursing"
    assert eligibility(member_id, v1_id).limit == D("9000")
    assert ledger_check() == []


def test_limit_is_capped_by_the_product_maximum(app):
    product = make_product(max_amount=D("8000"))
    member = make_borrower(savings="4000.40")

    assert eligibility(member.id, product.id).limit == D("8000")
    assert ledger_check() == []


@pytest.mark.parametrize(
    ("base", "savings", "limit"),
    [("INSTANT", "2999.99", "2999"), ("V1", "1000.33", "3000"), ("INSTANT", "50000.50", "50000")],
)
def test_limit_is_floored_to_whole_shillings(app, base, savings, limit):
    product = make_product(base)
    member = make_borrower(savings=savings)

    result = eligibility(member.id, product.id)

    assert (result.eligible, result.limit) == (True, D(limit))
    assert ledger_check() == []


def test_outstanding_principal_on_any_product_lowers_the_limit(app):
    v1, instant = make_product(), make_product("INSTANT")
    member = make_borrower(savings=20000)
    make_loan(product=v1, amount=10000, on=date(2026, 1, 31), member=member)

    # INSTANT lends savings × 1: 20,000 − the 10,000 still owed on the V1 loan.
    assert eligibility(member.id, instant.id).limit == D("10000")
    assert ledger_check() == []


def test_limit_never_below_zero(app):
    product = make_product()
    member = make_borrower(savings=4000)
    make_loan(product=product, amount=10000, on=date(2026, 1, 31), member=member)
    member_buy_shares(member_id=member.id, amount=2000, reference="SHR0000001", value_date=ON)

    # 2,000 savings × 3 = 6,000 is less than the 10,000 owed.
    result = eligibility(member.id, product.id)

    assert (result.eligible, result.limit, result.code) == (False, D("0"), "limit")
    assert ledger_check() == []


@pytest.mark.parametrize(
    ("min_amount", "savings", "eligible", "limit"),
    [
        ("0", "0", False, "0"),  # no minimum, and nothing to lend: refused all the same
        ("0", "0.34", True, "1"),  # no minimum: one whole shilling is a limit
        ("1000", "333.34", True, "1000"),  # exactly the minimum
        ("1000", "300", False, "900"),  # short of it: refused, with the limit it came to
    ],
)
def test_the_limit_against_the_products_minimum(app, min_amount, savings, eligible, limit):
    product = make_product(min_amount=D(min_amount))  # V1: three times savings
    member = make_borrower(savings=savings)

    result = eligibility(member.id, product.id)

    assert (result.eligible, result.limit) == (eligible, D(limit))
    assert result.code == (None if eligible else "limit")
    assert ledger_check() == []


def test_instant_loan_from_savings_alone_for_a_brand_new_member(app):
    product = make_product("INSTANT")  # no share capital, no membership days, multiple 1
    member = make_borrower(joined=datetime(2026, 3, 2, 6, 30, tzinfo=UTC))
    member_deposit(member_id=member.id, amount=2500, reference="RCNEW00001", value_date=ON)

    result = eligibility(member.id, product.id)
    assert (result.eligible, result.limit) == (True, D("2500"))

    loan = loan_apply(member_id=member.id, product_id=product.id, amount=2500, as_of=ON)
    assert loan.status == "approved"  # within the auto-approve limit: no staff involved
    loan_disburse(loan_id=loan.id, reference="RCNEW00002", value_date=ON)
    assert loan.status == "active"
    assert ledger_check() == []


# -- refusals: what the member reads ------------------------------------------------------

Setup = Callable[[], tuple[int, int]]  # -> (member_id, product_id)


def _inactive_member() -> tuple[int, int]:
    member = make_borrower(savings=10000)
    member.status = "dormant"
    db.session.commit()
    return member.id, make_product().id


def _inactive_product() -> tuple[int, int]:
    return make_borrower(savings=10000).id, make_product(active=False).id


def _young_membership() -> tuple[int, int]:
    # DEV needs 90 days; joined 15 January, so 46 days on 2 March.
    member = make_borrower(
        savings=60000, shares=1000, joined=datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
    )
    return member.id, make_product("DEV").id


def _in_arrears() -> tuple[int, int]:
    v1 = make_product()
    instant_id = make_product("INSTANT").id
    member_id = make_borrower(savings=20000).id
    make_loan(
        product=v1, amount=10000, on=date(2026, 1, 15), member=db.session.get(Member, member_id)
    )
    run_job("loan-arrears", ON)  # the 15 February installment is 15 days late
    return member_id, instant_id


def _written_off() -> tuple[int, int]:
    loan_id = make_loan_in_default()  # its member has savings of 10,000
    loan_write_off(
        loan_id=loan_id,
        staff=make_staff("branch_manager"),
        reason="Cannot trace member",
        value_date=date(2026, 4, 1),
    )
    return reload(loan_id).member_id, make_product("INSTANT").id


def _pending() -> tuple[int, int]:
    product = make_product()
    member = make_borrower(savings=10000)
    loan_apply(member_id=member.id, product_id=product.id, amount=5000, as_of=ON)
    return member.id, product.id


def _short_of_share_capital() -> tuple[int, int]:
    return make_borrower(savings=60000, shares=500).id, make_product("DEV").id


def _limit_below_minimum() -> tuple[int, int]:
    return make_borrower(savings=300).id, make_product().id  # 900 < 1,000


REFUSALS: dict[str, tuple[Setup, str]] = {
    "member_inactive": (_inactive_member, "Your membership is not active. Visit a branch."),
    "product_inactive": (_inactive_product, "This loan is not available now."),
    "membership_age": (_young_membership, "You can apply after 90 days of membership."),
    "arrears": (_in_arrears, "You have a loan in arrears. Pay it first to borrow again."),
    "written_off": (
        _written_off,
        "A loan of yours was written off. Repay it to borrow again.",
    ),
    "pending": (_pending, "You already have an application being processed."),
    "share_capital": (_short_of_share_capital, "You need share capital of KES 1,000 to apply."),
    "limit": (
        _limit_below_minimum,
        "Your limit is below the minimum of KES 1,000. Save more to qualify.",
    ),
}


@pytest.mark.parametrize("code", list(REFUSALS))
def test_refusal_reason_is_one_a_member_can_read(app, code):
    setup, reason = REFUSALS[code]
    member_id, product_id = setup()

    result = eligibility(member_id, product_id)

    assert (result.eligible, result.code, result.reason) == (False, code, reason)
    # Plain words for a phone screen: a sentence, no codes or internal names.
    assert result.reason[0].isupper() and result.reason.endswith(".")
    assert "_" not in result.reason and "None" not in result.reason
    assert len(result.reason) <= 120
    assert ledger_check() == []


def test_one_day_late_is_in_arrears(app):
    member_id = make_borrower(savings=20000).id
    instant_id = make_product("INSTANT").id
    make_loan(
        product=make_product(),
        amount=10000,
        on=date(2026, 1, 15),
        member=db.session.get(Member, member_id),
    )
    run_job("loan-arrears", date(2026, 2, 16))  # the 15 February installment, one day late

    assert eligibility(member_id, instant_id, as_of=date(2026, 2, 16)).code == "arrears"


def test_a_loan_written_off_holds_its_member_back_until_recovered_in_full(app):
    """A write-off takes the loan off the books, not off the member: its days late no
    longer count (the loan is not live), what is still unrecovered does, to the shilling."""
    member_id, product_id = _written_off()
    loan = db.session.scalar(select(Loan).where(Loan.member_id == member_id))
    assert loan.days_past_due > 0
    loan_repay(
        loan_id=loan.id,
        amount=loan.written_off_amount - 1,
        reference="RCRECOV001",
        value_date=date(2026, 4, 2),
    )
    assert eligibility(member_id, product_id).code == "written_off"

    loan_repay(loan_id=loan.id, amount="1", reference="RCRECOV002", value_date=date(2026, 4, 3))

    result = eligibility(member_id, product_id)
    assert (result.eligible, result.limit, result.code) == (True, D("10000"), None)
    assert ledger_check() == []


# -- applications refused with nothing written ------------------------------------------


def _v1(savings: int = 10000) -> tuple[int, int]:
    return make_borrower(savings=savings).id, make_product().id


def _instant(savings: int = 10000) -> tuple[int, int]:
    return make_borrower(savings=savings).id, make_product("INSTANT").id


APPLICATIONS: dict[str, tuple[Setup, object, int | None, str]] = {
    # name: (setup, amount, term, message)
    "zero": (_v1, 0, None, "amount must be more than zero"),
    "negative": (_v1, -500, None, "amount must be more than zero"),
    "not a number": (_v1, "ten thousand", None, "amount is not a number"),
    "fraction of a cent": (_v1, "1000.005", None, "amount has fractions of a cent"),
    "cents on a whole-shilling product": (
        _instant,
        "1000.50",
        None,
        "mobile loans are in whole shillings",
    ),
    "term too short": (_v1, 5000, 0, "term must be 1 to 36 months"),
    "term too long": (_v1, 5000, 37, "term must be 1 to 36 months"),
    "unknown product": (lambda: (_v1()[0], 999999), 5000, None, "unknown loan product"),
    "inactive product": (_inactive_product, 5000, None, "unknown loan product"),
    "below the product minimum": (_v1, 500, None, "the minimum for Reference Loan is KES 1,000"),
    "above the product maximum": (
        lambda: _instant(100000),
        60000,
        None,
        "the maximum for Instant Loan is KES 50,000",
    ),
    "above the member's limit": (
        lambda: _v1(1000),
        3001,
        None,
        "the most you can borrow now is KES 3,000",
    ),
    "loan in arrears": (_in_arrears, 1000, None, REFUSALS["arrears"][1]),
    "below minimum share capital": (
        _short_of_share_capital,
        50000,
        None,
        REFUSALS["share_capital"][1],
    ),
    "membership too young": (_young_membership, 50000, None, REFUSALS["membership_age"][1]),
    "loan written off": (_written_off, 1000, None, REFUSALS["written_off"][1]),
    "pending application": (_pending, 5000, None, REFUSALS["pending"][1]),
    "inactive member": (_inactive_member, 5000, None, REFUSALS["member_inactive"][1]),
    "no such member": (lambda: (999999, make_product().id), 5000, None, "no member 999999"),
}


@pytest.mark.parametrize("case", list(APPLICATIONS))
def test_application_refused_with_the_reason_and_nothing_written(app, case):
    setup, amount, term, message = APPLICATIONS[case]
    member_id, product_id = setup()
    before = counts()

    with pytest.raises(LoanError) as refused:
        loan_apply(member_id=member_id, product_id=product_id, amount=amount, term=term, as_of=ON)

    assert str(refused.value) == message
    assert counts() == before  # no loan, no audit row, no posting, no account
    assert ledger_check() == []


def test_applications_of_the_product_minimum_and_maximum_are_accepted(app):
    """The product's bounds are inclusive. (Mutation testing, issue 23.)"""
    for setup, amount in ((_v1, "1000"), (lambda: _instant(100000), "50000")):
        member_id, product_id = setup()
        loan = loan_apply(member_id=member_id, product_id=product_id, amount=amount, as_of=ON)
        assert loan.principal == D(amount)
    assert ledger_check() == []


def test_application_at_the_limit_is_accepted(app):
    member_id, product_id = _v1(1000)

    loan = loan_apply(member_id=member_id, product_id=product_id, amount=3000, term=6, as_of=ON)

    assert (loan.status, loan.principal, loan.term) == ("submitted", D("3000.00"), 6)
    assert loan.loan_no == f"L{loan.id:06d}"
    assert loan.channel == "ussd"  # where a member asks, unless the caller says otherwise
    assert ledger_check() == []
