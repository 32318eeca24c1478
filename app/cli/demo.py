"""`sacco demo-data`: a SACCO to click around in. Safe to run again."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from app.extensions import db
from app.models import LoanProduct, Member, StaffUser
from app.models.member import STAFF_ROLES
from app.services.ledger import DuplicatePosting
from app.services.members import member_add, member_buy_shares, member_deposit
from app.services.staff import staff_add

DEMO_PASSWORD = "demo-pass-2026"  # demo data only; refused in production

PRODUCTS = [
    dict(
        code="INSTANT",
        name="Instant Loan",
        interest_method="flat",
        amortization="equal_installments",
        annual_rate=Decimal("90"),
        frequency="monthly",
        default_term=1,
        min_term=1,
        max_term=1,
        installment_multiple=Decimal("1"),
        min_amount=Decimal("100"),
        max_amount=Decimal("50000"),
        fee_type="percent",
        fee_value=Decimal("2.5"),
        fee_min=Decimal("10"),
        fee_max=Decimal("500"),
        penalty_type="percent",
        penalty_value=Decimal("5"),
        limit_multiple=Decimal("1"),
        min_share_capital=Decimal("0"),
        min_membership_days=0,
        auto_approve_limit=Decimal("50000"),
        maker_checker_threshold=None,
    ),
    dict(
        code="DEV",
        name="Development Loan",
        interest_method="declining",
        amortization="equal_installments",
        annual_rate=Decimal("12"),
        frequency="monthly",
        default_term=12,
        min_term=3,
        max_term=36,
        installment_multiple=Decimal("1"),
        min_amount=Decimal("5000"),
        max_amount=Decimal("2000000"),
        fee_type="percent",
        fee_value=Decimal("1"),
        fee_min=Decimal("100"),
        fee_max=Decimal("5000"),
        penalty_type="percent",
        penalty_value=Decimal("2"),
        limit_multiple=Decimal("3"),
        min_share_capital=Decimal("1000"),
        min_membership_days=90,
        auto_approve_limit=None,
        maker_checker_threshold=Decimal("100000"),
    ),
]

MEMBERS = [
    ("Wanjiku Kamau", "0711223344", "23456789", "sw", Decimal("12000"), Decimal("2000")),
    ("Otieno Ochieng", "0722334455", "24567890", "en", Decimal("45000"), Decimal("5000")),
    ("Akinyi Atieno", "0733445566", "25678901", "en", Decimal("3000"), Decimal("0")),
    ("Mwangi Njoroge", "0110223344", "26789012", "sw", Decimal("80000"), Decimal("10000")),
    ("Chebet Kiprono", "0744556677", "27890123", "en", Decimal("500"), Decimal("0")),
]


def demo_load() -> dict[str, int]:
    if current_app.config["SETTINGS"].is_production:
        raise click.ClickException("demo data is never loaded in production")
    created = {"staff": 0, "products": 0, "members": 0}
    for role in STAFF_ROLES:
        email = f"{role.replace('_', '.')}@sacco.test" if role != "admin" else "admin@sacco.test"
        if db.session.scalar(select(StaffUser).where(StaffUser.email == email)) is None:
            staff_add(email=email, role=role, password=DEMO_PASSWORD, actor="demo")
            created["staff"] += 1
    for spec in PRODUCTS:
        if db.session.scalar(select(LoanProduct).where(LoanProduct.code == spec["code"])) is None:
            db.session.add(LoanProduct(**spec))
            created["products"] += 1
    db.session.commit()
    today = date.today()
    for name, phone, national_id, language, savings, shares in MEMBERS:
        member = db.session.scalar(select(Member).where(Member.national_id == national_id))
        if member is None:
            member = member_add(
                name=name, phone=phone, national_id=national_id, language=language, actor="demo"
            )
            created["members"] += 1
        try:
            member_deposit(
                member_id=member.id,
                amount=savings + shares,
                reference=f"DEMO-{member.member_no}",
                value_date=today,
                actor="demo",
            )
        except DuplicatePosting:
            db.session.rollback()
        if shares:
            try:
                member_buy_shares(
                    member_id=member.id,
                    amount=shares,
                    reference=f"DEMO-{member.member_no}",
                    value_date=today,
                    actor="demo",
                )
            except DuplicatePosting:
                db.session.rollback()
    return created


@click.command("demo-data")
@with_appcontext
def demo_data() -> None:
    """Load demo staff (one per role), products and members; safe to run twice."""
    created = demo_load()
    click.echo(", ".join(f"{n} {k} added" for k, n in created.items()))
    click.echo(f"Staff logins: <role>@sacco.test (admin@sacco.test) / {DEMO_PASSWORD}")
