"""Guarantees and collateral in the console (issue 19): the loan page's "Security" block,
the member page's guarantees given and received, a defaulted loan's guarantors on the
officer desk, the forms that ask a guarantor for a member and record or discharge
collateral, and the two reports (exposure by guarantor, loans below cover).

The pages include the blocks (admin_sacco/guarantee_*.html), which read their figures
through template globals registered here, so the including views compute nothing. Each
form posts here, checks the permission (403, audited, for a role without it), calls one
service, and goes back to the loan page with what happened in words.

Decisions where the issue is silent:

- A guarantor is asked for the member from the loan page by member number or phone and an
  amount, in the staff member's name (`staff:<email>`); the guarantor answers from their
  own phone like any other request (the console records no answer for them).
- The valuation report of an asset is a document of the loan (owner "loan") of kind
  `valuation_<collateral id>`, uploaded through the documents block's own endpoint, so
  each asset's reports are a version line of their own and the documents rules (type,
  size, audit) apply unchanged.
- The two reports are listed with the others (admin/reports.py REPORTS), added when this
  module registers, and read every role that may view, like the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from flask import flash, redirect, request, url_for
from flask_admin import Admin, BaseView, expose
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from admin.auth import SecureMixin, TokenForm, _kenyan_time, require
from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db
from app.models import Collateral, Document, Guarantee, Loan, Member
from app.models.security import COLLATERAL_KINDS
from app.money import ZERO
from app.selectors.guarantees import (
    Cover,
    Deposits,
    Held,
    collateral_value,
    guarantee_exposure,
    guarantees_held,
    guarantor_standing,
    loan_cover,
    member_deposits,
    principal_owed,
    product_needs_security,
)
from app.selectors.reports import guarantor_exposure_report, loans_below_cover_report
from app.services.guarantees import (
    GuaranteeError,
    guarantee_request,
    guarantees_waiting,
    guarantor_find,
)
from app.services.guarantees.collateral import (
    KIND_WORDS,
    CollateralError,
    collateral_discharge,
    collateral_record,
)

ASKING = ("submitted", "recommended")  # guarantee_request's ASKING_STATUSES
RECORDING = ("submitted", "recommended", "approved", "disbursing", "active", "restructured")
DISCHARGEABLE = ("closed", "written_off", "rejected", "withdrawn", "submitted", "recommended")


# -- what the blocks show ----------------------------------------------------------------------


def when(moment: Any) -> str:
    """Kenyan time to the minute, as the console's lists show it."""
    return _kenyan_time(None, moment, "") if moment is not None else ""


@dataclass(frozen=True)
class GuaranteeLine:
    guarantee: Guarantee
    guarantor: Member
    exposure: Decimal  # what it holds now (0 unless accepted on a loan that still holds)
    free: Decimal | None = None  # the guarantor's free deposits, where the page shows them
    standing: str | None = None  # "membership exited", "own loan L… in default": a warning


@dataclass(frozen=True)
class CollateralLine:
    collateral: Collateral
    counted: Decimal  # toward cover: forced-sale value less the haircut, if the product allows
    documents: list[Document]
    kind_words: str


@dataclass
class LoanSecurity:
    loan: Loan
    secured: bool  # the product asks for security
    cover: Cover | None
    guarantees: list[GuaranteeLine] = field(default_factory=list)
    collateral: list[CollateralLine] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)
    may_ask: bool = False
    may_record: bool = False
    today: date | None = None

    @staticmethod
    def when(moment: Any) -> str:
        return when(moment)

    @property
    def shown(self) -> bool:
        return self.secured or bool(self.guarantees) or bool(self.collateral)

    def dischargeable(self, line: CollateralLine) -> bool:
        return line.collateral.lien_status == "registered" and self.loan.status in DISCHARGEABLE


def loan_security(loan: Loan, *, with_free: bool = False) -> LoanSecurity:
    """The loan's cover, every guarantee asked of anyone for it (newest first), and its
    collateral with the valuation reports; `with_free`: each guarantor's free deposits."""
    secured = product_needs_security(loan.product)
    owed = principal_owed(loan.id)
    lines = []
    asked = list(
        db.session.scalars(
            select(Guarantee).where(Guarantee.loan_id == loan.id).order_by(Guarantee.id.desc())
        )
    )
    standing = guarantor_standing(g.guarantor_id for g in asked if g.status == "accepted")
    for guarantee in asked:
        exposure = (
            guarantee_exposure(
                amount=guarantee.amount,
                loan_status=loan.status,
                principal=loan.principal,
                outstanding=owed,
            )
            if guarantee.status == "accepted"
            else ZERO
        )
        free = member_deposits(guarantee.guarantor_id).free if with_free else None
        lines.append(
            GuaranteeLine(
                guarantee,
                guarantee.guarantor,
                exposure,
                free,
                standing.get(guarantee.guarantor_id) if guarantee.status == "accepted" else None,
            )
        )
    product = loan.product
    collateral = []
    for row in db.session.scalars(
        select(Collateral).where(Collateral.loan_id == loan.id).order_by(Collateral.id)
    ):
        counted = (
            collateral_value(row.forced_sale_value, product.collateral_haircut)
            if product.collateral_allowed and row.lien_status == "registered"
            else ZERO
        )
        documents = list(
            db.session.scalars(
                select(Document)
                .where(
                    Document.owner_type == "loan",
                    Document.owner_id == loan.id,
                    Document.kind == f"valuation_{row.id}",
                )
                .order_by(Document.version.desc())
            )
        )
        collateral.append(
            CollateralLine(row, counted, documents, KIND_WORDS.get(row.kind, row.kind))
        )
    return LoanSecurity(
        loan=loan,
        secured=secured,
        cover=loan_cover(loan) if secured else None,
        guarantees=lines,
        collateral=collateral,
        kinds={kind: KIND_WORDS[kind] for kind in COLLATERAL_KINDS},
        may_ask=secured and loan.status in ASKING,
        may_record=loan.status in RECORDING,
        today=business_today(),
    )


@dataclass(frozen=True)
class Received:
    loan: Loan
    line: GuaranteeLine


@dataclass(frozen=True)
class MemberSecurity:
    deposits: Deposits
    given: list[Held]
    waiting: list[Guarantee]
    received: list[Received]

    @staticmethod
    def when(moment: Any) -> str:
        return when(moment)


def member_security(member_id: int) -> MemberSecurity:
    """A member's deposits and holds, the guarantees they have given (and the requests
    waiting for their answer), and the live guarantees on their own loans."""
    received: list[Received] = []
    loans = db.session.scalars(
        select(Loan)
        .join(Guarantee, Guarantee.loan_id == Loan.id)
        .where(Loan.member_id == member_id, Guarantee.status.in_(("requested", "accepted")))
        .distinct()
        .order_by(Loan.id.desc())
    ).all()
    for loan in loans:
        for line in loan_security(loan).guarantees:
            if line.guarantee.status in ("requested", "accepted"):
                received.append(Received(loan, line))
    return MemberSecurity(
        deposits=member_deposits(member_id),
        given=guarantees_held(member_id),
        waiting=guarantees_waiting(member_id, today=business_today()),
        received=received,
    )


def desk_guarantors(loan: Loan) -> list[GuaranteeLine]:
    """Whom to call about a defaulted loan: its accepted guarantors and what each holds."""
    if not loan.in_default:
        return []
    return [line for line in loan_security(loan).guarantees if line.guarantee.status == "accepted"]


# -- the forms ---------------------------------------------------------------------------------


def _day(raw: str | None) -> date | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise CollateralError("the valuation date must be a date like 2026-01-31") from None


class GuaranteesView(SecureMixin, BaseView):
    """The posts of the security block; every role may read what it shows."""

    permission = "view"

    def is_visible(self) -> bool:
        return False  # no menu entry: its forms live on the loan page

    def _loan_page(self, loan_id: int) -> Response:
        return redirect(url_for("loan.details_view", id=loan_id) + "#loan-security")

    @expose("/")
    def index(self) -> Response:
        return redirect(url_for("reports.report", slug="guarantor-exposure"))

    @expose("/ask/<int:loan_id>", methods=("POST",))
    def ask(self, loan_id: int) -> Response | tuple[str, int]:
        if not TokenForm(request.form).validate():
            flash("The form expired; please try again.", "error")
            return self._loan_page(loan_id)
        refused = require("guarantee.manage", self)
        if refused is not None:
            return refused
        who = (request.form.get("guarantor") or "").strip()
        try:
            guarantor = guarantor_find(who)
            if guarantor is None:
                raise GuaranteeError(f"no active member with the number or phone {who!r}")
            guarantee = guarantee_request(
                loan_id=loan_id,
                guarantor_id=guarantor.id,
                amount=(request.form.get("amount") or "").strip(),
                actor=f"staff:{current_user.email}",
            )
        except SaccoError as exc:
            db.session.rollback()
            flash(f"Guarantor not asked: {exc}.", "error")
        else:
            flash(
                f"{guarantor.name} ({guarantor.member_no}) is asked by SMS to guarantee KES "
                f"{guarantee.amount:,.2f}; they answer from their phone by "
                f"{guarantee.expires_on:%d/%m/%Y}.",
                "success",
            )
        return self._loan_page(loan_id)

    @expose("/collateral/<int:loan_id>", methods=("POST",))
    def record(self, loan_id: int) -> Response | tuple[str, int]:
        if not TokenForm(request.form).validate():
            flash("The form expired; please try again.", "error")
            return self._loan_page(loan_id)
        refused = require("guarantee.manage", self)
        if refused is not None:
            return refused
        form = request.form
        try:
            collateral = collateral_record(
                loan_id=loan_id,
                kind=form.get("kind", ""),
                description=form.get("description", ""),
                owner_name=form.get("owner_name", ""),
                market_value=(form.get("market_value") or "").strip(),
                forced_sale_value=(form.get("forced_sale_value") or "").strip(),
                valued_on=_day(form.get("valued_on")),
                valuer=form.get("valuer", ""),
                staff=current_user._get_current_object(),
            )
        except SaccoError as exc:
            db.session.rollback()
            flash(f"Collateral not recorded: {exc}.", "error")
        else:
            flash(
                f"Recorded {KIND_WORDS[collateral.kind].lower()} "
                f"{collateral.description!r}, lien registered.",
                "success",
            )
        return self._loan_page(loan_id)

    @expose("/discharge/<int:collateral_id>", methods=("POST",))
    def discharge(self, collateral_id: int) -> Response | tuple[str, int]:
        found = db.session.get(Collateral, collateral_id)
        back = (
            self._loan_page(found.loan_id)
            if found is not None
            else redirect(url_for("loan.index_view"))
        )
        if not TokenForm(request.form).validate():
            flash("The form expired; please try again.", "error")
            return back
        refused = require("collateral.release", self)
        if refused is not None:
            return refused
        try:
            collateral = collateral_discharge(
                collateral_id=collateral_id,
                staff=current_user._get_current_object(),
                reason=request.form.get("reason", ""),
            )
        except SaccoError as exc:
            db.session.rollback()
            flash(f"Lien not discharged: {exc}.", "error")
        else:
            flash(f"The lien on {collateral.description!r} is discharged.", "success")
        return back


# -- the reports -------------------------------------------------------------------------------


def _exposure_report(report: Any, *, page: int, per_page: int) -> None:
    from admin.reports import Column, Table

    found = guarantor_exposure_report(page=page, per_page=per_page)
    report.lines.append("Accepted guarantees on loans waiting for payout or still owing, now")
    report.tables.append(
        Table(
            title="Exposure by guarantor",
            columns=(
                Column("Member no."),
                Column("Guarantor"),
                Column("Phone"),
                Column("Loans", "count"),
                Column("Pledged (KES)", "money"),
                Column("Exposure now (KES)", "money"),
                Column("Loans guaranteed"),
            ),
            rows=[
                (r.member_no, r.name, r.phone, r.loans, r.pledged, r.exposure, r.loan_nos)
                for r in found.rows.rows
            ],
            total=("Total", "", "", found.guarantees, found.pledged, found.exposure, ""),
            page=found.rows,
            links=[url_for("member.details_view", id=r.guarantor_id) for r in found.rows.rows],
            note="Exposure: the whole pledge until the loan is paid out, then its share of the "
            "principal still owed; nothing once the loan has ended.",
        )
    )


def _below_cover_report(report: Any, *, page: int, per_page: int) -> None:
    from admin.reports import Column, Table

    found = loans_below_cover_report(page=page, per_page=per_page)
    report.lines.append("Secured loans waiting for payout or still owing, now")
    report.tables.append(
        Table(
            title="Loans below cover",
            columns=(
                Column("Loan"),
                Column("Status"),
                Column("Member"),
                Column("Product"),
                Column("Principal (KES)", "money"),
                Column("Required (KES)", "money"),
                Column("Covered (KES)", "money"),
                Column("Shortfall (KES)", "money"),
                Column("Guarantors"),
                Column("Guarantors short of deposits", "count"),
            ),
            rows=[
                (
                    r.loan_no,
                    r.status,
                    r.member,
                    r.product,
                    r.principal,
                    r.required,
                    r.covered,
                    r.shortfall,
                    f"{r.guarantors} of {r.min_guarantors}",
                    r.short_guarantors,
                )
                for r in found.rows
            ],
            page=found,
            links=[url_for("loan.details_view", id=r.loan_id) for r in found.rows],
            note="Required: the product's cover of the amount above the borrower's own free "
            "deposits; covered: accepted guarantees and registered collateral at the product's "
            "haircut. A guarantor is short when their deposits are below what they hold.",
        )
    )


def _add_reports() -> None:
    from admin.reports import REPORTS, Kind

    REPORTS.setdefault(
        "guarantor-exposure",
        Kind(
            "Exposure by guarantor",
            "Each guarantor's pledges on live and pending loans and what they hold now.",
            False,
            _exposure_report,
        ),
    )
    REPORTS.setdefault(
        "below-cover",
        Kind(
            "Loans below cover",
            "Secured loans whose guarantees and collateral cover less than the product asks.",
            False,
            _below_cover_report,
        ),
    )


def register(console: Admin) -> None:
    console.add_view(GuaranteesView(name="Guarantees", endpoint="guarantees", url="guarantees"))
    _add_reports()
    app: Any = console.app
    if app is not None:
        app.add_template_global(loan_security, "loan_security")
        app.add_template_global(member_security, "member_security")
        app.add_template_global(desk_guarantors, "desk_guarantors")
