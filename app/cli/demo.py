"""`sacco demo-data`: a SACCO to click around in. Safe to run again."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from app.clock import business_today
from app.extensions import db
from app.models import Loan, LoanProduct, Member, StaffUser
from app.models.member import STAFF_ROLES
from app.services.books import chart_ensure
from app.services.ledger import DuplicatePosting
from app.services.loans import loan_apply, loan_disburse
from app.services.members import member_add, member_buy_shares, member_deposit
from app.services.savings import account_product, products_ensure
from app.services.savings.money_in import account_deposit
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

# Secured the way most SACCO loans are: two guarantors cover everything above the member's
# own free deposits (or collateral at half its forced-sale value); the development loan's
# terms otherwise, open to every member at 14%.
PRODUCTS.append(
    {
        **PRODUCTS[1],
        "code": "BIASHARA",
        "name": "Biashara Loan",
        "name_sw": "Mkopo wa Biashara",
        "annual_rate": Decimal("14"),
        "max_term": 24,
        "min_amount": Decimal("10000"),
        "max_amount": Decimal("500000"),
        "min_share_capital": Decimal("0"),
        "min_membership_days": 0,
        "min_guarantors": 2,
        "guarantee_cover": Decimal("100"),
        "collateral_allowed": True,
        "collateral_haircut": Decimal("50"),
        "guarantee_days": 7,
    }
)

# (member national id, product, amount, term, days since disbursement or None = awaiting decision)
LOANS = [
    ("23456789", "INSTANT", Decimal("3000"), None, 10),
    ("25678901", "INSTANT", Decimal("2500"), None, 45),  # late: shows arrears and penalties
    ("24567890", "DEV", Decimal("60000"), 12, None),  # waits for a loan officer
    ("26789012", "DEV", Decimal("150000"), 24, None),  # above the maker-checker threshold
]

MEMBERS = [
    ("Wanjiku Kamau", "0711223344", "23456789", "sw", Decimal("12000"), Decimal("2000")),
    ("Otieno Ochieng", "0722334455", "24567890", "en", Decimal("45000"), Decimal("5000")),
    ("Akinyi Atieno", "0733445566", "25678901", "en", Decimal("3000"), Decimal("0")),
    ("Mwangi Njoroge", "0110223344", "26789012", "sw", Decimal("80000"), Decimal("10000")),
    ("Chebet Kiprono", "0744556677", "27890123", "en", Decimal("500"), Decimal("0")),
]


# What a newcomer types to try USSD as a demo member: a first dial asks the ID number.
DEMO_DIAL_HINT = (
    "Dial as a demo member: sacco dial --phone 0711223344 "
    "(first dial: ID number 23456789, then choose a PIN)"
)


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
    products_ensure()  # every default account product, as the migrations seed them
    db.session.flush()
    chart_ensure()  # and the chart of accounts, with each demo loan product's line
    db.session.commit()
    today = business_today()
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
        # A tenth of what they hold also sits in withdrawable savings, so Withdraw and
        # Save have something to show.
        try:
            account_deposit(
                member_id=member.id,
                product=account_product("ORD"),
                amount=max(savings // 10, Decimal("500")),
                reference=f"DEMO-S-{member.member_no}",
                value_date=today,
                actor="demo",
            )
            db.session.commit()
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
    created["loans"] = _demo_loans(today)
    return created


def _demo_loans(today: date) -> int:
    made = 0
    for national_id, code, amount, term, days_ago in LOANS:
        ref = f"demo:{national_id}:{code}"
        if db.session.scalar(select(Loan.id).where(Loan.external_ref == ref)) is not None:
            continue
        member = db.session.scalar(select(Member).where(Member.national_id == national_id))
        product = db.session.scalar(select(LoanProduct).where(LoanProduct.code == code))
        if member is None or product is None:
            continue
        # Demo members "joined" a year ago so products with a membership age admit them.
        member.created_at = member.created_at - timedelta(days=365)
        db.session.commit()
        applied_on = today - timedelta(days=days_ago or 0)
        loan = loan_apply(
            member_id=member.id,
            product_id=product.id,
            amount=amount,
            term=term,
            as_of=applied_on,
            actor="demo",
        )
        loan.external_ref = ref
        if days_ago is not None:
            # Dated on the day it was paid out, not today: applied in the morning of that
            # day (Kenyan time) and, as an instant loan is, decided at once.
            applied_at = datetime.combine(applied_on, time(9, 0), current_app.config["SETTINGS"].tz)
            loan.applied_at = applied_at
            if loan.decided_at is not None:
                loan.decided_at = applied_at + timedelta(minutes=1)
        db.session.commit()
        if days_ago is not None and loan.status == "approved":
            loan_disburse(
                loan_id=loan.id,
                reference=f"DEMO{loan.id:06d}",
                value_date=applied_on,
                channel="manual",
                actor="demo",
            )
        made += 1
    return made


@click.command("demo-data")
@with_appcontext
def demo_data() -> None:
    """Load demo staff (one per role), products and members; safe to run twice."""
    created = demo_load()
    click.echo(", ".join(f"{n} {k} added" for k, n in created.items()))
    click.echo(f"Staff logins: <role>@sacco.test (admin@sacco.test) / {DEMO_PASSWORD}")
    click.echo(DEMO_DIAL_HINT)
