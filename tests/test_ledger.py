from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Date, bindparam, func, select, text, update

from app.extensions import db
from app.models import Account, AuditLog, Installment, JournalEntry, JournalLine, Loan, Member
from app.models.types import Money, UTCDateTime
from app.services.ledger import (
    Draft,
    DuplicatePosting,
    LedgerError,
    Line,
    account_close,
    account_get_or_create,
    accounts_get_or_create,
    credit,
    debit,
    gl_account,
    journal_post,
    journal_post_many,
    ledger_check,
    member_account,
    money_in_account,
)
from app.services.loans import loan_repay
from app.services.members import member_buy_shares, member_deposit
from tests.factories import make_member
from tests.helpers import assert_not_held, holder_then_waiter
from tests.loan_factories import make_loan, make_product, receivables, reload, schedule_owed

D = Decimal
DAY = date(2026, 3, 2)
_refs = itertools.count(1)


def ref() -> str:
    return f"T{next(_refs)}"


def journal_counts() -> tuple[int, int]:
    entries = db.session.scalar(select(func.count()).select_from(JournalEntry))
    lines = db.session.scalar(select(func.count()).select_from(JournalLine))
    return entries, lines


def balances() -> dict[str, Decimal]:
    """Cached balances as stored, read past the session's identity map."""
    return dict(db.session.execute(select(Account.code, Account.balance)).all())


def journal_sums() -> dict[str, Decimal]:
    rows = db.session.execute(
        select(Account.code, func.coalesce(func.sum(JournalLine.amount), 0))
        .outerjoin(JournalLine, JournalLine.account_id == Account.id)
        .group_by(Account.code)
    ).all()
    return {code: D(total) for code, total in rows}


def savings_of(member: Member) -> Decimal:
    db.session.expire_all()
    return member_account(member, "savings").display_balance


def shares_of(member: Member) -> Decimal:
    db.session.expire_all()
    return member_account(member, "share_capital").display_balance


# --- accounts made on demand -----------------------------------------------------------


def account_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Account))


def test_accounts_asked_for_in_bulk_are_found_or_made_once_and_nothing_else_comes_back(
    app: Flask,
) -> None:
    """A nightly job asks for the accounts it posts to: those that exist come back as they
    are, the missing ones are made open and empty (a GL account with no member beside a
    member's, in one batch), and only the asked-for codes come back."""
    loan = make_loan(product=make_product(), on=date(2026, 1, 31))
    member = db.session.get(Member, loan.member_id)
    existing = member_account(member, "savings")
    existing_id = existing.id
    db.session.commit()
    before = account_count()
    specs = [
        {"code": "GL-TEST-INCOME", "kind": "income_penalty", "name": "Test income"},
        {
            "code": "PEN-TEST-1",
            "kind": "loan_penalty",
            "name": "Penalty receivable",
            "member_id": member.id,
            "loan_id": loan.id,
        },
        {"code": existing.code, "kind": "savings", "name": "ignored: it exists"},
    ]

    found = accounts_get_or_create(specs)
    db.session.commit()
    db.session.expire_all()

    assert set(found) == {"GL-TEST-INCOME", "PEN-TEST-1", existing.code}
    assert account_count() == before + 2
    assert found[existing.code].id == existing_id
    made = {
        code: db.session.scalars(select(Account).where(Account.code == code)).one()
        for code in ("GL-TEST-INCOME", "PEN-TEST-1")
    }
    assert [(a.kind, a.name, a.member_id, a.loan_id) for a in made.values()] == [
        ("income_penalty", "Test income", None, None),
        ("loan_penalty", "Penalty receivable", member.id, loan.id),
    ]
    for account in made.values():
        assert (account.status, account.balance) == ("open", D("0.00"))
        assert account.created_at is not None
        assert found[account.code].id == account.id

    again = accounts_get_or_create(specs)  # a chunk retried makes nothing twice
    db.session.commit()
    assert {code: a.id for code, a in again.items()} == {code: a.id for code, a in found.items()}
    assert account_count() == before + 2
    single = account_get_or_create(code="GL-TEST-INCOME", kind="income_penalty", name="Other")
    assert single.id == made["GL-TEST-INCOME"].id and single.name == "Test income"
    assert account_count() == before + 2


@pytest.mark.parametrize("bulk", [False, True], ids=["one", "bulk"])
def test_an_account_made_by_another_transaction_meanwhile_is_found_not_made_twice(
    app: Flask, pg: None, bulk: bool
) -> None:
    """Two jobs wanting one new account at once: the second one's lookup misses the
    first's uncommitted row, its INSERT waits on the code's unique index, and once the
    first commits it gets that very account, not an error and not a second one."""
    held, release = threading.Event(), threading.Event()
    spec = {"code": "GL-TEST-RACE", "kind": "income_penalty", "name": "Made first"}

    def make_it_first() -> int:
        account = Account(**spec)
        db.session.add(account)
        db.session.flush()
        held.set()
        release.wait(20)
        db.session.commit()
        return account.id

    def want_it_too() -> int:
        if bulk:
            account = accounts_get_or_create([{**spec, "name": "Made second"}])[spec["code"]]
        else:
            account = account_get_or_create(
                code=spec["code"], kind=spec["kind"], name="Made second"
            )
        db.session.commit()
        return account.id

    first, second = holder_then_waiter(app, make_it_first, held, want_it_too)
    release.set()
    made_id = first.outcome()

    assert second.outcome() == made_id
    rows = db.session.scalars(select(Account).where(Account.code == spec["code"])).all()
    assert [(a.id, a.name) for a in rows] == [(made_id, "Made first")]


def test_a_members_accounts_are_named_and_owned_by_the_member_and_money_comes_in_by_source(
    app: Flask,
) -> None:
    member = make_member()
    db.session.execute(text("DELETE FROM accounts WHERE member_id = :m"), {"m": member.id})
    db.session.commit()

    savings, shares = member_account(member, "savings"), member_account(member, "share_capital")
    db.session.commit()
    db.session.expire_all()

    assert [(a.code, a.name, a.kind, a.member_id) for a in (savings, shares)] == [
        (f"SAV-{member.member_no}", f"Savings {member.member_no}", "savings", member.id),
        (
            f"SHR-{member.member_no}",
            f"Share capital {member.member_no}",
            "share_capital",
            member.id,
        ),
    ]
    assert money_in_account("mpesa").code == "GL-MPESA-CLEARING"
    assert money_in_account("suspense").code == "GL-SUSPENSE"
    with pytest.raises(LedgerError, match=r"^unknown source of money 'cash'$"):
        money_in_account("cash")


def test_an_account_of_an_unknown_kind_is_refused_by_name_and_nothing_is_made(
    app: Flask,
) -> None:
    db.session.commit()
    before = account_count()
    good = {"code": "GL-TEST-GOOD", "kind": "income_penalty", "name": "Good"}
    bad = {"code": "GL-TEST-BAD", "kind": "bogus", "name": "Bad"}

    with pytest.raises(LedgerError, match=r"^unknown account kind 'bogus'$"):
        accounts_get_or_create([good, bad])
    with pytest.raises(LedgerError, match=r"^unknown account kind 'bogus'$"):
        account_get_or_create(code="GL-TEST-BAD", kind="bogus", name="Bad")
    db.session.commit()

    assert account_count() == before


# --- what journal_post refuses ---------------------------------------------------------


def test_a_balanced_entry_is_written_with_its_lines_and_moves_both_balances(app: Flask) -> None:
    member = make_member()
    before = journal_counts()

    entry_id = member_deposit(
        member_id=member.id, amount="1500.50", reference=ref(), value_date=DAY
    )

    entry = db.session.get(JournalEntry, entry_id)
    assert entry is not None and entry.kind == "deposit" and entry.member_id == member.id
    assert sorted(line.amount for line in entry.lines) == [D("-1500.50"), D("1500.50")]
    assert journal_counts() == (before[0] + 1, before[1] + 2)
    assert savings_of(member) == D("1500.50")
    assert gl_account("GL-MPESA-CLEARING").display_balance == D("1500.50")


@pytest.mark.parametrize(
    ("amounts", "message"),
    [
        # Whole messages: the staff member reading one is told exactly what is wrong.
        (("100.00", "-99.99"), r"^entry does not balance: lines sum to 0\.01$"),
        (("100.00", "-100.00", "0.01"), r"^entry does not balance: lines sum to 0\.01$"),
        (("100.00",), r"^an entry needs at least two lines$"),
        ((), r"^an entry needs at least two lines$"),
        (("100.005", "-100.005"), r"^100\.005 has fractions of a cent$"),
        (("0.001", "-0.001"), r"^0\.001 has fractions of a cent$"),
        (("100.00", "0", "-100.00"), r"^a zero line on \S+$"),
        (("abc", "-1"), r"^not an amount: 'abc'$"),
    ],
)
def test_entries_that_break_the_rules_are_refused_and_write_nothing(
    app: Flask, amounts: tuple[str, ...], message: str
) -> None:
    member = make_member(savings=500)
    db.session.expire_all()
    accounts = [
        gl_account("GL-MPESA-CLEARING"),
        member_account(member, "savings"),
        gl_account("GL-SUSPENSE"),
    ]
    db.session.commit()
    counts, stored = journal_counts(), balances()
    lines = [Line(accounts[i % 3], D(a) if a != "abc" else a) for i, a in enumerate(amounts)]  # type: ignore[arg-type]

    with pytest.raises(LedgerError, match=message):
        journal_post(kind="test", lines=lines, value_date=DAY, idempotency_key=ref())
    db.session.commit()  # whatever the failed call left in the transaction would land now

    assert journal_counts() == counts
    assert balances() == stored
    assert ledger_check() == []


def test_posting_to_a_closed_account_is_refused(app: Flask) -> None:
    member = make_member()
    shares = member_account(member, "share_capital")
    db.session.commit()
    closed = account_close(account_id=shares.id, actor="staff:ops@sacco.test")
    assert closed.status == "closed"
    counts, stored = journal_counts(), balances()

    with pytest.raises(LedgerError, match=f"account {shares.code} is closed"):
        member_buy_shares(
            member_id=member.id, amount=100, reference=ref(), value_date=DAY, from_savings=False
        )

    assert journal_counts() == counts
    assert balances() == stored
    audit = db.session.scalars(select(AuditLog).where(AuditLog.action == "account.close")).one()
    assert audit.object_id == shares.code and audit.after == {"status": "closed"}


def _deposit_one(lines: list[Line]) -> object:
    return journal_post(kind="deposit", lines=lines, value_date=DAY, idempotency_key=ref())


def _deposit_in_bulk(lines: list[Line]) -> object:
    return journal_post_many(
        [Draft(kind="deposit", lines=lines, value_date=DAY, idempotency_key=ref())]
    )


@pytest.mark.parametrize(
    ("post", "refused"),
    [
        (_deposit_one, r"^account \d+ is closed$"),
        (_deposit_in_bulk, r"^an account of this posting was closed meanwhile$"),
    ],
    ids=["one", "bulk"],
)
def test_a_closed_account_is_refused_even_when_the_caller_holds_a_stale_copy(
    app: Flask,
    post,
    refused: str,  # noqa: ANN001
) -> None:
    """The database, not the Python object, decides: the UPDATE's WHERE checks "open"."""
    member = make_member()
    savings = member_account(member, "savings")
    clearing = gl_account("GL-MPESA-CLEARING")
    db.session.commit()
    assert savings.status == "open"  # loaded now; the close below goes around the session
    db.session.execute(
        text("UPDATE accounts SET status = 'closed' WHERE id = :id"), {"id": savings.id}
    )
    counts = journal_counts()

    with pytest.raises(LedgerError, match=refused):
        post([debit(clearing, D(50)), credit(savings, D(50))])
    db.session.rollback()  # the caller's transaction: a bulk posting has no savepoint

    assert journal_counts() == counts
    assert ledger_check() == []


def test_an_account_with_money_in_it_cannot_be_closed(app: Flask) -> None:
    member = make_member(savings=10)
    savings = member_account(member, "savings")
    db.session.commit()

    with pytest.raises(LedgerError, match="still holds 10.00"):
        account_close(account_id=savings.id, actor="staff:ops@sacco.test")

    db.session.expire_all()
    assert db.session.get(Account, savings.id).status == "open"


def test_closing_is_audited_once_and_a_second_close_or_a_missing_account_is_refused(
    app: Flask,
) -> None:
    """Staff read the close in the audit trail (the account, open -> closed, by whom); a
    second close is refused in words and audited nothing more, and so is an id that names
    no account. (Found by mutation testing, issue 23.)"""
    member = make_member()
    shares = member_account(member, "share_capital")
    db.session.commit()
    account_close(account_id=shares.id, actor="staff:ops@sacco.test")

    with pytest.raises(LedgerError) as again:
        account_close(account_id=shares.id, actor="staff:ops@sacco.test")
    assert str(again.value) == f"account {shares.code} is closed already"
    with pytest.raises(LedgerError) as missing:
        account_close(account_id=shares.id + 1000, actor="staff:ops@sacco.test")
    assert str(missing.value) == f"no account {shares.id + 1000}"

    audit = db.session.scalars(select(AuditLog).where(AuditLog.action == "account.close")).one()
    assert (audit.actor, audit.object_type, audit.object_id) == (
        "staff:ops@sacco.test",
        "account",
        shares.code,
    )
    assert (audit.before, audit.after) == ({"status": "open"}, {"status": "closed"})


def test_buying_shares_with_savings_the_member_does_not_have_is_refused(app: Flask) -> None:
    member = make_member(savings=100)
    counts, stored = journal_counts(), balances()

    with pytest.raises(LedgerError, match="insufficient balance"):
        member_buy_shares(member_id=member.id, amount="100.01", reference=ref(), value_date=DAY)

    assert journal_counts() == counts
    assert balances() == stored
    assert savings_of(member) == D(100)
    assert shares_of(member) == D(0)


def test_savings_can_be_spent_down_to_exactly_zero(app: Flask) -> None:
    member = make_member(savings=100)

    member_buy_shares(member_id=member.id, amount=100, reference=ref(), value_date=DAY)

    assert savings_of(member) == D(0)
    assert shares_of(member) == D(100)
    with pytest.raises(LedgerError, match="insufficient balance"):
        member_buy_shares(member_id=member.id, amount="0.01", reference=ref(), value_date=DAY)


def test_a_repeated_idempotency_key_raises_and_writes_nothing_twice(app: Flask) -> None:
    member = make_member()
    first = member_deposit(member_id=member.id, amount=250, reference="QGH7X1Y2Z3", value_date=DAY)
    counts, stored = journal_counts(), balances()

    with pytest.raises(DuplicatePosting) as caught:
        member_deposit(member_id=member.id, amount=999, reference="QGH7X1Y2Z3", value_date=DAY)
    db.session.commit()

    assert caught.value.entry_id == first
    assert caught.value.key == "deposit:QGH7X1Y2Z3"
    assert str(caught.value) == "already posted: deposit:QGH7X1Y2Z3"
    assert journal_counts() == counts
    assert balances() == stored
    assert savings_of(member) == D(250)


def test_an_entry_says_who_posted_it_and_why_and_defaults_to_the_system(app: Flask) -> None:
    """The journal is the audit trail: an entry keeps the actor and description it was
    given (the description cut to the column's 255), and one posted without them says
    "system" and nothing, never a made-up reason."""
    loan = make_loan(product=make_product(), on=date(2026, 1, 31))
    member = db.session.get(Member, loan.member_id)

    def lines() -> list[Line]:
        return [
            debit(gl_account("GL-MPESA-CLEARING"), D("10.00")),
            credit(member_account(member, "savings"), D("10.00")),
        ]

    told = journal_post(
        kind="deposit",
        lines=lines(),
        value_date=DAY,
        description="Counter deposit " + "." * 300,
        idempotency_key=ref(),
        actor="staff:teller@sacco.test",
        member_id=member.id,
        loan_id=loan.id,
    )
    untold = journal_post(kind="deposit", lines=lines(), value_date=DAY, idempotency_key=ref())
    db.session.commit()
    db.session.expire_all()

    assert (told.actor, told.description) == (
        "staff:teller@sacco.test",
        ("Counter deposit " + "." * 300)[:255],
    )
    assert (told.member_id, told.loan_id, told.kind) == (member.id, loan.id, "deposit")
    assert (untold.actor, untold.description) == ("system", "")
    assert (untold.member_id, untold.loan_id, untold.corrects_entry_id) == (None, None, None)
    assert ledger_check() == []


def test_entries_posted_in_bulk_say_what_their_drafts_say_and_land_once(app: Flask) -> None:
    """`journal_post_many` writes each draft as `journal_post` would (kind, description,
    value date, actor, member and loan) and skips a draft whose key is posted already: a
    close-of-business chunk retried doubles nothing."""
    loan = make_loan(product=make_product(), on=date(2026, 1, 31))
    member = db.session.get(Member, loan.member_id)
    start = savings_of(member)
    draft = Draft(
        kind="deposit",
        lines=[
            debit(gl_account("GL-MPESA-CLEARING"), D("250.00")),
            credit(member_account(member, "savings"), D("250.00")),
        ],
        value_date=DAY,
        idempotency_key="bulk-draft-1",
        description="Deposit from the nightly run " + "." * 300,  # kept to the column's 255
        actor="job:test",
        member_id=loan.member_id,
        loan_id=loan.id,
    )

    assert journal_post_many([draft]) == {"bulk-draft-1"}
    db.session.commit()
    entry = db.session.scalar(
        select(JournalEntry).where(JournalEntry.idempotency_key == "bulk-draft-1")
    )
    assert entry is not None
    assert (entry.kind, entry.description, entry.value_date, entry.actor) == (
        "deposit",
        draft.description[:255],
        DAY,
        "job:test",
    )
    assert (entry.member_id, entry.loan_id) == (loan.member_id, loan.id)
    before = (journal_counts(), balances())

    assert journal_post_many([draft]) == set()  # the same chunk again
    db.session.commit()
    assert (journal_counts(), balances()) == before
    # Retried with one more draft after it: the one posted before is skipped, not the rest
    # (a shilling: the smallest whole amount moves a balance like any other).
    more = dataclasses.replace(
        draft,
        idempotency_key="bulk-draft-2",
        lines=[
            debit(gl_account("GL-MPESA-CLEARING"), D("1.00")),
            credit(member_account(member, "savings"), D("1.00")),
        ],
    )
    assert journal_post_many([draft, more]) == {"bulk-draft-2"}
    db.session.commit()
    assert journal_counts() == (before[0][0] + 1, before[0][1] + 2)
    assert savings_of(member) == start + D("251.00")
    assert ledger_check() == []


@pytest.mark.parametrize("kind", ["savings", "share_capital"])
def test_a_bulk_posting_that_would_overdraw_members_money_is_refused_whole(
    app: Flask, kind: str
) -> None:
    """The guard of `journal_post` in bulk: a member's money is never taken below zero,
    not by one shilling, and the chunk's other entries go with the refused one."""
    member = make_member(savings=D("100.00"))
    income = gl_account("GL-INCOME-FEES")
    mine = member_account(member, kind)
    db.session.commit()
    before = (journal_counts(), balances())
    drafts = [
        Draft(
            kind="fee",
            lines=[
                debit(member_account(member, "savings"), D("100.00")),
                credit(income, D("100.00")),
            ],
            value_date=DAY,
            idempotency_key="bulk-fee-1",
        ),
        Draft(
            kind="fee",
            lines=[debit(mine, D("1.00")), credit(income, D("1.00"))],
            value_date=DAY,
            idempotency_key="bulk-fee-2",
        ),
    ]

    with pytest.raises(LedgerError, match="insufficient balance"):
        journal_post_many(drafts)
    db.session.rollback()

    assert (journal_counts(), balances()) == before
    assert ledger_check() == []


def test_a_duplicate_rolls_back_only_itself_not_the_callers_earlier_work(app: Flask) -> None:
    member = make_member()
    member_deposit(member_id=member.id, amount=10, reference="DUP", value_date=DAY)

    member_deposit(member_id=member.id, amount=20, reference="KEPT", value_date=DAY, commit=False)
    with pytest.raises(DuplicatePosting):
        member_deposit(
            member_id=member.id, amount=30, reference="DUP", value_date=DAY, commit=False
        )
    db.session.commit()

    assert savings_of(member) == D(30)
    assert ledger_check() == []


def test_cached_balances_equal_the_sum_of_their_lines_after_many_postings(app: Flask) -> None:
    members = [make_member() for _ in range(3)]
    for i, member in enumerate(members):
        for amount in ("1000", "250.75", "0.25"):
            member_deposit(member_id=member.id, amount=amount, reference=ref(), value_date=DAY)
        member_buy_shares(
            member_id=member.id, amount=100 * (i + 1), reference=ref(), value_date=DAY
        )
    member_buy_shares(
        member_id=members[0].id, amount=500, reference=ref(), value_date=DAY, from_savings=False
    )

    assert balances() == journal_sums()
    assert ledger_check() == []
    assert [savings_of(m) for m in members] == [D("1151.00"), D("1051.00"), D("951.00")]
    assert [shares_of(m) for m in members] == [D("600"), D("200"), D("300")]
    assert gl_account("GL-MPESA-CLEARING").display_balance == D("4253.00")  # 3 x 1251 + 500
    # Each entry sums to zero, so the whole journal does.
    assert D(db.session.scalar(select(func.sum(JournalLine.amount)))) == 0


# --- ledger_check finds what was done behind the journal's back -------------------------


def test_ledger_check_finds_a_tampered_balance_and_fix_rebuilds_it(app: Flask) -> None:
    member = make_member(savings=700)
    code = f"SAV-{member.member_no}"
    db.session.execute(
        text("UPDATE accounts SET balance = balance - 5 WHERE code = :c"), {"c": code}
    )
    db.session.commit()

    problems = ledger_check()

    assert [(p.what, p.detail.split(":")[0]) for p in problems] == [("balance", code)]
    assert "journal -700.00" in problems[0].detail
    assert ledger_check(fix=True) == problems  # reports what it rewrote
    assert ledger_check() == []
    assert balances()[code] == D("-700.00")
    assert savings_of(member) == D(700)


def _insert_raw_entry(amounts: list[tuple[int, Decimal]]) -> int:
    """An entry written with SQL, around journal_post: what a bad script or migration might do."""
    db.session.execute(
        text(
            "INSERT INTO journal_entries (kind, description, value_date, posted_at, actor)"
            " VALUES ('tampered', 'raw sql', :value_date, :posted_at, 'psql')"
        ).bindparams(
            bindparam("value_date", type_=Date()), bindparam("posted_at", type_=UTCDateTime())
        ),
        {"value_date": DAY, "posted_at": datetime(2026, 3, 2, 9, 0, tzinfo=UTC)},
    )
    entry_id = db.session.scalar(
        text("SELECT max(id) FROM journal_entries WHERE kind = 'tampered'")
    )
    for account_id, amount in amounts:
        db.session.execute(
            text(
                "INSERT INTO journal_lines (entry_id, account_id, amount) VALUES (:e, :a, :amount)"
            ).bindparams(bindparam("amount", type_=Money())),
            {"e": entry_id, "a": account_id, "amount": amount},
        )
    db.session.commit()
    return entry_id


@pytest.mark.books_may_disagree
def test_ledger_check_finds_an_unbalanced_entry_inserted_with_raw_sql(app: Flask) -> None:
    member = make_member(savings=100)
    savings = member_account(member, "savings")
    clearing = gl_account("GL-MPESA-CLEARING")
    db.session.commit()
    assert ledger_check() == []

    entry_id = _insert_raw_entry([(clearing.id, D("50.00")), (savings.id, D("-49.00"))])
    problems = ledger_check()

    assert ("entry", f"journal entry {entry_id} sums to 1.00") in [
        (p.what, p.detail) for p in problems
    ]
    assert {p.detail.split(":")[0] for p in problems if p.what == "balance"} == {
        clearing.code,
        savings.code,
    }
    # fix rewrites the caches, but an unbalanced entry stays a problem until a person acts.
    ledger_check(fix=True)
    assert [(p.what, p.detail) for p in ledger_check()] == [
        ("entry", f"journal entry {entry_id} sums to 1.00")
    ]


@pytest.mark.books_may_disagree
def test_ledger_check_finds_a_one_line_entry(app: Flask) -> None:
    member = make_member(savings=100)
    savings = member_account(member, "savings")
    db.session.commit()

    entry_id = _insert_raw_entry([(savings.id, D("-5.00"))])

    details = [p.detail for p in ledger_check() if p.what == "entry"]
    assert f"journal entry {entry_id} has one line" in details
    assert f"journal entry {entry_id} sums to -5.00" in details


# --- property: any sequence of deposits and share purchases keeps the books right -------

amounts = st.decimals(min_value=D("0.01"), max_value=D("50000"), places=2)
operations = st.lists(
    st.tuples(st.sampled_from(["deposit", "shares", "shares_mpesa"]), st.integers(0, 2), amounts),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=operations)
def test_any_sequence_of_deposits_and_share_purchases_keeps_the_ledger_exact(
    app: Flask, ops: list[tuple[str, int, Decimal]]
) -> None:
    # Fixtures do not reset between examples: fresh members and references keep each
    # example's numbers its own, and ledger_check covers everything ever posted.
    members = [make_member() for _ in range(3)]
    deposits = {m.id: D(0) for m in members}
    shares = {m.id: D(0) for m in members}
    from_savings = {m.id: D(0) for m in members}

    for op, who, amount in ops:
        member = members[who]
        if op == "deposit":
            member_deposit(member_id=member.id, amount=amount, reference=ref(), value_date=DAY)
            deposits[member.id] += amount
        elif op == "shares_mpesa":
            member_buy_shares(
                member_id=member.id,
                amount=amount,
                reference=ref(),
                value_date=DAY,
                from_savings=False,
            )
            shares[member.id] += amount
        elif amount <= deposits[member.id] - from_savings[member.id]:
            member_buy_shares(member_id=member.id, amount=amount, reference=ref(), value_date=DAY)
            shares[member.id] += amount
            from_savings[member.id] += amount
        else:
            with pytest.raises(LedgerError, match="insufficient balance"):
                member_buy_shares(
                    member_id=member.id, amount=amount, reference=ref(), value_date=DAY
                )

    assert ledger_check() == []
    for member in members:
        assert savings_of(member) == deposits[member.id] - from_savings[member.id]
        assert shares_of(member) == shares[member.id]
        assert savings_of(member) >= 0


# --- concurrency: the database serialises postings, not a read-then-write ---------------

THREADS = 8
PER_THREAD = 10


def _in_threads(app: Flask, n: int, work) -> list[object]:  # noqa: ANN001
    """Run work(i) in n threads that start together, each in its own app context (session)."""
    barrier = threading.Barrier(n)
    # End the test's own transaction first: on SQLite even a read holds the write lock
    # (BEGIN IMMEDIATE) until it ends.
    db.session.commit()

    def run(i: int) -> object:
        with app.app_context():
            barrier.wait(timeout=30)
            try:
                return work(i)
            except Exception as exc:  # noqa: BLE001 - returned for the test to judge
                return exc

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


def test_concurrent_deposits_to_one_member_all_land_exactly(app: Flask) -> None:
    member = make_member()  # GL clearing does not exist yet: the threads race to create it
    member_id = member.id

    def deposit_many(i: int) -> list[int]:
        return [
            member_deposit(
                member_id=member_id, amount=D("100.01") + j, reference=f"C-{i}-{j}", value_date=DAY
            )
            for j in range(PER_THREAD)
        ]

    results = _in_threads(app, THREADS, deposit_many)

    assert [r for r in results if isinstance(r, Exception)] == []
    expected = sum((D("100.01") + j for j in range(PER_THREAD)), D(0)) * THREADS
    assert savings_of(member) == expected
    assert gl_account("GL-MPESA-CLEARING").display_balance == expected
    assert journal_counts() == (THREADS * PER_THREAD, 2 * THREADS * PER_THREAD)
    assert (
        db.session.scalar(
            select(func.count()).select_from(Account).where(Account.code == "GL-MPESA-CLEARING")
        )
        == 1
    )
    assert ledger_check() == []


def test_bulk_postings_to_a_shared_account_from_two_workers_never_deadlock(
    app: Flask, pg: None
) -> None:
    """Two close-of-business chunks posting at once, each to accounts of its own and both
    to one income account (as two cob workers charging penalties do): every entry lands,
    none is refused by a deadlock. The lines each chunk inserts hold KEY SHARE on the
    income account, so locking it FOR UPDATE before moving its balance deadlocked."""
    income = gl_account("GL-INCOME-PENALTY")
    owners = [make_member() for _ in range(2)]
    own = [member_account(m, "savings") for m in owners]  # any accounts of their own
    db.session.commit()
    income_id, own_ids = income.id, [a.id for a in own]
    rounds, per_chunk = 15, 40

    def post_chunks(i: int) -> int:
        for r in range(rounds):
            mine, shared = db.session.get(Account, own_ids[i]), db.session.get(Account, income_id)
            journal_post_many(
                [
                    Draft(
                        kind="penalty",
                        lines=[debit(shared, D("1.00")), credit(mine, D("1.00"))],
                        value_date=DAY,
                        idempotency_key=f"bulk-race-{i}-{r}-{n}",
                    )
                    for n in range(per_chunk)
                ]
            )
            db.session.commit()
        return rounds

    results = _in_threads(app, 2, post_chunks)

    assert results == [rounds, rounds], results
    assert gl_account("GL-INCOME-PENALTY").balance == D("1.00") * 2 * rounds * per_chunk
    assert journal_counts() == (2 * rounds * per_chunk, 4 * rounds * per_chunk)
    assert ledger_check() == []


def test_a_bulk_posting_locks_its_own_accounts_alone_and_in_id_order(app: Flask, pg: None) -> None:
    """While a chunk waits for one of its accounts, it holds none after it in id order
    (two chunks never lock each other out in a circle) and none it does not post to (a
    posting elsewhere never waits on it). The waited-for account's row is written last,
    so a scan in table order would meet the one after it first."""
    first, elsewhere, waited, after = (
        gl_account(code) for code in ("GL-CASH", "GL-BANK", "GL-INCOME-FEES", "GL-INCOME-PENALTY")
    )
    db.session.commit()
    ids = [a.id for a in (first, elsewhere, waited, after)]
    assert ids == sorted(ids)
    db.session.execute(text("UPDATE accounts SET name = name WHERE id = :id"), {"id": waited.id})
    db.session.commit()
    first_id, elsewhere_id, waited_id, after_id = ids
    held, release = threading.Event(), threading.Event()

    def hold_the_waited_for_account() -> None:
        db.session.execute(
            select(Account.id).where(Account.id == waited_id).with_for_update(key_share=True)
        ).all()
        held.set()
        release.wait(20)
        db.session.rollback()

    def chunk() -> set[str]:
        cash = db.session.get(Account, first_id)
        drafts = [
            Draft(
                kind="journal",
                lines=[debit(cash, D("1.00")), credit(db.session.get(Account, to), D("1.00"))],
                value_date=DAY,
                idempotency_key=f"lock-order-{to}",
            )
            for to in (waited_id, after_id)
        ]
        posted = journal_post_many(drafts)  # type: ignore[arg-type]
        db.session.commit()
        return posted

    holder, job = holder_then_waiter(app, hold_the_waited_for_account, held, chunk)
    try:
        for account_id in (after_id, elsewhere_id):
            assert_not_held("accounts", account_id, "NO KEY UPDATE")
    finally:
        release.set()
        holder.outcome()
    assert len(job.outcome()) == 2
    assert ledger_check() == []


def test_concurrent_share_purchases_never_overdraw_savings(app: Flask) -> None:
    member = make_member(savings=500)
    member_id = member.id

    def buy(i: int) -> int:
        return member_buy_shares(
            member_id=member_id, amount=100, reference=f"S-{i}", value_date=DAY
        )

    results = _in_threads(app, THREADS, buy)

    succeeded = [r for r in results if isinstance(r, int)]
    refused = [r for r in results if isinstance(r, LedgerError)]
    assert len(succeeded) == 5 and len(refused) == THREADS - 5
    assert all("insufficient balance" in str(r) for r in refused)
    assert savings_of(member) == D(0)
    assert shares_of(member) == D(500)
    assert ledger_check() == []


def test_the_same_key_posted_from_several_threads_lands_once(app: Flask) -> None:
    member = make_member(savings=1)  # accounts exist, so the race is only on the key
    member_id = member.id

    def deposit(i: int) -> int:
        return member_deposit(member_id=member_id, amount=750, reference="RACE1", value_date=DAY)

    results = _in_threads(app, THREADS, deposit)

    posted = [r for r in results if isinstance(r, int)]
    duplicates = [r for r in results if isinstance(r, DuplicatePosting)]
    assert len(posted) == 1
    assert len(duplicates) == THREADS - 1, results
    assert {d.entry_id for d in duplicates} == set(posted)
    assert (
        db.session.scalar(
            select(func.count())
            .select_from(JournalEntry)
            .where(JournalEntry.idempotency_key == "deposit:RACE1")
        )
        == 1
    )
    assert savings_of(member) == D(751)
    assert ledger_check() == []


# --- `sacco ledger check` ---------------------------------------------------------------


def tamper_a_balance() -> None:
    member = make_member(savings=100)
    db.session.execute(
        text("UPDATE accounts SET balance = balance + 1 WHERE code = :c"),
        {"c": f"SAV-{member.member_no}"},
    )
    db.session.commit()


@pytest.mark.books_may_disagree
def test_ledger_check_command_exits_0_when_clean_and_1_when_tampered(
    app: Flask, runner: FlaskCliRunner
) -> None:
    make_member(savings=100)
    clean = runner.invoke(args=["ledger", "check"])
    assert clean.exit_code == 0, clean.output
    assert clean.stdout.strip() == "ledger check: ok"

    tamper_a_balance()
    dirty = runner.invoke(args=["ledger", "check"])

    assert dirty.exit_code == 1
    assert dirty.stdout == ""
    assert dirty.stderr.splitlines()[-1] == "ledger check: 1 problem(s)"
    assert dirty.stderr.startswith("balance: SAV-")


def test_ledger_check_fix_rewrites_the_balances(app: Flask, runner: FlaskCliRunner) -> None:
    tamper_a_balance()

    fixed = runner.invoke(args=["ledger", "check", "--fix"])

    assert fixed.exit_code == 1  # it found a problem, even though it is fixed now
    assert "(balances rewritten)" in fixed.stderr
    assert runner.invoke(args=["ledger", "check"]).exit_code == 0


# --- ledger_check's SQL finds each kind of mismatch, planted straight in the tables ------
# The check compares in the database and returns only the problems; these pin every
# message word for word (the CLI prints them) and the order they come in.


def _problems() -> list[tuple[str, str]]:
    db.session.expire_all()
    return [(p.what, p.detail) for p in ledger_check()]


def _loan_on_the_books() -> Loan:
    """A disbursed V1 loan (10,000 at 12% over 12 months) with one repayment."""
    loan = make_loan(product=make_product(), on=date(2026, 1, 31))
    loan_repay(loan_id=loan.id, amount="1000", reference="RPAY1", value_date=date(2026, 2, 28))
    return reload(loan.id)


def _owe_a_cent_more(loan_id: int, components: Sequence[str]) -> None:
    """A cent more due in each of these components on the loan's last installment, written
    behind the journal's back."""
    due = {getattr(Installment, f"{c}_due") for c in components}
    db.session.execute(
        update(Installment)
        .where(
            Installment.loan_id == loan_id,
            Installment.number == 12,
            Installment.superseded.is_(False),
        )
        .values({column: column + D("0.01") for column in due})
    )


def test_a_clean_book_with_members_and_a_loan_has_no_problems(app: Flask) -> None:
    make_member(savings=700)
    member_buy_shares(
        member_id=make_member(savings=300).id, amount=300, reference=ref(), value_date=DAY
    )
    _loan_on_the_books()

    assert ledger_check() == []
    assert ledger_check(fix=True) == []


@pytest.mark.books_may_disagree
def test_tampered_balances_are_reported_in_account_order_with_both_figures(app: Flask) -> None:
    first, second = make_member(savings=700), make_member(savings="12.34")
    for code, change in ((f"SAV-{second.member_no}", "0.01"), (f"SAV-{first.member_no}", "-5")):
        db.session.execute(
            text("UPDATE accounts SET balance = balance + :d WHERE code = :c").bindparams(
                bindparam("d", type_=Money())
            ),
            {"d": D(change), "c": code},
        )
    db.session.commit()

    expected = [
        ("balance", f"SAV-{first.member_no}: cached -705.00, journal -700.00"),
        ("balance", f"SAV-{second.member_no}: cached -12.33, journal -12.34"),
    ]
    assert _problems() == expected
    assert [(p.what, p.detail) for p in ledger_check(fix=True)] == expected
    assert _problems() == []
    assert savings_of(first) == D("700.00") and savings_of(second) == D("12.34")


@pytest.mark.books_may_disagree
def test_a_deleted_journal_line_breaks_its_entry_and_its_accounts_balance(app: Flask) -> None:
    member = make_member()
    savings = member_account(member, "savings")
    db.session.commit()
    entry_id = member_deposit(member_id=member.id, amount="250.50", reference=ref(), value_date=DAY)
    db.session.execute(
        text("DELETE FROM journal_lines WHERE entry_id = :e AND account_id = :a"),
        {"e": entry_id, "a": savings.id},
    )
    db.session.commit()

    assert _problems() == [
        ("entry", f"journal entry {entry_id} sums to 250.50"),
        ("entry", f"journal entry {entry_id} has one line"),
        ("balance", f"{savings.code}: cached -250.50, journal 0.00"),
    ]
    # fix rewrites the cache; the broken entry stays for a person to repair.
    ledger_check(fix=True)
    assert _problems() == [
        ("entry", f"journal entry {entry_id} sums to 250.50"),
        ("entry", f"journal entry {entry_id} has one line"),
    ]


@pytest.mark.books_may_disagree
def test_an_installment_changed_behind_the_journal_is_a_loan_mismatch(app: Flask) -> None:
    loan = _loan_on_the_books()
    owed, held = schedule_owed(loan), receivables(loan)
    assert owed == held and owed["principal"] > 0
    db.session.execute(
        text(
            "UPDATE installments SET principal_paid = principal_paid + :d"
            " WHERE loan_id = :l AND number = 2 AND superseded = :f"
        ).bindparams(bindparam("d", type_=Money())),
        {"d": D("0.01"), "l": loan.id, "f": False},
    )
    db.session.commit()

    assert _problems() == [
        (
            "loan",
            f"{loan.loan_no} principal: receivable {held['principal']},"
            f" schedule outstanding {owed['principal'] - D('0.01')}",
        )
    ]
    assert [p.what for p in ledger_check(fix=True)] == ["loan"]  # not a cache: fix leaves it


@pytest.mark.books_may_disagree
@pytest.mark.parametrize(
    "tampered",
    [("interest",), ("principal", "interest", "fees", "penalty")],
    ids=["a-later-component", "every-component"],
)
def test_each_component_changed_behind_the_journal_is_reported_on_its_own(
    app: Flask, tampered: tuple[str, ...]
) -> None:
    """Components are compared one by one: a loan right in principal but wrong in interest
    is reported, and so is one wrong in every component at once."""
    loan = _loan_on_the_books()
    owed, held = schedule_owed(loan), receivables(loan)
    _owe_a_cent_more(loan.id, tampered)
    db.session.commit()

    assert _problems() == [
        (
            "loan",
            f"{loan.loan_no} {c}: receivable {held[c]}, schedule outstanding {owed[c] + D('0.01')}",
        )
        for c in ("fees", "interest", "penalty", "principal")
        if c in tampered
    ]


@pytest.mark.books_may_disagree
def test_a_schedule_whose_receivables_were_never_booked_is_a_mismatch(app: Flask) -> None:
    """The other way round: the schedule says the loan owes, and the journal holds nothing
    on any receivable of it (its lines moved to suspense, the caches rebuilt)."""
    loan = _loan_on_the_books()
    owed = schedule_owed(loan)
    suspense = gl_account("GL-SUSPENSE")
    db.session.commit()
    db.session.execute(
        text(
            "UPDATE journal_lines SET account_id = :s"
            " WHERE account_id IN (SELECT id FROM accounts WHERE loan_id = :l)"
        ),
        {"s": suspense.id, "l": loan.id},
    )
    db.session.commit()
    ledger_check(fix=True)  # the cached balances follow the journal: only the loan is left

    assert _problems() == [
        ("loan", f"{loan.loan_no} {c}: receivable 0.00, schedule outstanding {owed[c]}")
        for c in ("fees", "interest", "penalty", "principal")
        if owed[c] != 0
    ]


@pytest.mark.books_may_disagree
def test_receivables_without_a_live_schedule_are_mismatches_for_each_component(
    app: Flask,
) -> None:
    loan = _loan_on_the_books()
    held = receivables(loan)
    db.session.execute(
        text("UPDATE installments SET superseded = :t WHERE loan_id = :l"),
        {"t": True, "l": loan.id},
    )
    db.session.commit()

    # In component order (alphabetical, as always); a component at zero on both sides is fine.
    assert _problems() == [
        (
            "loan",
            f"{loan.loan_no} {component}: receivable {held[component]}, schedule outstanding 0.00",
        )
        for component in ("fees", "interest", "penalty", "principal")
        if held[component] != 0
    ]


@pytest.mark.books_may_disagree
def test_a_loan_marked_settled_while_it_still_owes_is_reported_per_component(
    app: Flask,
) -> None:
    other = make_loan(product=make_product("V1", code="V1B"), on=date(2026, 1, 31))
    loan = _loan_on_the_books()
    owed = schedule_owed(loan)
    db.session.execute(text("UPDATE loans SET status = 'closed' WHERE id = :l"), {"l": loan.id})
    db.session.execute(
        text("UPDATE loans SET status = 'written_off' WHERE id = :l"), {"l": other.id}
    )
    db.session.commit()

    other_owed = schedule_owed(reload(other.id))
    expected = [
        ("loan", f"{other.loan_no} is written_off but still owes {c} {other_owed[c]}")
        for c in ("fees", "interest", "penalty", "principal")
        if other_owed[c] != 0
    ] + [
        ("loan", f"{loan.loan_no} is closed but still owes {c} {owed[c]}")
        for c in ("fees", "interest", "penalty", "principal")
        if owed[c] != 0
    ]
    assert other.id < loan.id and len(expected) == 4  # principal and interest of each
    assert _problems() == expected


@pytest.mark.books_may_disagree
def test_a_loan_closed_while_it_owes_every_component_is_reported_for_each(app: Flask) -> None:
    """Books and schedule agree, and the loan owes principal, interest, fees and penalty
    alike: marked closed, each of the four is reported, none hidden by the others."""
    loan = _loan_on_the_books()
    for kind, income in (("loan_fees", "GL-INCOME-FEES"), ("loan_penalty", "GL-INCOME-PENALTY")):
        receivable = account_get_or_create(
            code=f"T-{kind}-{loan.loan_no}", kind=kind, name=kind, loan_id=loan.id
        )
        journal_post(
            kind="journal",
            lines=[debit(receivable, D("0.01")), credit(gl_account(income), D("0.01"))],
            value_date=date(2026, 2, 28),
            loan_id=loan.id,
        )
    _owe_a_cent_more(loan.id, ("fees", "penalty"))
    db.session.commit()
    owed = schedule_owed(reload(loan.id))
    assert _problems() == [] and all(owed[c] > 0 for c in owed)

    db.session.execute(text("UPDATE loans SET status = 'closed' WHERE id = :l"), {"l": loan.id})
    db.session.commit()

    assert _problems() == [
        ("loan", f"{loan.loan_no} is closed but still owes {c} {owed[c]}")
        for c in ("fees", "interest", "penalty", "principal")
    ]


@pytest.mark.books_may_disagree
def test_a_loan_closed_while_it_owes_one_shilling_of_every_component_is_reported(
    app: Flask,
) -> None:
    """The smallest debts a number can be mistaken for: one shilling of each component,
    books and schedule agreeing. Closed, the loan still owes all four. (Mutation testing,
    issue 23.)"""
    loan = _loan_on_the_books()
    owed = schedule_owed(loan)
    one = D("1.00")
    lines = [
        credit(gl_account("GL-INCOME-FEES"), one),
        credit(gl_account("GL-INCOME-PENALTY"), one),
    ]
    for kind, component in (("loan_principal", "principal"), ("loan_interest", "interest")):
        receivable = db.session.scalars(
            select(Account).where(Account.loan_id == loan.id, Account.kind == kind)
        ).one()
        lines.append(credit(receivable, owed[component] - one))  # all but a shilling paid
    for kind in ("loan_fees", "loan_penalty"):
        receivable = account_get_or_create(
            code=f"T-{kind}-{loan.loan_no}", kind=kind, name=kind, loan_id=loan.id
        )
        lines.append(debit(receivable, one))
    lines.append(debit(gl_account("GL-CASH"), -sum((line.amount for line in lines), D(0))))
    journal_post(kind="journal", lines=lines, value_date=date(2026, 2, 28), loan_id=loan.id)
    # The schedule, written behind the journal's back to say the same: all paid but a
    # shilling of each component on the last installment.
    live = (Installment.loan_id == loan.id) & Installment.superseded.is_(False)
    db.session.execute(
        update(Installment)
        .where(live)
        .values({getattr(Installment, f"{c}_paid"): getattr(Installment, f"{c}_due") for c in owed})
    )
    last = live & (Installment.number == 12)
    db.session.execute(
        update(Installment)
        .where(last)
        .values(
            principal_paid=Installment.principal_paid - one,
            interest_paid=Installment.interest_paid - one,
            fees_due=Installment.fees_due + one,
            penalty_due=Installment.penalty_due + one,
        )
    )
    db.session.commit()
    assert schedule_owed(reload(loan.id)) == dict.fromkeys(owed, one)
    assert _problems() == []

    db.session.execute(text("UPDATE loans SET status = 'closed' WHERE id = :l"), {"l": loan.id})
    db.session.commit()

    assert _problems() == [
        ("loan", f"{loan.loan_no} is closed but still owes {c} 1.00")
        for c in ("fees", "interest", "penalty", "principal")
    ]


@pytest.mark.books_may_disagree
@pytest.mark.parametrize(
    ("taken", "overdrawn"), [("150.25", "-50.25"), ("100.01", "-0.01")], ids=["shillings", "a-cent"]
)
def test_an_overdrawn_savings_account_is_reported_from_its_journal(
    app: Flask, taken: str, overdrawn: str
) -> None:
    member = make_member(savings=100)
    savings = member_account(member, "savings")
    clearing = gl_account("GL-MPESA-CLEARING")
    db.session.commit()
    # A raw entry that takes more than the 100 of savings (by a cent too: any overdraft is
    # one), with the caches moved to match so only the overdraft is left to find.
    _insert_raw_entry([(savings.id, D(taken)), (clearing.id, -D(taken))])
    for account, delta in ((savings, D(taken)), (clearing, -D(taken))):
        db.session.execute(
            text("UPDATE accounts SET balance = balance + :d WHERE id = :a").bindparams(
                bindparam("d", type_=Money())
            ),
            {"d": delta, "a": account.id},
        )
    db.session.commit()

    assert _problems() == [("account", f"{savings.code} is overdrawn: {overdrawn}")]
