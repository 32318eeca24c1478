"""Interest on savings: each day's closing balance earns rate/100/365, a period's sum is
posted once the period is over, withholding tax deducted, once per account and period
whatever reruns, replays or missed nights come. Each figure is checked against a plain
day-by-day calculation written here, not the service's own walk."""

from __future__ import annotations

import threading
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import func, select, text

from app.clock import business_today
from app.extensions import db
from app.models import Account, AuditLog, InterestPosting, JournalEntry, JournalLine, Member
from app.money import ZERO, round_money
from app.selectors.statements import member_statement_range
from app.services.ledger import credit, debit, gl_account, journal_post
from app.services.members import member_deposit
from app.services.savings import account_product, member_product_account, product_update
from app.services.savings.interest import (
    interest_due_ids,
    interest_post,
    period_of,
    periods_between,
)
from tests.factories import make_member
from tests.helpers import (
    Worker,
    assert_not_held,
    holder_then_waiter,
    row_locked,
    wait_until_blocked,
)
from workers.runner import JobStats
from workers.schedule import BATCHES, JOBS, SCHEDULE

D = Decimal
WHT = D("15")  # settings WHT_INTEREST_PERCENT, the default


def _run(as_of: date) -> JobStats:
    stats = JobStats()
    JOBS["savings-interest"](as_of=as_of, stats=stats)
    assert stats.errors == []
    return stats


def _savings(member: Member) -> int:
    """The member's withdrawable savings account (ORD: 3% a year, monthly)."""
    account = member_product_account(member, account_product("ORD"))
    db.session.commit()
    return account.id


_keys = iter(range(1, 10_000))


def _move(account_id: int, amount: str, on: date) -> None:
    """Money in (positive) from M-PESA or out (negative) to a payout, on `on`."""
    account = db.session.get(Account, account_id)
    assert account is not None
    value = D(amount)
    outside = gl_account("GL-MPESA-CLEARING" if value > 0 else "GL-B2C-UTILITY")
    lines = (
        [debit(outside, value), credit(account, value)]
        if value > 0
        else [debit(account, -value), credit(outside, -value)]
    )
    journal_post(
        kind="deposit" if value > 0 else "withdrawal",
        lines=lines,
        value_date=on,
        idempotency_key=f"test-move:{next(_keys)}",
    )
    db.session.commit()


def expected_interest(
    moves: list[tuple[date, Decimal]], start: date, end: date, rate: Decimal
) -> Decimal:
    """The plain reading of the rule: every day of the period, the balance at its close
    (everything dated up to that day), never below zero, times rate/100/365; rounded once."""
    total = ZERO
    day = start
    while day <= end:
        closing = sum((amount for on, amount in moves if on <= day), ZERO)
        total += max(closing, ZERO) * rate / 100 / 365
        day += timedelta(days=1)
    return round_money(total)


def _postings(account_id: int | None = None) -> list[InterestPosting]:
    db.session.expire_all()
    query = select(InterestPosting).order_by(InterestPosting.account_id, InterestPosting.period_end)
    if account_id is not None:
        query = query.where(InterestPosting.account_id == account_id)
    return list(db.session.scalars(query))


def _moved(code: str) -> Decimal:
    """What the journal moved on a GL account (debits positive)."""
    total = db.session.scalar(
        select(func.coalesce(func.sum(JournalLine.amount), 0))
        .join(Account, Account.id == JournalLine.account_id)
        .where(Account.code == code)
    )
    return round_money(D(str(total)))


def _balance(account_id: int) -> Decimal:
    db.session.expire_all()
    account = db.session.get(Account, account_id)
    assert account is not None
    return -account.balance


def _plain(moves: list[tuple[str, str]]) -> list[tuple[date, Decimal]]:
    return [(date.fromisoformat(on), D(amount)) for on, amount in moves]


def test_the_job_is_a_nightly_close_of_business_batch_before_the_ledger_check() -> None:
    assert BATCHES["savings-interest"].noun == "account"
    times = {entry.name: entry.cron for entry in SCHEDULE}
    assert times["savings-interest"] == "10 22 * * *"  # 01:10 in Kenya
    assert "savings-interest" in JOBS


def test_periods_are_calendar_months_quarters_and_years() -> None:
    assert period_of(date(2028, 2, 10), "monthly") == (date(2028, 2, 1), date(2028, 2, 29))
    assert period_of(date(2026, 5, 31), "quarterly") == (date(2026, 4, 1), date(2026, 6, 30))
    assert period_of(date(2026, 12, 31), "quarterly") == (date(2026, 10, 1), date(2026, 12, 31))
    assert period_of(date(2026, 7, 4), "yearly") == (date(2026, 1, 1), date(2026, 12, 31))
    assert [end for _, end in periods_between(date(2026, 1, 20), date(2026, 3, 31), "monthly")] == [
        date(2026, 1, 31),
        date(2026, 2, 28),
        date(2026, 3, 31),
    ]


def test_a_month_of_deposits_and_a_withdrawal_earns_to_the_cent_net_of_tax(app: Flask) -> None:
    first, second = make_member(), make_member()
    a, b = _savings(first), _savings(second)
    moves_a = [
        ("2026-01-03", "10000"),
        ("2026-01-10", "2500.50"),
        ("2026-01-17", "-4000"),  # a withdrawal
        ("2026-01-25", "777.77"),
        ("2026-01-31", "50000"),  # the last day counts for one day
        ("2026-02-01", "100000"),  # the next month: not January's
    ]
    moves_b = [("2026-01-01", "33333.33"), ("2026-01-19", "-1234.56")]
    for on, amount in moves_a:
        _move(a, amount, date.fromisoformat(on))
    for on, amount in moves_b:
        _move(b, amount, date.fromisoformat(on))

    # On 31 January the month is not over: nothing yet.
    assert _run(date(2026, 1, 31)).records_updated == 0
    assert _postings() == []
    before_a, before_b = _balance(a), _balance(b)

    stats = _run(date(2026, 2, 1))

    assert (stats.records_scanned, stats.records_updated) == (2, 2)
    rate = D("3")
    start, end = date(2026, 1, 1), date(2026, 1, 31)
    gross_a = expected_interest(_plain(moves_a), start, end, rate)
    gross_b = expected_interest(_plain(moves_b), start, end, rate)
    assert (gross_a, gross_b) == (D("27.98"), D("83.61"))  # what the plain loop says
    pa, pb = _postings()
    for posting, gross, account_id in ((pa, gross_a, a), (pb, gross_b, b)):
        tax = round_money(gross * WHT / 100)
        assert posting.account_id == account_id
        assert (posting.period_start, posting.period_end) == (start, end)
        assert (posting.gross, posting.tax, posting.net) == (gross, tax, gross - tax)
    assert pa.balance_days == D("340455.39")  # sum of the 31 closing balances
    # The net is on each account; both in one entry dated the month's last day.
    assert _balance(a) == before_a + pa.net
    assert _balance(b) == before_b + pb.net
    assert pa.entry_id is not None and pa.entry_id == pb.entry_id
    entry = db.session.get(JournalEntry, pa.entry_id)
    assert entry is not None
    assert (entry.kind, entry.value_date) == ("savings_interest", end)
    assert _moved("GL-INTEREST-EXPENSE") == gross_a + gross_b
    assert -_moved("GL-WHT-PAYABLE") == pa.tax + pb.tax


def test_deposits_earn_quarterly_when_the_sacco_sets_a_rate_on_them(app: Flask) -> None:
    member = make_member()
    product = account_product("DEP")
    product.interest_rate, product.interest_period = D("6.5"), "quarterly"
    db.session.commit()
    moves = [
        ("2026-01-15", "20000"),
        ("2026-02-28", "5000"),
        ("2026-03-31", "7000"),
        ("2026-04-01", "9000"),  # the next quarter
    ]
    for n, (on, amount) in enumerate(moves):
        member_deposit(
            member_id=member.id, amount=amount, reference=f"Q{n}", value_date=date.fromisoformat(on)
        )
    deposits = db.session.scalar(
        select(Account.id).where(Account.member_id == member.id, Account.kind == "savings")
    )
    assert deposits is not None

    assert _run(date(2026, 3, 31)).records_scanned == 0  # the quarter is not over
    stats = _run(date(2026, 4, 1))

    assert stats.records_updated == 1
    [posting] = _postings(deposits)
    gross = expected_interest(_plain(moves), date(2026, 1, 1), date(2026, 3, 31), D("6.5"))
    assert gross == D("300.42")
    assert (posting.period_start, posting.period_end) == (date(2026, 1, 1), date(2026, 3, 31))
    assert (posting.gross, posting.tax) == (gross, round_money(gross * WHT / 100))
    assert _moved("GL-INTEREST-EXPENSE") == gross
    assert -_moved("GL-WHT-PAYABLE") == posting.tax


def test_missed_nights_and_replays_post_each_period_once_with_interest_on_interest(
    app: Flask,
) -> None:
    early, late = make_member(), make_member()
    a, b = _savings(early), _savings(late)
    moves_a = [("2026-01-05", "120000"), ("2026-02-20", "-30000")]
    moves_b = [("2026-02-10", "45000.40")]
    for on, amount in moves_a:
        _move(a, amount, date.fromisoformat(on))
    _run(date(2026, 2, 1))  # January, for the only account then
    for on, amount in moves_b:
        _move(b, amount, date.fromisoformat(on))
    entries_before = db.session.scalar(select(func.count()).select_from(JournalEntry))

    # Nobody ran the job in February or March: the run of 1 April posts both months.
    stats = _run(date(2026, 4, 1))
    assert (stats.records_scanned, stats.records_updated) == (2, 2)
    # One entry a period end: February's and March's, each for both accounts.
    entries = db.session.scalar(select(func.count()).select_from(JournalEntry))
    assert entries == entries_before + 2

    for account_id, moves, months in (
        (a, _plain(moves_a), [1, 2, 3]),
        (b, _plain(moves_b), [2, 3]),
    ):
        postings = _postings(account_id)
        assert [p.period_start.month for p in postings] == months
        for posting in postings:
            # The interest credited at a month's end earns in the months after.
            gross = expected_interest(moves, posting.period_start, posting.period_end, D("3"))
            assert posting.gross == gross
            moves = [*moves, (posting.period_end, posting.net)]
    tax_total = sum((p.tax for p in _postings()), ZERO)
    assert -_moved("GL-WHT-PAYABLE") == tax_total
    assert _moved("GL-INTEREST-EXPENSE") == sum((p.gross for p in _postings()), ZERO)

    # A rerun, and a replay for an earlier day: nothing is missing, nothing is paid twice.
    balances = (_balance(a), _balance(b))
    assert _run(date(2026, 4, 1)).records_scanned == 0
    assert _run(date(2026, 3, 1)).records_scanned == 0
    assert _run(date(2026, 2, 1)).records_scanned == 0
    assert (_balance(a), _balance(b)) == balances
    assert len(_postings()) == 5
    assert db.session.scalar(select(func.count()).select_from(JournalEntry)) == entries


def test_a_replay_for_an_earlier_day_fills_in_only_the_period_missing(app: Flask) -> None:
    member = make_member()
    account = _savings(member)
    _move(account, "80000", date(2026, 1, 2))
    _run(date(2026, 4, 1))  # January to March
    # A deposit keyed to January arrives late, on a new account of another member.
    other = _savings(make_member())
    _move(other, "15000", date(2026, 1, 20))

    stats = _run(date(2026, 2, 1))  # replayed for 1 February: the other's January only

    assert (stats.records_scanned, stats.records_updated) == (1, 1)
    assert [p.period_end for p in _postings(other)] == [date(2026, 1, 31)]
    assert len(_postings(account)) == 3
    [january] = _postings(other)
    assert january.gross == expected_interest(
        [(date(2026, 1, 20), D("15000"))], date(2026, 1, 1), date(2026, 1, 31), D("3")
    )
    # Then the night of 1 April: the other's February and March, nothing of the first's.
    assert _run(date(2026, 4, 1)).records_updated == 1
    assert [p.period_end.month for p in _postings(other)] == [1, 2, 3]
    assert len(_postings(account)) == 3


def test_a_balance_emptied_mid_month_earns_for_its_days_and_then_a_period_of_zeros(
    app: Flask,
) -> None:
    account = _savings(make_member())
    moves = [("2026-01-01", "60000"), ("2026-01-15", "-60000")]
    for on, amount in moves:
        _move(account, amount, date.fromisoformat(on))

    _run(date(2026, 2, 1))

    [january] = _postings(account)
    gross = expected_interest(_plain(moves), date(2026, 1, 1), date(2026, 1, 31), D("3"))
    assert gross == round_money(D("60000") * 14 * 3 / 100 / 365) == D("69.04")
    assert (january.gross, january.net) == (gross, gross - round_money(gross * WHT / 100))
    assert _balance(account) == january.net
    _move(account, str(-january.net), date(2026, 2, 1))  # the interest taken out too

    _run(date(2026, 3, 1))

    # February held nothing: recorded as done, with zeros and no entry.
    [_, february] = _postings(account)
    assert (february.balance_days, february.gross, february.tax, february.net) == (0, 0, 0, 0)
    assert february.entry_id is None
    assert _balance(account) == 0
    assert _run(date(2026, 3, 1)).records_scanned == 0


def test_a_rate_switched_on_by_staff_does_not_pay_the_periods_before(app: Flask) -> None:
    member = make_member()
    member_deposit(member_id=member.id, amount="50000", reference="D1", value_date=date(2026, 1, 3))
    product = account_product("DEP")
    db.session.commit()
    product_update(
        product_id=product.id, actor="staff:a@b.c", interest_rate=D("8"), interest_period="monthly"
    )

    stats = _run(business_today())

    # Every month since January ended before the day the rate was set: none earns it.
    assert stats.records_updated == 0
    assert _postings() == []
    assert _moved("GL-INTEREST-EXPENSE") == 0


def test_runs_from_the_command_line_and_the_statement_shows_the_net(
    app: Flask, runner: FlaskCliRunner
) -> None:
    member = make_member()
    member_id = member.id
    account = _savings(member)
    _move(account, "36500", date(2026, 5, 1))

    result = runner.invoke(args=["jobs", "run", "savings-interest", "--as-of-date", "2026-06-01"])

    assert result.exit_code == 0, result.output
    [posting] = _postings(account)
    # 36,500 for 31 days at 3%: 3 shillings a day.
    assert (posting.period_end, posting.gross, posting.tax, posting.net) == (
        date(2026, 5, 31),
        D("93.00"),
        D("13.95"),
        D("79.05"),
    )
    statement = member_statement_range(
        member_id=member_id, start=date(2026, 5, 1), end=date(2026, 5, 31)
    )
    moved = [m for section in statement.sections for m in section.movements]
    [interest] = [m for m in moved if m.kind == "savings_interest"]
    assert (interest.value_date, interest.credit) == (date(2026, 5, 31), D("79.05"))
    assert interest.description == "Interest to 2026-05-31, net of withholding tax"


def test_an_account_that_fails_is_one_error_and_its_chunk_neighbours_are_paid(
    app: Flask,
) -> None:
    good = _savings(make_member())
    # Bad data: a savings account of the product that belongs to no member (an interest
    # posting needs one). It fails alone; the chunk is redone account by account.
    orphan = Account(
        code="ORD-ORPHAN",
        kind="member_savings",
        name="Ordinary savings (no member)",
        product_id=account_product("ORD").id,
    )
    db.session.add(orphan)
    db.session.commit()
    orphan_id = orphan.id
    _move(good, "10000", date(2026, 1, 2))
    _move(orphan_id, "10000", date(2026, 1, 2))

    stats = JobStats()
    JOBS["savings-interest"](as_of=date(2026, 2, 1), stats=stats)

    assert (stats.records_scanned, stats.records_updated) == (2, 1)
    [error] = stats.errors
    assert error.startswith(f"account {orphan_id}: IntegrityError")
    assert [p.account_id for p in _postings()] == [good]
    assert _balance(orphan_id) == D("10000")


def test_two_runs_racing_on_the_same_accounts_pay_each_period_once(app: Flask, pg: None) -> None:
    accounts = [_savings(make_member()) for _ in range(3)]
    for n, account_id in enumerate(accounts):
        _move(account_id, str(20000 + n * 1000), date(2026, 1, 10))
    held, release = threading.Event(), threading.Event()

    def first() -> int:
        credited = interest_post(accounts, as_of=date(2026, 2, 1))
        held.set()
        release.wait(10)  # holds the accounts' locks until the second run waits on them
        db.session.commit()
        return credited

    def second() -> int:
        credited = interest_post(accounts, as_of=date(2026, 2, 1))
        db.session.commit()
        return credited

    one, two = holder_then_waiter(app, first, held, second, timeout=10)
    release.set()

    assert (one.outcome(), two.outcome()) == (3, 0)
    postings = _postings()
    assert len(postings) == 3
    for n, (posting, account_id) in enumerate(zip(postings, accounts, strict=True)):
        assert posting.account_id == account_id
        assert _balance(account_id) == 20000 + n * 1000 + posting.net


def test_a_product_moved_from_monthly_to_quarterly_pays_no_day_twice(app: Flask) -> None:
    account = _savings(make_member())
    moves = [("2026-01-10", "73000"), ("2026-05-20", "10000")]
    for on, amount in moves:
        _move(account, amount, date.fromisoformat(on))
    _run(date(2026, 5, 1))  # January to April, monthly
    product = account_product("ORD")
    product.interest_period = "quarterly"
    db.session.commit()

    _run(date(2026, 7, 1))

    postings = _postings(account)
    assert [(p.period_start, p.period_end) for p in postings][-2:] == [
        (date(2026, 4, 1), date(2026, 4, 30)),
        (date(2026, 5, 1), date(2026, 6, 30)),  # the quarter, from where the months stopped
    ]
    paid = _plain(moves) + [(p.period_end, p.net) for p in postings[:-1]]
    assert postings[-1].gross == expected_interest(paid, date(2026, 5, 1), date(2026, 6, 30), D(3))
    # And back to monthly: the months inside the quarter paid are not paid again.
    product.interest_period = "monthly"
    db.session.commit()
    assert _run(date(2026, 7, 1)).records_updated == 0
    assert len(_postings(account)) == 5


def test_a_product_form_sent_back_with_the_same_rate_moves_nothing(app: Flask) -> None:
    account = _savings(make_member())
    _move(account, "50000", date(2026, 1, 3))
    product = account_product("ORD")
    db.session.commit()
    # The console sends every term back: the rate as typed, "3", is the 3.0000 stored.
    product_update(
        product_id=product.id,
        actor="staff:a@b.c",
        interest_rate=D("3"),
        interest_period="monthly",
        withdrawal_fee=D("35"),
    )

    _run(date(2026, 3, 1))

    assert [p.period_end.month for p in _postings(account)] == [1, 2]


def _changed_on(day: date, code: str, **values: object) -> None:
    """Staff changed the product on `day` (noon in Nairobi): its terms, and the audit row
    product_update writes (the log is append-only, so a past change is written as one)."""
    product = account_product(code)
    before = {name: str(getattr(product, name)) for name in values}
    for name, value in values.items():
        setattr(product, name, value)
    db.session.add(
        AuditLog(
            at=datetime.combine(day, time(12), tzinfo=ZoneInfo("Africa/Nairobi")),
            actor="staff:a@b.c",
            action="account_product.update",
            object_type="account_product",
            object_id=code,
            before=before,
            after={name: str(value) for name, value in values.items()},
        )
    )
    db.session.commit()


@pytest.mark.parametrize(
    "changes",
    [
        ({"interest_period": "monthly"}, {"interest_rate": D("10")}),
        ({"interest_rate": D("10")}, {"interest_period": "monthly"}),
    ],
    ids=["rate last", "period last"],
)
def test_the_periods_that_earn_start_from_the_month_of_the_last_rate_or_period_change(
    app: Flask, changes: tuple[dict, dict]
) -> None:
    """Deposits get a period on 10 February and a rate on 10 March, or the other way
    round: either change alone counts, the last one decides, and it falls in March, so
    March is the first month paid. A later change to the fixed-deposit product's rate
    touches no savings run. (Mutation testing, issue 23.)"""
    member = make_member()
    member_deposit(member_id=member.id, amount="36500", reference="D1", value_date=date(2026, 1, 3))
    first, last = changes
    _changed_on(date(2026, 2, 10), "DEP", **first)
    _changed_on(date(2026, 3, 10), "DEP", **last)
    _changed_on(date(2026, 3, 20), "FIX", interest_rate=D("9"))

    _run(date(2026, 5, 1))

    assert [(p.period_start, p.period_end) for p in _postings()] == [
        (date(2026, 3, 1), date(2026, 3, 31)),
        (date(2026, 4, 1), date(2026, 4, 30)),
    ]
    # 36,500 at 10% is 10 shillings a day: March's 31 days.
    assert _postings()[0].gross == D("310.00")


def test_an_account_closed_after_the_scan_or_never_moved_is_skipped_and_the_rest_paid(
    app: Flask,
) -> None:
    """A chunk may be given an account that closed after the night's scan (emptied and
    closed the same day) or one that never moved: neither stops the others being paid.
    (Mutation testing, issue 23.)"""
    from app.services.ledger import account_close

    closing = _savings(make_member())
    _move(closing, "36500", date(2026, 1, 1))
    _move(closing, "-36500", date(2026, 1, 20))
    never = _savings(make_member())
    paid = _savings(make_member())
    _move(paid, "36500", date(2026, 1, 1))
    account_close(account_id=closing, actor="staff:test")

    assert interest_post([never, closing, paid], as_of=date(2026, 2, 1)) == 1
    assert [p.account_id for p in _postings()] == [paid]
    assert _postings()[0].gross == D("93.00")  # 3 shillings a day for 31 days


def test_accounts_of_one_chunk_at_different_points_each_earn_on_their_own_moves(
    app: Flask,
) -> None:
    """One chunk, two accounts: one never paid, one paid for January already, both paid
    into on the same day. Each earns on its own movements only, and the second's February
    starts from everything it held (and earned) before February. (Mutation testing,
    issue 23.)"""
    behind = _savings(make_member())
    ahead = _savings(make_member())
    _move(behind, "36500", date(2026, 1, 1))
    _move(ahead, "73000", date(2026, 1, 1))
    assert interest_post([ahead], as_of=date(2026, 2, 1)) == 1
    db.session.commit()
    _move(ahead, "36500", date(2026, 2, 10))

    assert interest_post([behind, ahead], as_of=date(2026, 3, 1)) == 2
    db.session.commit()

    rate = D(3)
    assert [(p.period_end, p.gross) for p in _postings(behind)] == [
        (date(2026, 1, 31), D("93.00")),  # 3 shillings a day
        (
            date(2026, 2, 28),
            expected_interest(
                [(date(2026, 1, 1), D(36500)), (date(2026, 1, 31), _postings(behind)[0].net)],
                date(2026, 2, 1),
                date(2026, 2, 28),
                rate,
            ),
        ),
    ]
    january, february = _postings(ahead)
    assert january.gross == D("186.00")  # 6 shillings a day
    moves = [
        (date(2026, 1, 1), D(73000)),
        (date(2026, 1, 31), january.net),
        (date(2026, 2, 10), D(36500)),
    ]
    assert february.gross == expected_interest(moves, date(2026, 2, 1), date(2026, 2, 28), rate)


def test_interest_of_a_few_cents_is_paid_with_its_tax_and_a_rate_of_zero_records_nothing(
    app: Flask,
) -> None:
    """Cents are money: 0.25 is paid less its 0.04 of tax, 0.03 whole (its tax rounds to
    nothing), and a rate under 1% earns. A product at 0% with a period earns nothing and
    records nothing. (Mutation testing, issue 23.)"""
    _changed_on(date(2025, 1, 1), "DEP", interest_rate=D("0.5"), interest_period="monthly")
    _changed_on(date(2025, 1, 1), "TGT", interest_rate=D("0"))
    small = _savings(make_member())
    _move(small, "100", date(2026, 1, 1))  # 100 x 3% x 31 / 365 = 0.25
    tiny = _savings(make_member())
    _move(tiny, "12", date(2026, 1, 1))  # 0.03
    member = make_member()
    member_deposit(member_id=member.id, amount="36500", reference="D1", value_date=date(2026, 1, 1))
    target = member_product_account(member, account_product("TGT")).id
    db.session.commit()
    _move(target, "50000", date(2026, 1, 1))

    stats = _run(date(2026, 2, 1))

    deposits = db.session.scalar(
        select(Account.id).where(Account.code == f"SAV-{member.member_no}")
    )
    assert {p.account_id: (p.gross, p.tax, p.net) for p in _postings()} == {
        small: (D("0.25"), D("0.04"), D("0.21")),
        tiny: (D("0.03"), D("0.00"), D("0.03")),
        # Half a shilling a day; its tax of 2.325 rounds half to even (app.money).
        deposits: (D("15.50"), D("2.32"), D("13.18")),
    }
    assert stats.records_updated == 3
    assert (_balance(small), _balance(tiny), _balance(target)) == (
        D("100.21"),
        D("12.03"),
        D("50000"),
    )
    assert _run(date(2026, 2, 1)).records_updated == 0


@pytest.mark.parametrize(("amount", "tax"), [("12", "0.00"), ("100", "0.03")])
def test_a_period_whose_whole_tax_is_under_a_shilling_or_none_is_paid_and_balances(
    app: Flask, amount: str, tax: str
) -> None:
    """The night's entry carries a tax line only when there is tax, however little; a
    night that only records periods of zeros credits no one. (Mutation testing,
    issue 23.)"""
    emptied = _savings(make_member())
    _move(emptied, "500", date(2026, 1, 1))
    _move(emptied, "-500", date(2026, 1, 1))
    assert _run(date(2026, 2, 1)).records_updated == 0
    account = _savings(make_member())
    _move(account, amount, date(2026, 2, 1))

    assert _run(date(2026, 3, 1)).records_updated == 1

    [posting] = _postings(account)
    assert posting.tax == D(tax) and posting.net > 0
    assert -_moved("GL-WHT-PAYABLE") == D(tax)


def test_money_first_paid_in_on_a_period_s_last_day_earns_that_day_the_next_night(
    app: Flask,
) -> None:
    """(Mutation testing, issue 23.)"""
    account = _savings(make_member())
    _move(account, "36500", date(2026, 1, 31))

    assert _run(date(2026, 2, 1)).records_updated == 1

    assert [(p.period_end, p.gross) for p in _postings(account)] == [
        (date(2026, 1, 31), D("3.00"))  # one day at 3 shillings
    ]


def test_the_night_s_scan_leaves_closed_accounts_out(app: Flask) -> None:
    """A closed account earns nothing more: the scan never hands it to a chunk, so the
    run does not count it as scanned. (Mutation testing, issue 23.)"""
    from app.services.ledger import account_close

    closed = _savings(make_member())
    _move(closed, "36500", date(2026, 1, 1))
    _move(closed, "-36500", date(2026, 1, 20))
    account_close(account_id=closed, actor="staff:test")
    db.session.commit()
    kept = _savings(make_member())
    _move(kept, "36500", date(2026, 1, 1))

    assert interest_due_ids(date(2026, 2, 1)) == [kept]
    assert (_run(date(2026, 2, 1)).records_scanned, len(_postings(closed))) == (1, 0)


def test_one_run_over_two_periods_keeps_each_movement_in_its_own_period(app: Flask) -> None:
    """Missed nights: one run posts January (one movement) and February (two). February's
    money earns from its own days only, on January's interest too. (Mutation testing,
    issue 23.)"""
    account = _savings(make_member())
    moves = _plain([("2026-01-05", "36500"), ("2026-02-10", "36500"), ("2026-02-20", "-10000")])
    for on, amount in moves:
        _move(account, str(amount), on)

    assert _run(date(2026, 3, 1)).records_updated == 1

    january, february = _postings(account)
    assert january.gross == expected_interest(moves, date(2026, 1, 1), date(2026, 1, 31), D(3))
    assert january.gross == D("81.00")  # 3 shillings a day from the 5th
    moves.append((january.period_end, january.net))
    assert february.gross == expected_interest(moves, date(2026, 2, 1), date(2026, 2, 28), D(3))


def test_while_the_night_s_interest_posts_rows_that_only_refer_to_an_account_never_wait(
    app: Flask, pg: None
) -> None:
    """The run locks its accounts as the posting does (FOR NO KEY UPDATE), not FOR UPDATE:
    a row that only refers to an account (a withdrawal request, a standing order: its
    foreign key takes KEY SHARE) is written meanwhile instead of queueing behind the
    whole chunk. (Mutation testing, issue 23.)"""
    account_id = _savings(make_member())
    _move(account_id, "36500", date(2026, 1, 1))
    held, release = threading.Event(), threading.Event()

    def run() -> int:
        credited = interest_post([account_id], as_of=date(2026, 2, 1))
        held.set()
        release.wait(10)
        db.session.commit()
        return credited

    worker = Worker(app, run)
    worker.start()
    try:
        assert held.wait(10)
        assert_not_held("accounts", account_id, "KEY SHARE")  # refused under FOR UPDATE
    finally:
        release.set()
    assert worker.outcome() == 1


def test_a_chunk_locks_its_accounts_in_id_order(app: Flask, pg: None) -> None:
    """Two lockers of the same accounts never deadlock: while the chunk waits for a lower
    account, it holds no higher one. The lower account's row is written last, so a scan in
    table order would meet the higher one first. (Mutation testing, issue 23.)"""
    low, high = (_savings(make_member()) for _ in range(2))
    _move(high, "36500", date(2026, 1, 1))
    _move(low, "36500", date(2026, 1, 1))  # the low row's new version is the table's last

    def chunk() -> int:
        credited = interest_post([high, low], as_of=date(2026, 2, 1))
        db.session.commit()
        return credited

    with row_locked(app, "accounts", low):
        job = Worker(app, chunk)
        job.start()
        wait_until_blocked()
        assert_not_held("accounts", high)  # the waiting chunk holds no higher account
    assert job.outcome() == 2


def test_a_month_of_daily_movements_earns_the_same_when_the_database_hashes_its_groups(
    app: Flask, pg: None
) -> None:
    """On a large journal PostgreSQL sums each day's movements with a hash, whose rows come
    in no order of their own: the run must still walk each account's days in date order.
    `enable_sort = off` gives this small journal the plan a large one gets. (Mutation
    testing, issue 23.)"""
    account = _savings(make_member())
    moves = [
        (date(2026, 2, day), D(1000 + day * 7) if day % 3 else D(-500)) for day in range(1, 29)
    ]
    for on, amount in moves:
        _move(account, str(amount), on)

    db.session.execute(text("SET LOCAL enable_sort = off"))  # this transaction only
    assert interest_post([account], as_of=date(2026, 3, 1)) == 1
    db.session.commit()

    (february,) = _postings(account)
    assert february.gross == expected_interest(moves, date(2026, 2, 1), date(2026, 2, 28), D(3))
