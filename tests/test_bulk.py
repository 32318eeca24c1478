"""The bulk writers (app.services.bulk) store what the ORM's INSERT would, on both databases:
the model's plain defaults filled in, JSON as JSON, and a database refusal raised as
SQLAlchemy's own error, whichever path (COPY on PostgreSQL, executemany elsewhere) wrote."""

from __future__ import annotations

from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import Account, AccountProduct, AuditLog, MpesaRequest
from app.models.types import utcnow
from app.services.bulk import (
    copy_dicts,
    copy_rows,
    insert_ignoring,
    insert_returning,
    on_postgres,
    update_rows,
)
from app.services.ledger import ledger_check
from app.services.savings.products import DEFAULT_PRODUCTS


def test_rows_written_in_bulk_take_the_models_plain_defaults(app: Flask) -> None:
    now = utcnow()
    copy_dicts(
        Account.__table__,
        [
            {"code": f"BULK-{n}", "kind": "savings", "name": f"bulk {n}", "created_at": now}
            for n in range(3)
        ],
    )
    db.session.commit()
    rows = db.session.execute(
        select(Account.code, Account.status, Account.balance, Account.created_at)
        .where(Account.code.like("BULK-%"))
        .order_by(Account.code)
    ).all()
    assert [(code, status, balance) for code, status, balance, _ in rows] == [
        ("BULK-0", "open", Decimal("0.00")),
        ("BULK-1", "open", Decimal("0.00")),
        ("BULK-2", "open", Decimal("0.00")),
    ]
    assert {at for *_, at in rows} == {now}
    assert ledger_check() == []


def test_json_and_none_are_stored_as_the_orm_stores_them(app: Flask) -> None:
    copy_dicts(
        AuditLog.__table__,
        [
            {
                "at": utcnow(),
                "actor": "bulk",
                "action": "test.bulk",
                "object_type": "thing",
                "object_id": "1",
                "before": None,
                "after": {"amount": "10.00", "n": 2},
                "note": "x" * 400,
            }
        ],
    )
    db.session.add(
        AuditLog(actor="orm", action="test.bulk", object_type="thing", object_id="2", before=None)
    )
    db.session.commit()
    rows = db.session.execute(
        select(AuditLog.actor, AuditLog.before, AuditLog.after, AuditLog.note)
        .where(AuditLog.action == "test.bulk")
        .order_by(AuditLog.object_id)
    ).all()
    bulk, orm = rows
    assert bulk.after == {"amount": "10.00", "n": 2}
    assert bulk.note == "x" * 400
    assert bulk.before == orm.before  # None either way, however the column keeps it
    # ...and kept the same way: JSON null or SQL NULL, never one of each (a query for
    # `before IS NULL` finds both rows or neither). (Mutation testing, issue 23.)
    kept_null = db.session.scalars(
        select(AuditLog.actor).where(AuditLog.action == "test.bulk", AuditLog.before.is_(None))
    ).all()
    assert sorted(kept_null) in ([], ["bulk", "orm"])


def test_money_is_rounded_by_its_column_type_as_the_orm_rounds_it(app: Flask) -> None:
    """Half a cent goes to the even cent (the one rounding function), not the database's
    own rounding (half away from zero on PostgreSQL). (Mutation testing, issue 23.)"""
    product = {
        **DEFAULT_PRODUCTS["ORD"],
        "withdrawal_fee": Decimal("30.125"),
        "min_balance": Decimal("100.135"),
        "created_at": utcnow(),
    }
    copy_dicts(AccountProduct.__table__, [{**product, "code": "BULKP", "ref_suffix": "B1"}])
    db.session.add(AccountProduct(**{**product, "code": "ORMP", "ref_suffix": "B2"}))
    db.session.commit()

    stored = db.session.execute(
        select(AccountProduct.withdrawal_fee, AccountProduct.min_balance)
        .where(AccountProduct.code.in_(["BULKP", "ORMP"]))
        .order_by(AccountProduct.code)
    ).all()
    assert [tuple(row) for row in stored] == [(Decimal("30.12"), Decimal("100.14"))] * 2


def test_a_computed_default_left_out_is_refused_before_anything_is_written(
    app: Flask,
) -> None:
    if not on_postgres():
        pytest.skip("COPY is PostgreSQL's; elsewhere the ORM's INSERT computes the default")
    with pytest.raises(ValueError, match="accounts: give created_at"):
        copy_dicts(Account.__table__, [{"code": "BULK-X", "kind": "savings", "name": "x"}])
    with pytest.raises(ValueError) as refused:  # every one named (mutation testing, issue 23)
        copy_dicts(MpesaRequest.__table__, [{"kind": "stk"}])
    assert str(refused.value) == (
        "mpesa_requests: give created_at, updated_at (COPY cannot compute it)"
    )
    db.session.rollback()
    assert db.session.scalar(select(Account.id).where(Account.code == "BULK-X")) is None


def test_a_taken_unique_key_is_an_integrity_error_and_writes_nothing(app: Flask) -> None:
    now = utcnow()
    row = {"code": "BULK-DUP", "kind": "savings", "name": "first", "created_at": now}
    copy_dicts(Account.__table__, [row])
    db.session.commit()
    with pytest.raises(IntegrityError) as refused:
        copy_dicts(
            Account.__table__,
            [{**row, "code": "BULK-NEW", "name": "new"}, {**row, "name": "second"}],
        )
    db.session.rollback()
    # The error names the statement that failed, as SQLAlchemy's own do: a night's log
    # says which table refused. (Mutation testing, issue 23.)
    assert "INTO accounts" in refused.value.statement or "COPY accounts" in refused.value.statement
    names = db.session.scalars(select(Account.name).where(Account.code.like("BULK-%"))).all()
    assert names == ["first"]


def test_insert_returning_skips_only_a_conflict_on_the_keys_it_names(app: Flask) -> None:
    """A row whose named key is taken comes back with nothing; a key taken without being
    named is the database's refusal, as for any INSERT. (Mutation testing, issue 23.)"""
    # Every column given: the unnest INSERT on PostgreSQL knows no model defaults.
    row = {
        "code": "BULK-R1",
        "kind": "savings",
        "name": "first",
        "status": "open",
        "balance": Decimal("0"),
        "created_at": utcnow(),
    }
    [(made,)] = insert_returning(Account.__table__, [row], returning=["id"])
    db.session.commit()

    again = insert_returning(
        Account.__table__, [row], returning=["id"], ignore_conflicts_on=["code"]
    )
    assert again == []
    for named in (None, ["id"]):  # nothing named, or another key than the one taken
        with pytest.raises(IntegrityError):
            insert_returning(Account.__table__, [row], returning=["id"], ignore_conflicts_on=named)
        db.session.rollback()
    assert db.session.scalars(select(Account.id).where(Account.code == "BULK-R1")).all() == [made]


def test_insert_ignoring_skips_only_a_conflict_on_the_keys_it_names(app: Flask) -> None:
    """(Mutation testing, issue 23.)"""
    row = {"code": "BULK-I1", "kind": "savings", "name": "first"}
    for _ in range(2):  # the second is skipped: its code is taken
        db.session.execute(insert_ignoring(Account.__table__, ["code"]), [row])
        db.session.commit()
    with pytest.raises(IntegrityError):  # the code taken, another key named
        db.session.execute(insert_ignoring(Account.__table__, ["id"]), [row])
    db.session.rollback()
    assert db.session.scalars(select(Account.name).where(Account.code == "BULK-I1")).all() == [
        "first"
    ]


def _products(*codes: str, active: bool = True) -> dict[str, int]:
    """Account products to write to: no ledger rests on them (the reconciliation after
    each test stays true whatever a bulk UPDATE does to them)."""
    made = {}
    for code in codes:
        product = AccountProduct(
            **{**DEFAULT_PRODUCTS["ORD"], "code": code, "ref_suffix": code[-2:], "active": active}
        )
        db.session.add(product)
        db.session.flush()
        made[code] = product.id
    db.session.commit()
    return made


def _fees() -> dict[str, tuple[Decimal, Decimal, str]]:
    rows = db.session.execute(
        select(
            AccountProduct.code,
            AccountProduct.withdrawal_fee,
            AccountProduct.min_balance,
            AccountProduct.name,
        ).where(AccountProduct.code.like("UPD%"))
    ).all()
    return {code: (fee, floor, name) for code, fee, floor, name in rows}


def test_update_rows_adds_or_sets_each_row_by_its_key_and_counts_what_it_changed(
    app: Flask,
) -> None:
    """One statement over many rows: a column in `add` is added to, the others set; the
    `where` condition and an unknown key leave rows alone; the count is the rows changed.
    Money is bound as its column rounds it (half a cent to the even cent). (Mutation
    testing, issue 23: the PostgreSQL statement is built by hand.)"""
    _products("UPD1", "UPD2")
    _products("UPD3", active=False)
    changed = update_rows(
        AccountProduct.__table__,
        [
            {"code": code, "withdrawal_fee": Decimal("5.125"), "min_balance": Decimal(floor)}
            for code, floor in (("UPD1", "50"), ("UPD2", "60"), ("UPD3", "70"), ("NONE", "1"))
        ],
        key="code",
        add=["withdrawal_fee"],
        where="active = true",
    )
    db.session.commit()

    assert changed == 2
    assert _fees() == {
        "UPD1": (Decimal("35.12"), Decimal("50.00"), "Ordinary savings"),
        "UPD2": (Decimal("35.12"), Decimal("60.00"), "Ordinary savings"),
        "UPD3": (Decimal("30.00"), Decimal("100.00"), "Ordinary savings"),  # not active
    }


def test_update_rows_by_id_with_no_condition_sets_every_row_named(app: Flask) -> None:
    ids = _products("UPD1", "UPD2", "UPD3")
    assert update_rows(AccountProduct.__table__, []) == 0
    renamed = [{"id": ids["UPD3"], "name": "Third"}, {"id": ids["UPD1"], "name": "First"}]

    assert update_rows(AccountProduct.__table__, renamed) == 2
    assert update_rows(AccountProduct.__table__, [{"id": ids["UPD2"], "name": "Second"}]) == 1
    db.session.commit()

    assert {code: name for code, (_, _, name) in _fees().items()} == {
        "UPD1": "First",
        "UPD2": "Second",
        "UPD3": "Third",
    }


def test_copy_rows_writes_tuples_in_column_order_and_refuses_a_row_of_another_length(
    app: Flask,
) -> None:
    """Money not yet rounded is rounded as its column rounds it; a row with a value
    missing, or one too many, is refused before anything is written, on either road:
    nothing is stored in the wrong column or cut off. (Mutation testing, issue 23.)"""
    # COPY knows no model defaults: every column without a database default is given.
    product = {**DEFAULT_PRODUCTS["ORD"], "active": True, "created_at": utcnow()}
    del product["ref_suffix"]
    columns = [*product, "code", "ref_suffix"]
    rows = [
        (*product.values(), "UPDC1", "C1"),
        (*{**product, "withdrawal_fee": Decimal("12.345")}.values(), "UPDC2", "C2"),
    ]
    copy_rows(AccountProduct.__table__, [], [])  # nothing to write: not even a statement
    copy_rows(AccountProduct.__table__, columns, rows)
    db.session.commit()
    fees = dict(
        db.session.execute(
            select(AccountProduct.code, AccountProduct.withdrawal_fee).where(
                AccountProduct.code.like("UPDC%")
            )
        ).all()
    )
    assert fees == {"UPDC1": Decimal("30.00"), "UPDC2": Decimal("12.34")}

    third = (*product.values(), "UPDC3", "C3")
    for wrong in (
        [third[:-1]],  # every row short
        [third[:-1], (*product.values(), "UPDC4", "C4")],  # one row short
        [(*third, "extra"), (*product.values(), "UPDC4", "C4")],  # one row long
    ):
        with pytest.raises(ValueError):
            copy_rows(AccountProduct.__table__, columns, wrong)
        db.session.rollback()
    assert (
        db.session.scalar(
            select(AccountProduct.id).where(AccountProduct.code.in_(["UPDC3", "UPDC4"]))
        )
        is None
    )
