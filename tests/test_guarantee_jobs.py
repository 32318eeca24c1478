"""The nightly guarantee jobs: requests not answered in time expire and the applicant is
told once; guarantors of a loan in default are told once, with what their deposits hold
for it. Both are close-of-business batches a rerun (or a second scheduler) adds nothing
to."""

from __future__ import annotations

import json
import threading
from datetime import date, timedelta
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import select, text

from app.extensions import db
from app.models import AuditLog, BatchPartition, Guarantee, Loan, LoanProduct, Member
from app.selectors.guarantees import guarantees_held
from app.services.guarantees import GuaranteeError, guarantee_accept, guarantee_request
from app.services.guarantees.jobs import guarantees_expire, guarantors_notify
from app.services.guarantees.recovery import guarantee_substitute_request
from app.services.loans import loan_apply, loan_approve, loan_disburse, loan_repay
from tests.factories import make_member
from tests.helpers import Worker, sent_sms, settings_change, wait_until_blocked
from tests.loan_factories import make_borrower, make_product, make_staff, reload, run_job
from workers.runner import JobStats
from workers.schedule import BATCHES, JOBS

D = Decimal
ASKED = date(2026, 3, 2)  # 7 days to answer: the last day is 9 March


def _product(**overrides: object) -> LoanProduct:
    rule = dict(code="SEC", name="Development", min_guarantors=2, guarantee_cover=D("100"))
    return make_product("V1", **{**rule, **overrides})


def _apply(product: LoanProduct, on: date = ASKED) -> Loan:
    borrower = make_borrower(savings=10000)
    return loan_apply(member_id=borrower.id, product_id=product.id, amount=25000, as_of=on)


def _ask(loan: Loan, guarantor: Member, amount: int, on: date = ASKED) -> int:
    return guarantee_request(
        loan_id=loan.id, guarantor_id=guarantor.id, amount=amount, actor="member:test", today=on
    ).id


def _texts(template: str) -> list[tuple[int | None, str, str]]:
    return [(m.member_id, m.idempotency_key, m.body) for m in sent_sms(template)]


def _run(name: str, as_of: date) -> JobStats:
    stats = JobStats()
    JOBS[name](as_of=as_of, stats=stats)
    return stats


def test_both_jobs_are_close_of_business_batches() -> None:
    assert BATCHES["guarantee-expiry"].noun == "guarantee"
    assert BATCHES["guarantor-notices"].name == "guarantor-notices"


def test_requests_past_their_day_expire_once_and_the_applicant_is_told_once(
    app: Flask, runner: FlaskCliRunner
) -> None:
    product = _product()
    loan = _apply(product)
    loan_no, applicant_id = loan.loan_no, loan.member_id
    silent = make_borrower(savings=20000)
    masked = f"{silent.name.split()[0][0]}*** "  # the CLI run ends the session
    answered = make_borrower(savings=20000)
    waited = _ask(loan, silent, 10000)
    accepted = _ask(loan, answered, 5000)
    guarantee_accept(guarantee_id=accepted, guarantor_id=answered.id, via="ussd", today=ASKED)
    later = _ask(_apply(product), make_borrower(savings=20000), 5000, on=ASKED + timedelta(days=3))

    # The last day to answer is not past yet: nothing expires.
    assert _run("guarantee-expiry", ASKED + timedelta(days=7)).records_updated == 0
    assert _texts("guarantee_expired") == []

    result = runner.invoke(args=["jobs", "run", "guarantee-expiry", "--as-of-date", "2026-03-10"])
    assert result.exit_code == 0, result.output

    db.session.expire_all()
    statuses = {
        g.id: (g.status, g.ended_at is not None) for g in db.session.scalars(select(Guarantee))
    }
    assert statuses == {
        waited: ("expired", True),
        accepted: ("accepted", False),
        later: ("requested", False),
    }
    [(member_id, key, body)] = _texts("guarantee_expired")
    assert (member_id, key) == (applicant_id, f"guarantee-expired:{waited}")
    assert body.startswith(masked)
    assert f"did not answer your request to guarantee loan {loan_no}" in body
    [audit] = db.session.scalars(select(AuditLog).where(AuditLog.action == "guarantee.expire"))
    assert (audit.actor, audit.object_id) == ("system", loan_no)
    assert audit.before == {"guarantee": waited, "status": "requested"}
    assert audit.after == {"status": "expired", "expires_on": "2026-03-09"}

    # Rerun the same day, then a later one: nothing more to expire, nobody texted twice.
    again = _run("guarantee-expiry", date(2026, 3, 10))
    assert (again.records_scanned, again.records_updated, again.notifications_sent) == (0, 0, 0)
    run_job("guarantee-expiry", date(2026, 3, 13))  # the later one's day was the 12th
    assert [key for _, key, _ in _texts("guarantee_expired")] == [
        f"guarantee-expired:{waited}",
        f"guarantee-expired:{later}",
    ]


def test_expiry_in_chunks_of_one_expires_each_request_once(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_change(app, monkeypatch, COB_CHUNK_SIZE=1)
    product = _product()
    asked = [_ask(_apply(product), make_borrower(savings=20000), 4000) for _ in range(3)]

    stats = _run("guarantee-expiry", date(2026, 3, 20))

    assert (stats.records_scanned, stats.records_updated, stats.notifications_sent) == (3, 3, 3)
    assert stats.errors == []
    assert sorted(key for _, key, _ in _texts("guarantee_expired")) == sorted(
        f"guarantee-expired:{gid}" for gid in asked
    )


def test_a_request_may_be_answered_all_of_its_last_day(app: Flask) -> None:
    waiting = _ask(_apply(_product()), make_borrower(savings=20000), 4000)  # last day 9 March

    on_the_day = _run("guarantee-expiry", date(2026, 3, 9))
    assert (on_the_day.records_scanned, on_the_day.records_updated) == (0, 0)
    assert db.session.get(Guarantee, waiting).status == "requested"
    the_day_after = _run("guarantee-expiry", date(2026, 3, 10))
    assert (the_day_after.records_scanned, the_day_after.records_updated) == (1, 1)
    db.session.expire_all()
    assert db.session.get(Guarantee, waiting).status == "expired"


def test_expiry_leaves_a_request_answered_or_still_in_time_alone(app: Flask) -> None:
    """The scan's ids are only candidates: by the time their chunk runs one may have been
    answered, and the chunk's own reading of the rows is what decides."""
    product = _product()
    loan = _apply(product)
    late, answered, in_time, other = (make_borrower(savings=20000) for _ in range(4))
    late_id = _ask(loan, late, 4000)
    answered_id = _ask(loan, answered, 4000)
    guarantee_accept(guarantee_id=answered_id, guarantor_id=answered.id, via="ussd", today=ASKED)
    in_time_id = _ask(loan, in_time, 4000, on=date(2026, 3, 3))  # its last day: 10 March
    # Past its day too, but another chunk's: this one touches only the ids it was handed.
    other_id = _ask(loan, other, 4000)
    assert guarantees_expire([answered_id, in_time_id], as_of=date(2026, 3, 10)) == 0

    assert guarantees_expire([late_id, answered_id, in_time_id], as_of=date(2026, 3, 10)) == 1
    db.session.commit()

    statuses = dict(db.session.execute(select(Guarantee.id, Guarantee.status)).all())
    assert statuses == {
        late_id: "expired",
        answered_id: "accepted",
        in_time_id: "requested",
        other_id: "requested",
    }
    assert [key for _, key, _ in _texts("guarantee_expired")] == [f"guarantee-expired:{late_id}"]
    [audit] = db.session.scalars(select(AuditLog).where(AuditLog.action == "guarantee.expire"))
    assert (audit.actor, audit.object_type, audit.object_id) == ("system", "loan", loan.loan_no)
    assert audit.before == {"guarantee": late_id, "status": "requested"}
    assert audit.after == {"status": "expired", "expires_on": "2026-03-09"}


def _guaranteed_loan_in_default(code: str = "SEC") -> tuple[int, list[int]]:
    """25,000 lent on 1 January against 10,000 of the borrower's deposits, guaranteed
    10,000 and 5,000 (the second guarantor reads Kiswahili), never repaid: in default by
    April. A second guaranteed loan, repaid on time, is not."""
    product = _product(code=code, default_threshold_days=30)
    day = date(2026, 1, 1)
    manager = make_staff("branch_manager")
    guarantors = [make_borrower(savings=20000), make_member(savings=20000, language="sw")]
    ids = [guarantor.id for guarantor in guarantors]  # the jobs end the session
    loans = []
    for _ in range(2):
        loan = _apply(product, on=day)
        for guarantor, amount in zip(guarantors, (10000, 5000), strict=True):
            gid = _ask(loan, guarantor, amount, on=day)
            guarantee_accept(guarantee_id=gid, guarantor_id=guarantor.id, via="sms", today=day)
        loan_approve(loan_id=loan.id, staff=manager)
        loan_disburse(loan_id=loan.id, reference=f"B2CG{loan.id:05d}", value_date=day)
        loans.append(loan.id)
    for month in (2, 3):
        loan_repay(
            loan_id=loans[1],
            amount="2300",
            reference=f"PAY{loans[1]}-{month}",
            value_date=date(2026, month, 1),
        )
    run_job("loan-arrears", date(2026, 4, 1))
    assert reload(loans[0]).in_default
    assert not reload(loans[1]).in_default
    return loans[0], ids


def test_each_guarantor_of_a_loan_in_default_is_told_once_with_their_exposure(
    app: Flask,
) -> None:
    loan_id, (first, second) = _guaranteed_loan_in_default()
    loan = reload(loan_id)
    loan_no, borrower = loan.loan_no, loan.member.name
    gids = dict(
        db.session.execute(
            select(Guarantee.guarantor_id, Guarantee.id).where(Guarantee.loan_id == loan_id)
        ).all()
    )

    stats = _run("guarantor-notices", date(2026, 4, 1))

    assert (stats.records_scanned, stats.records_updated, stats.notifications_sent) == (1, 2, 2)
    assert stats.errors == []
    assert _texts("guarantor_default") == [
        (
            first,
            f"guarantor-default:{gids[first]}",
            f"Loan {loan_no} of {borrower}, which you guarantee, is in default. KES 10,000.00 "
            "of your deposits is held for it and may be recovered. Call the SACCO office.",
        ),
        (
            second,
            f"guarantor-default:{gids[second]}",
            f"Mkopo {loan_no} wa {borrower} unaoudhamini umeshindwa kulipwa. KES 5,000.00 ya "
            "akiba yako imeshikiliwa kwa ajili yake na inaweza kukatwa. Piga simu ofisini.",
        ),
    ]

    # The next nights (and a rerun) find nobody left to tell, even a chunk handed the
    # loan by a scan that ran before the texts were queued.
    assert guarantors_notify([loan_id]) == 0
    run_job("guarantor-notices", date(2026, 4, 1))
    later = _run("guarantor-notices", date(2026, 4, 2))
    assert (later.records_scanned, later.notifications_sent) == (0, 0)
    assert len(_texts("guarantor_default")) == 2


def test_notices_shared_among_workers_tell_each_guarantor_once(
    app: Flask, monkeypatch: pytest.MonkeyPatch, runner: FlaskCliRunner
) -> None:
    """More loans in default than a chunk holds, run by a `sacco worker` process: the
    partitions carry the night's date, and every guarantor is told once."""
    settings_change(app, monkeypatch, COB_CHUNK_SIZE=1)
    first, _ = _guaranteed_loan_in_default()
    second, _ = _guaranteed_loan_in_default(code="SEC2")
    db.session.remove()

    result = runner.invoke(
        args=["jobs", "run", "guarantor-notices", "--as-of-date", "2026-04-01", "--workers", "1"]
    )

    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert (line["records_scanned"], line["notifications_sent"], line["errors_count"]) == (2, 4, 0)
    parts = db.session.scalars(
        select(BatchPartition).where(BatchPartition.run_id == line["run_id"])
    ).all()
    assert [(p.as_of, p.status) for p in parts] == [(date(2026, 4, 1), "done")] * 2
    assert sorted(i for p in parts for i in p.ids) == sorted([first, second])
    keys = [key for _, key, _ in _texts("guarantor_default")]
    assert len(keys) == len(set(keys)) == 4


def test_a_notice_names_what_the_pledge_holds_after_repayments(app: Flask) -> None:
    loan_id, (first, _) = _guaranteed_loan_in_default()
    # Part of the principal comes back late: the pledge holds its share of what is owed.
    loan_repay(loan_id=loan_id, amount="2000", reference="LATE1", value_date=date(2026, 4, 1))
    run_job("loan-arrears", date(2026, 4, 1))
    assert reload(loan_id).in_default

    run_job("guarantor-notices", date(2026, 4, 1))

    [held] = [h for h in guarantees_held(first) if h.loan_id == loan_id]
    assert D("0") < held.exposure < D("10000")
    [body] = [body for member_id, _, body in _texts("guarantor_default") if member_id == first]
    assert f"KES {held.exposure:,.2f} of your deposits" in body


def test_a_member_asked_to_replace_a_guarantor_of_a_loan_in_default_is_not_told(
    app: Flask,
) -> None:
    """Only an accepted pledge holds deposits: a replacement not yet answered is nobody
    to tell, and the loan is not scanned again for it."""
    loan_id, (first, second) = _guaranteed_loan_in_default()
    run_job("guarantor-notices", date(2026, 4, 1))
    old = db.session.scalar(
        select(Guarantee.id).where(Guarantee.loan_id == loan_id, Guarantee.guarantor_id == first)
    )
    newcomer = make_borrower(savings=20000)
    guarantee_substitute_request(
        guarantee_id=old, guarantor_id=newcomer.id, by=make_staff(), today=date(2026, 4, 2)
    )

    later = _run("guarantor-notices", date(2026, 4, 2))

    assert (later.records_scanned, later.notifications_sent) == (0, 0)
    assert guarantors_notify([loan_id]) == 0
    assert [member_id for member_id, _, _ in _texts("guarantor_default")] == [first, second]


# -- an answer racing the expiry (PostgreSQL: row locks wait) --------------------------------

LAST_DAY = ASKED + timedelta(days=7)


def _race(app: Flask, answer_first: bool) -> tuple[int, object, object]:
    """A guarantor answers on the request's last day while the expiry of the day after runs:
    both wait on the request's row, held here, and go in the order given."""
    guarantor = make_borrower(savings=20000)
    gid = _ask(_apply(_product(min_guarantors=1)), guarantor, 8000)
    guarantor_id = guarantor.id
    db.session.remove()
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        db.session.execute(text("SELECT id FROM guarantees WHERE id = :g FOR UPDATE"), {"g": gid})
        locked.set()
        release.wait(20)
        db.session.commit()

    def expire() -> int:
        done = guarantees_expire([gid], as_of=LAST_DAY + timedelta(days=1))
        db.session.commit()
        return done

    def accept() -> str:
        return guarantee_accept(
            guarantee_id=gid, guarantor_id=guarantor_id, via="sms", today=LAST_DAY
        ).status

    holder = Worker(app, hold)
    holder.start()
    assert locked.wait(20)
    first, second = (accept, expire) if answer_first else (expire, accept)
    racers = [Worker(app, first), Worker(app, second)]
    racers[0].start()
    wait_until_blocked(1)
    racers[1].start()
    wait_until_blocked(2)
    release.set()
    holder.outcome()
    outcomes = []
    for racer in racers:
        try:
            outcomes.append(racer.outcome())
        except GuaranteeError as exc:
            outcomes.append(str(exc))
    by_name = dict(zip((first.__name__, second.__name__), outcomes, strict=True))
    return gid, by_name["accept"], by_name["expire"]


def test_an_answer_on_the_last_day_beats_an_expiry_waiting_behind_it(app: Flask, pg: None) -> None:
    gid, accepted, expired = _race(app, answer_first=True)
    assert (accepted, expired) == ("accepted", 0)  # the expiry re-reads it: answered
    assert db.session.get(Guarantee, gid).status == "accepted"
    assert _texts("guarantee_expired") == []


def test_an_expiry_ahead_of_the_answer_refuses_it_in_words(app: Flask, pg: None) -> None:
    gid, accepted, expired = _race(app, answer_first=False)
    assert (accepted, expired) == ("this request was expired already", 1)
    assert db.session.get(Guarantee, gid).status == "expired"
    assert len(_texts("guarantee_expired")) == 1
