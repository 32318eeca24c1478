"""Close of business in the batch shape (`app.batch`): chunks give what the per-loan rule
gives, one bad loan is one error, partitions run on real `sacco worker` processes, and a
worker killed mid-partition is taken over without charging anything twice. Every test ends
with the full reconciliation (the autouse fixture in conftest)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import event, func, select, text, update
from sqlalchemy.orm import Session, SessionTransaction

from app.batch import (
    Batch,
    ChunkStats,
    partition_claim,
    partition_work,
    partitions_create,
    worker_name,
)
from app.extensions import db
from app.models import BatchPartition, Installment, JournalEntry
from app.services.ledger import account_close
from app.services.loans import ARREARS, loan_account, loan_repay, loan_update_arrears
from tests.helpers import Worker, settings_change, wait_until_blocked
from tests.loan_factories import make_loan, make_product, receivables, reload
from workers import schedule
from workers.runner import EXIT_OK, EXIT_PARTIAL

START = date(2026, 1, 1)


def _late_loans(count: int, **product: object) -> list[int]:
    rule = dict(penalty_type="fixed", penalty_value=Decimal("50"), grace_days=3, **product)
    made = make_product("V1", **rule)
    ids = [make_loan(product=made, on=START).id for _ in range(count)]
    db.session.commit()
    return ids


def _standing(loan_id: int) -> tuple[object, ...]:
    """Everything the arrears rule decides for a loan, as the books hold it."""
    loan = reload(loan_id)
    rows = db.session.execute(
        select(Installment.number, Installment.penalty_due, Installment.last_penalty_on)
        .where(Installment.loan_id == loan_id, Installment.superseded.is_(False))
        .order_by(Installment.number)
    ).all()
    entries = db.session.scalar(
        select(func.count())
        .select_from(JournalEntry)
        .where(JournalEntry.loan_id == loan_id, JournalEntry.kind == "penalty")
    )
    return (
        loan.days_past_due,
        loan.aging_bucket,
        loan.in_default,
        [tuple(r) for r in rows],
        receivables(loan)["penalty"],
        entries,
    )


def _penalty_entries() -> int:
    return db.session.scalar(
        select(func.count()).select_from(JournalEntry).where(JournalEntry.kind == "penalty")
    )


def test_chunks_decide_exactly_what_the_per_loan_rule_decides(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twin loans (same product, amount, dates, payments): one twin of each pair is
    brought up to date by the per-loan service first, then the job runs over the whole
    book in chunks of 3. Day after day the chunked twin must stand exactly where the
    per-loan twin stands, and the job must find nothing left to change on the other."""
    settings_change(app, monkeypatch, COB_CHUNK_SIZE=3)
    products = [
        make_product(
            "V1", code="P1", penalty_type="fixed", penalty_value=Decimal("50"), grace_days=3
        ),
        make_product(
            "V1",
            code="P2",
            penalty_type="percent",
            penalty_value=Decimal("5"),
            grace_days=0,
            default_threshold_days=45,
        ),
        make_product("V1", code="P3", penalty_type="none", grace_days=7),
        make_product(
            "V1",
            code="P4",
            frequency="weekly",
            grace_days=1,
            penalty_type="fixed",
            penalty_value=Decimal("20"),
        ),
    ]
    pairs: list[tuple[int, int]] = []
    for n, product in enumerate(products):
        for on, amount in ((START, 10000), (START - timedelta(days=45), 6000 + 1000 * n)):
            twins = tuple(make_loan(product=product, on=on, amount=amount).id for _ in range(2))
            pairs.append((twins[0], twins[1]))
    db.session.commit()
    payments = {
        date(2026, 2, 20): (1, Decimal("500")),
        date(2026, 3, 15): (3, Decimal("2500")),
        date(2026, 4, 2): (5, Decimal("20000")),
    }
    for day in (
        date(2026, 2, 5),
        date(2026, 2, 20),
        date(2026, 3, 15),
        date(2026, 4, 2),
        date(2026, 5, 20),
    ):
        if day in payments:
            index, amount = payments[day]
            for loan_id in pairs[index]:
                loan_repay(
                    loan_id=loan_id,
                    amount=amount,
                    reference=f"P{loan_id}{day:%m%d}",
                    value_date=day,
                )
        for _, oracle in pairs:
            loan_update_arrears(loan_id=oracle, as_of=day)
        expected = {oracle: _standing(oracle) for _, oracle in pairs}
        db.session.remove()
        assert schedule.run_job("loan-arrears", day) == EXIT_OK
        for chunked, oracle in pairs:
            assert _standing(chunked) == expected[oracle], (day, chunked, oracle)
            assert _standing(oracle) == expected[oracle], (day, "the job changed", oracle)
    assert _penalty_entries() > 0  # the book did earn penalties: the comparison was real


def test_one_bad_loan_is_one_error_and_the_rest_of_its_chunk_is_charged(
    app: Flask, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings_change(app, monkeypatch, COB_CHUNK_SIZE=10)
    ids = _late_loans(5)
    # A closed penalty account refuses the posting: the whole chunk's bulk write fails.
    bad = reload(ids[2])
    account_close(account_id=loan_account(bad, "penalty").id, actor="test")
    db.session.commit()
    db.session.remove()

    assert schedule.run_job("loan-arrears", date(2026, 2, 10)) == EXIT_PARTIAL
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (line["status"], line["errors_count"], line["records_updated"]) == ("partial", 1, 4)
    for loan_id in ids:
        expected = Decimal("0") if loan_id == ids[2] else Decimal("50.00")
        assert receivables(reload(loan_id))["penalty"] == expected
    # The bad loan's own standing is untouched too: its work was rolled back with it.
    assert reload(ids[2]).days_past_due == 0
    assert _penalty_entries() == 4


def test_a_partition_is_claimed_by_one_worker_and_taken_over_when_its_lease_runs_out(
    app: Flask,
) -> None:
    [pid] = partitions_create("loan-arrears", "claimtest", date(2026, 2, 10), [1, 2, 3], 1)
    assert partition_claim(pid, "host:1:a") is True
    assert partition_claim(pid, "host:2:b") is False  # held, lease still running
    db.session.execute(
        update(BatchPartition)
        .where(BatchPartition.id == pid)
        .values(lease_until=datetime(2000, 1, 1, tzinfo=UTC))
    )
    db.session.commit()
    assert partition_claim(pid, "host:2:b") is True
    part = db.session.get(BatchPartition, pid)
    assert (part.status, part.worker, part.attempts) == ("running", "host:2:b", 2)


def test_a_worker_whose_partition_is_taken_over_mid_chunk_keeps_nothing_of_that_chunk(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """The chunk's work and its progress record are one transaction: a worker that finds
    its partition taken over when it records (its lease ran out while it worked) rolls the
    chunk back, and the new holder charges each loan once."""
    ids = _late_loans(2)
    as_of = date(2026, 2, 10)
    [pid] = partitions_create("loan-arrears", "takeover", as_of, ids, 1)

    def slow_chunk(chunk: list[int], day: date, stats: ChunkStats) -> None:
        # While this worker decides, another takes the partition over (as after a lease
        # that ran out), committed on a connection of its own.
        with db.engine.begin() as other:
            other.execute(
                update(BatchPartition)
                .where(BatchPartition.id == pid)
                .values(worker="host:9:b", lease_until=datetime(2000, 1, 1, tzinfo=UTC))
            )
        ARREARS.chunk(chunk, day, stats)

    slow = Batch("loan-arrears", ARREARS.scan, slow_chunk)
    assert partition_work(slow, pid, "host:1:a") is False
    assert f"partition {pid} was taken over by another worker; stopping" in caplog.messages
    assert _penalty_entries() == 0  # the charges went back with the refused record
    part = db.session.get(BatchPartition, pid, populate_existing=True)
    assert (part.worker, part.next_chunk, part.status) == ("host:9:b", 0, "running")

    assert partition_work(ARREARS, pid, "host:9:b") is True
    part = db.session.get(BatchPartition, pid, populate_existing=True)
    assert (part.status, part.next_chunk, part.records_scanned) == ("done", 1, 2)
    assert [receivables(reload(i))["penalty"] for i in ids] == [Decimal("50.00")] * 2
    assert _penalty_entries() == 2


def _partition(ids: list[int], **state: object) -> int:
    """A partition row as a run left it (`state` over a pending one: the model's defaults)."""
    terms: dict[str, object] = dict(
        run_id="resume", job="loan-arrears", as_of=date(2026, 2, 10), number=0, ids=ids
    )
    part = BatchPartition(**{**terms, **state})
    db.session.add(part)
    db.session.commit()
    return part.id


def test_a_claim_leases_the_partition_and_a_take_over_keeps_when_it_started(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_change(app, monkeypatch, COB_LEASE_SECONDS=120)
    pid = _partition([1, 2])
    assert partition_claim(pid, "host:1:a") is True
    first = db.session.get(BatchPartition, pid, populate_existing=True)
    first_started = first.started_at
    assert first_started is not None
    assert first.lease_until - first_started == timedelta(seconds=120)
    assert (first.status, first.worker, first.attempts) == ("running", "host:1:a", 1)
    # Held: another worker neither claims it nor does any of it.
    assert partition_work(ARREARS, pid, "host:2:b") is False

    db.session.execute(
        update(BatchPartition)
        .where(BatchPartition.id == pid)
        .values(lease_until=datetime(2000, 1, 1, tzinfo=UTC))
    )
    db.session.commit()
    before = datetime.now(UTC)
    assert partition_claim(pid, "host:2:b") is True
    again = db.session.get(BatchPartition, pid, populate_existing=True)
    assert again.started_at == first_started  # when the run first reached it
    assert again.lease_until >= before + timedelta(seconds=120)
    assert (again.worker, again.attempts) == ("host:2:b", 2)

    # A lease of 0 seconds would be taken over at once: it is a second at least.
    settings_change(app, monkeypatch, COB_LEASE_SECONDS=0)
    other = _partition([3], run_id="resume2")
    assert partition_claim(other, "host:1:a") is True
    short = db.session.get(BatchPartition, other)
    assert short.lease_until - short.started_at == timedelta(seconds=1)


def test_a_resumed_partition_starts_at_its_first_chunk_not_recorded_and_keeps_its_errors(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker died after recording the first of three chunks. The next one redoes
    nothing recorded, keeps the errors recorded so far, adds each chunk's own (one chunk
    redone loan by loan, one that reports a loan it skipped) and renews its lease with
    each chunk it records."""
    settings_change(app, monkeypatch, COB_CHUNK_SIZE=2)
    ids = _late_loans(6)
    bad, skipped = ids[2], ids[5]
    pid = _partition(
        ids,
        status="running",
        worker="host:1:a",
        attempts=1,
        next_chunk=1,
        lease_until=datetime(2000, 1, 1, tzinfo=UTC),
        records_scanned=2,
        records_updated=2,
        errors=["loan 7: an earlier error"],
    )
    seen: list[tuple[int, list[str], datetime]] = []

    def chunk(chunk_ids: list[int], day: date, stats: ChunkStats) -> None:
        if chunk_ids == ids[2:4]:
            # The lease runs out while this chunk works: recording the chunk renews it.
            with db.engine.begin() as other:
                other.execute(
                    update(BatchPartition)
                    .where(BatchPartition.id == pid)
                    .values(lease_until=datetime(2000, 1, 1, tzinfo=UTC))
                )
        if chunk_ids == ids[4:]:
            # What the chunk redone loan by loan recorded, as another worker would see it.
            with db.engine.connect() as other:
                seen.append(
                    other.execute(
                        select(
                            BatchPartition.next_chunk,
                            BatchPartition.errors,
                            BatchPartition.lease_until,
                        ).where(BatchPartition.id == pid)
                    ).one()
                )
        if bad in chunk_ids:
            raise ValueError("no schedule")
        if skipped in chunk_ids:
            stats.error(f"loan {skipped}: skipped")
        ARREARS.chunk([i for i in chunk_ids if i != skipped], day, stats)

    assert partition_work(Batch("loan-arrears", ARREARS.scan, chunk), pid, "host:2:b") is True
    part = db.session.get(BatchPartition, pid, populate_existing=True)
    assert (part.status, part.worker, part.attempts, part.next_chunk) == (
        "done",
        "host:2:b",
        2,
        3,
    )
    assert part.errors == [
        "loan 7: an earlier error",
        f"loan {bad}: ValueError: no schedule",
        f"loan {skipped}: skipped",
    ]
    assert (part.records_scanned, part.records_updated) == (6, 4)
    assert part.finished_at is not None and part.lease_until is None
    [(next_chunk, errors, lease)] = seen
    assert (next_chunk, errors) == (2, part.errors[:2])
    assert lease > datetime.now(UTC)
    charged = [receivables(reload(i))["penalty"] for i in ids]
    # The first chunk was recorded as done before: nothing of it is done again.
    assert charged == [Decimal("0")] * 3 + [Decimal("50.00")] * 2 + [Decimal("0")]


def test_a_worker_records_and_finishes_only_the_partition_it_works(app: Flask) -> None:
    ids = _late_loans(2)
    mine = _partition(ids[:1])
    also_mine = _partition(ids[1:], number=1)
    assert partition_claim(also_mine, "host:1:a") is True
    before = db.session.get(BatchPartition, also_mine)
    held = (before.status, before.lease_until, before.next_chunk, before.records_scanned)

    assert partition_work(ARREARS, mine, "host:1:a") is True
    done = db.session.get(BatchPartition, mine, populate_existing=True)
    assert (done.status, done.next_chunk, done.records_scanned) == ("done", 1, 1)
    other = db.session.get(BatchPartition, also_mine, populate_existing=True)
    assert (other.status, other.lease_until, other.next_chunk, other.records_scanned) == held
    assert other.finished_at is None


def test_a_partition_taken_over_after_its_last_chunk_is_left_to_its_new_holder(
    app: Flask,
) -> None:
    """The lease ran out between the last chunk's commit and the finish: the other worker
    holds it now, and this one does not mark it done under that worker's name."""
    [loan_id] = _late_loans(1)
    pid = _partition([loan_id])

    taken: list[str] = []

    def take_over(session: Session, transaction: SessionTransaction) -> None:
        if taken or transaction.parent is not None:  # done, or a savepoint of the chunk's
            return
        taken.append("host:9:b")
        with db.engine.begin() as other:
            other.execute(
                update(BatchPartition).where(BatchPartition.id == pid).values(worker="host:9:b")
            )

    def chunk(chunk_ids: list[int], day: date, stats: ChunkStats) -> None:
        # Once the chunk's transaction is over (committed with its record), before the
        # finish: the moment a lease running out would let another worker in.
        event.listen(db.session(), "after_transaction_end", take_over)
        ARREARS.chunk(chunk_ids, day, stats)

    worked = partition_work(Batch("loan-arrears", ARREARS.scan, chunk), pid, "host:1:a")
    event.remove(db.session(), "after_transaction_end", take_over)
    assert worked is False and taken == ["host:9:b"]
    assert receivables(reload(loan_id))["penalty"] == Decimal("50.00")  # the chunk's work
    part = db.session.get(BatchPartition, pid, populate_existing=True)
    assert (part.status, part.worker, part.next_chunk, part.finished_at) == (
        "running",
        "host:9:b",
        1,
        None,
    )


def test_a_worker_is_named_by_host_pid_and_a_token_that_fits_its_column(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "h" * 100)
    first, second = worker_name(), worker_name()
    assert re.fullmatch(rf"h{{40}}:{os.getpid()}:[0-9a-f]{{8}}", first), first
    assert first != second  # a restarted process with the same pid is told apart
    assert len(first) <= BatchPartition.worker.type.length


def test_workers_share_the_run_and_the_line_counts_every_partition(
    app: Flask, monkeypatch: pytest.MonkeyPatch, runner
) -> None:
    # Chunks of one, two workers: six partitions of two chunks (at most four a worker).
    settings_change(app, monkeypatch, COB_CHUNK_SIZE=1)
    ids = _late_loans(12)
    db.session.remove()

    result = runner.invoke(
        args=["jobs", "run", "loan-arrears", "--as-of-date", "2026-02-10", "--workers", "2"]
    )
    assert result.exit_code == EXIT_OK, result.output
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert (line["records_scanned"], line["records_updated"], line["errors_count"]) == (12, 12, 0)
    assert "6/6 partitions" in result.stderr
    parts = db.session.scalars(
        select(BatchPartition).where(BatchPartition.run_id == line["run_id"])
    ).all()
    assert sorted(p.number for p in parts) == [0, 1, 2, 3, 4, 5]
    # The workers chunk as the run's settings say (they inherit its environment).
    assert {(p.status, p.next_chunk) for p in parts} == {("done", 2)}
    assert sorted(i for p in parts for i in p.ids) == sorted(ids)
    # Done by the worker processes, not by this one.
    assert all(p.worker and f":{os.getpid()}:" not in p.worker for p in parts)
    assert all(receivables(reload(i))["penalty"] == Decimal("50.00") for i in ids)

    again = runner.invoke(
        args=["jobs", "run", "loan-arrears", "--as-of-date", "2026-02-10", "--workers", "2"]
    )
    assert again.exit_code == EXIT_OK, again.output
    assert json.loads(again.stdout.strip().splitlines()[-1])["records_updated"] == 0
    assert _penalty_entries() == 12


def test_a_worker_killed_mid_partition_is_taken_over_and_nothing_is_charged_twice(
    app: Flask, monkeypatch: pytest.MonkeyPatch, pg: None
) -> None:
    settings_change(app, monkeypatch, COB_CHUNK_SIZE=2, COB_LEASE_SECONDS=3)
    # 12 loans, chunks of 2, one worker: 3 partitions of 2 chunks each.
    ids = _late_loans(12)
    victim = ids[3]  # partition 0's second chunk: its first is committed when it waits
    db.session.remove()

    # Hold one loan's row so the worker that reaches it waits there, mid-partition.
    holder = db.engine.connect()
    holding = holder.begin()
    holder.execute(text("SELECT id FROM loans WHERE id = :id FOR UPDATE"), {"id": victim})
    outcome: dict[str, int] = {}
    job = threading.Thread(
        target=lambda: outcome.update(
            code=_run_in(
                app, lambda: schedule.run_job("loan-arrears", date(2026, 2, 10), workers=1)
            )
        ),
        daemon=True,
    )
    try:
        job.start()
        wait_until_blocked(timeout=60)
        part = db.session.scalar(
            select(BatchPartition).where(
                BatchPartition.status == "running",
                BatchPartition.job == "loan-arrears",
            )
        )
        assert part is not None and victim in part.ids
        assert part.next_chunk == 1  # the first chunk committed before the one that waits
        worker_pid = int(part.worker.split(":")[1])
        db.session.commit()
        os.kill(worker_pid, signal.SIGKILL)
    finally:
        holding.rollback()
        holder.close()
    job.join(120)
    assert not job.is_alive(), "the run did not finish after its worker was killed"
    assert outcome["code"] == EXIT_OK

    part = db.session.get(BatchPartition, part.id, populate_existing=True)
    assert (part.status, part.attempts, part.next_chunk) == ("done", 2, 2)
    assert int(part.worker.split(":")[1]) != worker_pid
    for loan_id in ids:
        assert _standing(loan_id)[4:] == (Decimal("50.00"), 1), loan_id
    assert _penalty_entries() == 12


def _run_in(app: Flask, fn) -> int:  # noqa: ANN001
    worker = Worker(app, fn)
    worker.start()
    return worker.outcome(timeout=120)
