"""The map of *384*96#: each named screen, what it shows and where each entry leads.

    (dial) -> activate -> new_pin -> confirm_pin -> main   no PIN yet (first dial, or
                                   after a staff reset): ID number or activation code first
    (dial) -> pin -> main                             every later dial
    pin 9 -> forgot_id -> forgot_code -> new_pin -> confirm_pin -> main
                                   forgotten PIN: ID number, then a code by SMS to the phone
    main 1 -> balance
    main 3 -> repay_loan (several loans) -> repay_amount -> repay_confirm -> END (prompt)
    main 2 -> apply_product -> apply_amount -> [apply_term] -> apply_confirm -> END
        a secured product: apply_confirm -> guar_who -> guar_confirm -> guar_amount
        -> guar_added (1 another: guar_who; 2 done: END, staff complete the list)
    main 2 with a secured application short of cover -> guar_pending
        (pick the loan: guar_who ...; 9: apply_product ...)
    main 8 -> guar_menu: requests listed (pick one: guar_request, the PIN accepts, 2
        declines -> END), 4 guar_held (loans I guarantee), 5 [guar_loan] -> guar_who ...
    main 9 -> sav_menu: 1 [save_account] -> save_amount -> save_confirm -> END (prompt);
        2 [wd_account] -> wd_amount -> wd_pin -> END (payout on its way);
        3 shares_how: 1 shares_amount -> shares_pin -> END; 2 save_amount (shares) ...;
        4 dividends;
        5 so_menu (orders listed): 1 so_source -> so_target -> so_amount -> so_day
        -> so_pin -> END (order set); 2 [so_cancel, 98 more] -> so_cancel_confirm -> END
    main 4 -> statement 1 -> END (SMS on its way)
    main 7 -> language -> main
    main 5 -> ussd_menus/phone.py
    main 6 (only when a loan is late) -> promise_loan (several) -> promise_date
        -> promise_amount -> promise_confirm -> END (recorded, SMS)
    anywhere after the PIN: 0 back one screen, 00 main menu

Screens ask selectors for what they show and services for what they change.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import date, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from flask import current_app
from sqlalchemy import select

from app.clock import business_today
from app.extensions import db
from app.models import Guarantee, Loan, LoanProduct, Member, StandingOrder
from app.models.types import utcnow
from app.money import MoneyError, is_whole_shillings, money_input, shillings_up
from app.selectors.dividends import member_dividends
from app.selectors.guarantees import (
    guarantees_held,
    loan_cover,
    member_deposits,
    product_needs_security,
)
from app.selectors.loans import PENDING_STATUSES, current_installments, loan_eligibility
from app.selectors.members import member_balances
from app.selectors.statements import member_statement
from app.selectors.ussd import (
    AccountLine,
    LoanLine,
    LoanPosition,
    ussd_accounts,
    ussd_balance,
    ussd_caller,
    ussd_guarantee_live,
    ussd_live_loans,
    ussd_secured_applications,
)
from app.services.guarantees import (
    GuaranteeError,
    guarantee_accept,
    guarantee_decline,
    guarantee_request,
    guarantees_waiting,
    guarantor_find,
    mask_name,
)
from app.services.guarantees.requests import ASKING_STATUSES
from app.services.ledger import LedgerError
from app.services.loan_schedule import schedule_build
from app.services.loans import LoanError, loan_apply, loan_fee
from app.services.members import (
    PIN_TRIES,
    RESET_DIGITS,
    ActivationCodeExpired,
    MemberError,
    PinLocked,
    PinResetError,
    member_buy_shares,
    member_check_pin,
    member_check_second_factor,
    member_pin_reset_confirm,
    member_pin_reset_start,
    member_set_language,
    member_set_pin,
    pin_problem,
)
from app.services.notifications import notify_statement
from app.services.payments import PaymentError, payments_request_stk
from app.services.payments.stk import (
    MAX_STK_AMOUNT,
    MIN_STK_AMOUNT,
    payments_request_deposit_stk,
    stk_amount_problem,
)
from app.services.promises import (
    MAX_DAYS_AHEAD,
    PromiseError,
    promise_ceiling,
    promise_problem,
    promise_problem_words,
    promise_record,
)
from app.services.savings.standing_orders import (
    MAX_ACTIVE_ORDERS,
    StandingOrderError,
    standing_order_cancel,
    standing_order_create,
)
from app.services.savings.withdrawals import (
    B2C_MIN_AMOUNT,
    WithdrawalError,
    WithdrawalQuote,
    withdrawal_amount_problem,
    withdrawal_quote,
    withdrawal_request,
)
from app.services.sms_inbound import STATEMENT_LABELS, statement_lines
from app.sms_templates import kes
from app.ussd.engine import MAX_SCREEN, MORE, End, Goto, Hop, Invalid, Screen, Step
from ussd_menus.phone import PHONE_SCREENS, phone_change_start, phone_entry
from ussd_menus.text import t

MAIN_CHOICES = {"1": "balance", "4": "statement", "7": "language", "8": "guar_menu"}


def _lang(hop: Hop) -> str:
    return hop.session.language


def _member(hop: Hop) -> Member:
    member = db.session.get(Member, hop.session.member_id)
    assert member is not None  # the session was opened for this member
    return member


def _with_nav(hop: Hop, body: str) -> str:
    return f"{body}\n{t('nav', _lang(hop))}"


def _short_date(day: date) -> str:
    return day.strftime("%d/%m")


def start(hop: Hop) -> Step:
    """The first hop of a session: who is calling, and which door they get."""
    # One statement, the columns this choice needs (the busiest hop of all: every dial).
    member = ussd_caller(phone=hop.request.phone)
    if member is None:
        return phone_change_start(hop) or End(t("unknown_number", "en"))
    session = hop.session
    session.member_id = member.id
    session.language = member.language
    if member.status != "active":
        return End(t("inactive", member.language))
    now = utcnow()
    if member.locked_until is not None and member.locked_until > now:
        return End(_locked_text(member.locked_until, member.language))
    # No PIN yet: the caller id alone proves nothing, so the ID number or activation
    # code comes before a PIN can be chosen.
    return Goto("pin" if member.has_pin else "activate", push=False)


def _locked_text(until: object, language: str) -> str:
    tz = current_app.config["SETTINGS"].tz
    return t("locked", language, time=until.astimezone(tz).strftime("%H:%M"))  # type: ignore[attr-defined]


# -- PIN ---------------------------------------------------------------------------------
# Every wrong answer on these screens (PIN, ID number, activation code, SMS code) counts on
# the member's one lock (app/services/members.py); nothing typed goes into the session.


def _tries_left(hop: Hop) -> int:
    return PIN_TRIES - _member(hop).failed_pin_count


def _activate_render(hop: Hop) -> str:
    member = _member(hop)
    key = "activate" if member.national_id else "activate_code"
    return t(key, _lang(hop), name=member.name.split()[0][:20])


def _activate(hop: Hop) -> Step:
    try:
        ok = member_check_second_factor(
            member_id=hop.session.member_id, answer=hop.input, now=utcnow()
        )
    except PinLocked as exc:
        return End(_locked_text(exc.until, _lang(hop)))
    except ActivationCodeExpired:
        return End(t("code_expired", _lang(hop)))
    if not ok:
        return Invalid(t("factor_wrong", _lang(hop), left=_tries_left(hop)))
    return Goto("new_pin", push=False)


def _new_pin_render(hop: Hop) -> str:
    if hop.session.data.get("reset"):
        return t("new_pin_reset", _lang(hop))
    return t("new_pin", _lang(hop), name=_member(hop).name.split()[0][:20])


def _pin_digest(hop: Hop, pin: str) -> str:
    """The first entry of a new PIN, kept between two hops without the digits: an HMAC
    under the app's secret and this session (session state never holds a PIN)."""
    key = current_app.config["SECRET_KEY"].encode()
    message = f"{hop.request.session_id}:{pin}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _new_pin(hop: Hop) -> Step:
    problem = pin_problem(hop.input, _member(hop))
    if problem:
        return Invalid(t(problem, _lang(hop)))
    hop.session.data["pin_digest"] = _pin_digest(hop, hop.input)
    return Goto("confirm_pin", push=False)


def _confirm_pin(hop: Hop) -> Step:
    first = hop.session.data.pop("pin_digest", "")
    if not hmac.compare_digest(first, _pin_digest(hop, hop.input)):
        hop.session.screen = "new_pin"
        return Invalid(t("pin_mismatch", _lang(hop)))
    reset = bool(hop.session.data.get("reset"))
    try:
        member_set_pin(
            member_id=hop.session.member_id,
            pin=hop.input,
            reset_session=hop.request.session_id if reset else None,
        )
    except MemberError as exc:
        db.session.rollback()
        if not str(exc).startswith("pin_"):  # the reset's proof expired, or a PIN appeared
            return End(t("reset_expired", _lang(hop)))
        hop.session.screen = "new_pin"
        return Invalid(t(str(exc), _lang(hop)))
    hop.session.data.pop("reset", None)
    hop.session.authed = True
    return Goto("main", push=False)


def _pin(hop: Hop) -> Step:
    if hop.input == "9":  # "9. Forgot PIN" (no PIN is one digit, so it costs no try)
        if not _member(hop).national_id:
            return End(t("forgot_no_id", _lang(hop)))
        return Goto("forgot_id", push=False)
    try:
        ok = member_check_pin(member_id=hop.session.member_id, pin=hop.input, now=utcnow())
    except PinLocked as exc:
        return End(_locked_text(exc.until, _lang(hop)))
    if not ok:
        return Invalid(t("pin_wrong", _lang(hop), left=_tries_left(hop)))
    hop.session.authed = True
    if hop.store is not None and hop.store.peek_resume(hop.request.phone):
        return Goto("resume", push=False)
    return Goto("main", push=False)


def _forgot_id(hop: Hop) -> Step:
    try:
        ok = member_pin_reset_start(
            member_id=hop.session.member_id,
            national_id=hop.input,
            session_id=hop.request.session_id,
            now=utcnow(),
        )
    except PinLocked as exc:
        return End(_locked_text(exc.until, _lang(hop)))
    except PinResetError as exc:
        return End(t("forgot_no_id" if exc.code == "no_id" else "forgot_too_many", _lang(hop)))
    if not ok:
        return Invalid(t("factor_wrong", _lang(hop), left=_tries_left(hop)))
    return Goto("forgot_code", push=False)


def _forgot_code_render(hop: Hop) -> str:
    tail = _member(hop).phone[-4:]
    return t("forgot_code", _lang(hop), digits=RESET_DIGITS, tail=tail)


def _forgot_code(hop: Hop) -> Step:
    code = hop.input
    if len(code) != RESET_DIGITS or not code.isdigit():  # a typo, not a guess: no try spent
        return Invalid(t("reset_code_format", _lang(hop), digits=RESET_DIGITS))
    try:
        ok = member_pin_reset_confirm(
            member_id=hop.session.member_id,
            session_id=hop.request.session_id,
            code=code,
            now=utcnow(),
        )
    except PinLocked as exc:
        return End(_locked_text(exc.until, _lang(hop)))
    except PinResetError:
        return End(t("reset_expired", _lang(hop)))
    if not ok:
        return Invalid(t("reset_code_wrong", _lang(hop), left=_tries_left(hop)))
    hop.session.data["reset"] = True  # not a secret: the proof itself stays in Redis
    return Goto("new_pin", push=False)


def _resume(hop: Hop) -> Step:
    """A session dropped within the last 5 minutes: continue where it stopped, or not."""
    if hop.input not in ("1", "2"):
        return Invalid(t("choose", _lang(hop)))
    snapshot = hop.store.take_resume(hop.request.phone) if hop.store else None
    if hop.input == "2" or not snapshot or snapshot["screen"] not in SCREENS:
        return Goto("main", push=False)
    hop.session.data = snapshot["data"]
    hop.session.stack = snapshot["stack"]
    return Goto(snapshot["screen"], push=False)


# -- main menu ---------------------------------------------------------------------------


def _main(hop: Hop) -> Step:
    if hop.input == "3":
        return repay_entry(hop)
    if hop.input == "5":
        return phone_entry(hop)
    if hop.input == "2":
        return apply_entry(hop)
    if hop.input == "9":
        return sav_entry(hop)
    if hop.input in MAIN_CHOICES:
        hop.session.data.pop("page", None)
        return Goto(MAIN_CHOICES[hop.input])
    if hop.input == "6" and _late_loans(hop.session.member_id):
        return promise_entry(hop)
    return Invalid(t("choose", _lang(hop)))


def _main_render(hop: Hop) -> str:
    lines = t("main", _lang(hop)).split("\n")
    if not _late_loans(hop.session.member_id):
        lines = [line for line in lines if not line.startswith("6.")]
    return "\n".join(lines)


def _late_loans(member_id: int) -> list[LoanLine]:
    return [loan for loan in _live_loans(member_id) if loan.days_past_due > 0]


def _live_loans(member_id: int) -> list[LoanLine]:
    return ussd_live_loans(member_id=member_id)


def _position(loan: Loan) -> tuple[Decimal, Decimal, date | None]:
    """What the loan owes in all, what is due now (arrears, else the next installment) and
    when (the oldest unpaid due date): one read of the live schedule, however many of these
    a screen shows."""
    rows = [r for r in current_installments(loan.id) if r.outstanding > 0]
    owed = sum((r.outstanding for r in rows), Decimal("0"))
    if not rows:
        return owed, Decimal("0"), None
    late = [r for r in rows if r.due_date <= business_today()]
    if late:
        return owed, sum((r.outstanding for r in late), Decimal("0")), late[0].due_date
    return owed, rows[0].outstanding, rows[0].due_date


LOANS_PER_PAGE = 2


def _loan_lines(positions: list[LoanPosition], language: str, today: date) -> list[str]:
    lines = []
    for position in positions:
        loan, owed, due, when = position.loan, position.owed, position.due, position.when
        if when is None:
            lines.append(t("balance_loan_short", language, loan_no=loan.loan_no, owed=_pay(owed)))
        else:
            # Amounts as the member pays them (whole shillings, up: paying what the screen
            # says clears it), and a due date passed says "overdue", not "pay by".
            late = when < today
            lines.append(
                t(
                    "balance_loan_late" if late else "balance_loan",
                    language,
                    loan_no=loan.loan_no,
                    owed=_pay(owed),
                    due=_pay(due),
                    date=_short_date(when),
                )
            )
    return lines


def _loans_shown(data: dict[str, Any], page: int) -> tuple[int, int]:
    """The loans page `page` shows (start, end): the first page as many as fitted under
    the accounts (kept in the session when it was shown), then LOANS_PER_PAGE a page."""
    first = int(data.get("first_loans", LOANS_PER_PAGE))
    if page == 0:
        return 0, first
    start = first + (page - 1) * LOANS_PER_PAGE
    return start, start + LOANS_PER_PAGE


def _balance_render(hop: Hop) -> str:
    """Each account (deposits, savings, shares: product name and balance), then the live
    loans, as many as fit under them on the first page, two a page after (98 More)."""
    language = _lang(hop)
    page = int(hop.session.data.get("page", 0))
    today = business_today()
    # Two statements for the whole screen: the accounts, and the live loans with their
    # unpaid installments (not one schedule read per loan).
    view = ussd_balance(
        member_id=hop.session.member_id, today=today, with_accounts=page == 0, language=language
    )
    loans = view.loans
    lines = []
    if page == 0:
        lines = [
            t("balance_account", language, name=a.name[:ACCOUNT_NAME], balance=kes(a.balance))
            for a in view.accounts
        ]
        # Room for the "98 More" and navigation lines whatever follows.
        room = MAX_SCREEN - len(t("more", language)) - len(t("nav", language)) - 2
        shown = 0
        for line in _loan_lines(loans[:LOANS_PER_PAGE], language, today):
            if len("\n".join([*lines, line])) > room:
                break
            lines.append(line)
            shown += 1
        hop.session.data["first_loans"] = shown  # none fitted: 98 shows them from the first
    else:
        start, end = _loans_shown(hop.session.data, page)
        lines = _loan_lines(loans[start:end], language, today)
    if not loans:
        lines.append(t("no_loans", language))
    if len(loans) > _loans_shown(hop.session.data, page)[1]:
        lines.append(t("more", language))
    return _with_nav(hop, "\n".join(lines))


def _balance(hop: Hop) -> Step:
    """Only 98 (more loans) here; 0 and 00 are the engine's."""
    loans = _live_loans(hop.session.member_id)
    page = int(hop.session.data.get("page", 0))
    if hop.input == MORE and len(loans) > _loans_shown(hop.session.data, page)[1]:
        hop.session.data["page"] = page + 1
        return Goto("balance", push=False)
    return Invalid(t("choose", _lang(hop)))


# -- repay -------------------------------------------------------------------------------


def _loan_list(
    name: str, title: str, loans_of: Callable[[int], list[LoanLine]], then: str
) -> Screen:
    """A screen to pick one of the member's loans (at most 5 listed); the choice goes to
    `data["loan_id"]` and the member on to `then`."""

    def render(hop: Hop) -> str:
        loans = loans_of(hop.session.member_id)[:5]
        options = "\n".join(f"{i}. {loan.loan_no}" for i, loan in enumerate(loans, 1))
        return _with_nav(hop, f"{t(title, _lang(hop))}\n{options}")

    def handle(hop: Hop) -> Step:
        loans = loans_of(hop.session.member_id)[:5]
        if hop.input.isdigit() and 1 <= int(hop.input) <= len(loans):
            hop.session.data["loan_id"] = loans[int(hop.input) - 1].id
            return Goto(then)
        return Invalid(t("choose", _lang(hop)))

    return Screen(name, render, handle, resumable=True)


def repay_entry(hop: Hop) -> Step:
    """Main menu 3: straight to the amount when the member has one loan."""
    loans = _live_loans(hop.session.member_id)
    if not loans:
        return End(t("repay_none", _lang(hop)))
    if len(loans) == 1:
        hop.session.data["loan_id"] = loans[0].id
        return Goto("repay_amount")
    return Goto("repay_loan")


def _repay_amount_render(hop: Hop) -> str:
    loan = db.session.get(Loan, hop.session.data["loan_id"])
    owed, due, _when = _position(loan)
    return _with_nav(
        hop, t("repay_amount", _lang(hop), loan_no=loan.loan_no, owed=_pay(owed), due=_pay(due))
    )


def _pay(amount: Decimal) -> str:
    """An amount to pay as the member can pay it by M-PESA: whole shillings, rounded up
    (2,821.88 due reads KES 2,822; the 0.12 more pays the next installment, and beyond
    the whole debt goes to savings, as every repayment does)."""
    return f"KES {shillings_up(amount):,.0f}"


def _shillings(hop: Hop) -> Decimal | None:
    """The entry as whole shillings (M-PESA moves no cents), or None."""
    try:
        amount = money_input(hop.input)
    except MoneyError:
        return None
    return amount if is_whole_shillings(amount) else None


def _amount_bad(hop: Hop, low: Decimal, high: Decimal) -> Invalid:
    """A wrong amount: the range this screen takes, in words."""
    return Invalid(t("amount_bad", _lang(hop), low=_pay(low), high=_pay(high)))


def _repay_amount(hop: Hop) -> Step:
    """M-PESA's own limits (the payments service's rule) are checked here, before the
    member confirms, not after."""
    amount = _shillings(hop)
    if amount is None or stk_amount_problem(amount) is not None:
        return _amount_bad(hop, MIN_STK_AMOUNT, MAX_STK_AMOUNT)
    hop.session.data["amount"] = str(int(amount))
    return Goto("repay_confirm")


def _repay_confirm_render(hop: Hop) -> str:
    loan = db.session.get(Loan, hop.session.data["loan_id"])
    return t(
        "repay_confirm",
        _lang(hop),
        amount=kes(Decimal(hop.session.data["amount"])),
        loan_no=loan.loan_no,
        phone=hop.request.phone,
    )


def _repay_confirm(hop: Hop) -> Step:
    language = _lang(hop)
    if hop.input == "2":
        return End(t("cancelled", language))
    if hop.input != "1":
        return Invalid(t("choose", language))
    amount = hop.session.data["amount"]
    try:
        payments_request_stk(
            loan_id=hop.session.data["loan_id"],
            amount=amount,
            phone=hop.request.phone,
            channel="ussd",
        )
    except PaymentError as exc:
        db.session.rollback()
        return End(t("repay_refused", language, why=str(exc))[:182])
    return End(t("repay_sent", language, amount=kes(Decimal(amount))))


# -- apply -------------------------------------------------------------------------------


def _offers(hop: Hop) -> tuple[list[tuple[LoanProduct, Decimal]], str | None]:
    """The products this member may take now, each with its limit (the console's own
    eligibility function), and the first reason a product said no."""
    member = _member(hop)
    today = business_today()
    offers: list[tuple[LoanProduct, Decimal]] = []
    reason = None
    products = db.session.scalars(
        select(LoanProduct).where(LoanProduct.active.is_(True)).order_by(LoanProduct.id)
    )
    for product in products:
        eligibility = loan_eligibility(member=member, product=product, as_of=today)
        if eligibility.eligible and eligibility.limit >= max(product.min_amount, Decimal(1)):
            offers.append((product, eligibility.limit))
        elif reason is None:
            reason = eligibility.reason
    return offers, reason


# Three long product names with 7-digit limits fill a screen; a fourth would not fit.
OFFERS_SHOWN = 3


def apply_entry(hop: Hop) -> Step:
    """Main menu 2. A member whose secured application is still short of cover is offered
    to add guarantors to it first (one more hop to a new application, for them only)."""
    if _secured_waiting(hop.session.member_id):
        return Goto("guar_pending")
    return _apply_offers(hop)


def _apply_offers(hop: Hop) -> Step:
    """The offers are worked out once here and kept in the session for the next screens
    (loan_apply checks the limit again, under the member's lock)."""
    offers, reason = _offers(hop)
    if not offers:
        return End(t("apply_none", _lang(hop), why=(reason or "")[:100]))
    hop.session.data["offers"] = [
        [p.id, p.name_in(_lang(hop))[:18], str(limit)] for p, limit in offers[:OFFERS_SHOWN]
    ]
    return Goto("apply_product")


def _apply_product_render(hop: Hop) -> str:
    lines = [
        t("apply_offer", _lang(hop), n=i, name=name, limit=kes(Decimal(limit)))
        for i, (_pid, name, limit) in enumerate(hop.session.data["offers"], 1)
    ]
    return _with_nav(hop, "\n".join(lines))


def _apply_product(hop: Hop) -> Step:
    offers = hop.session.data["offers"]
    if not (hop.input.isdigit() and 1 <= int(hop.input) <= len(offers)):
        return Invalid(t("choose", _lang(hop)))
    product_id, _name, limit = offers[int(hop.input) - 1]
    hop.session.data.update(product_id=product_id, limit=limit)
    return Goto("apply_amount")


def _product(hop: Hop) -> LoanProduct:
    product = db.session.get(LoanProduct, hop.session.data["product_id"])
    assert product is not None
    return product


def _apply_amount_render(hop: Hop) -> str:
    product = _product(hop)
    return _with_nav(
        hop,
        t(
            "apply_amount",
            _lang(hop),
            low=_pay(max(product.min_amount, Decimal(1))),
            high=_pay(Decimal(hop.session.data["limit"])),
        ),
    )


def _apply_amount(hop: Hop) -> Step:
    product = _product(hop)
    amount = _shillings(hop)
    limit = Decimal(hop.session.data["limit"])
    low = max(product.min_amount, Decimal(1))
    if amount is None or amount < low or amount > limit:
        return _amount_bad(hop, low, limit)
    hop.session.data["amount"] = str(int(amount))
    hop.session.data["term"] = product.default_term
    if product.min_term != product.max_term:
        return Goto("apply_term")
    return Goto("apply_confirm")


def _apply_term_render(hop: Hop) -> str:
    product = _product(hop)
    unit = t("months" if product.frequency == "monthly" else "weeks", _lang(hop))
    return _with_nav(
        hop, t("apply_term", _lang(hop), low=product.min_term, high=product.max_term, unit=unit)
    )


def _apply_term(hop: Hop) -> Step:
    product = _product(hop)
    if not (hop.input.isdigit() and product.min_term <= int(hop.input) <= product.max_term):
        return Invalid(t("choose", _lang(hop)))
    hop.session.data["term"] = int(hop.input)
    return Goto("apply_confirm")


def _apply_confirm_render(hop: Hop) -> str:
    product = _product(hop)
    amount = Decimal(hop.session.data["amount"])
    term = int(hop.session.data["term"])
    fee = loan_fee(product, amount)
    schedule = schedule_build(
        principal=amount,
        annual_rate=product.annual_rate,
        installments=term,
        interest_method=product.interest_method,
        amortization=product.amortization,
        frequency=product.frequency,
        multiple_of=product.installment_multiple,
        start_date=business_today(),
    )
    return t(
        "apply_confirm",
        _lang(hop),
        amount=kes(amount),
        fee=kes(fee),
        get=kes(amount - fee),
        installments=t("installments_1" if term == 1 else "installments", _lang(hop), n=term),
        each=kes(schedule.rows[0].total),
    )


def _apply_confirm(hop: Hop) -> Step:
    language = _lang(hop)
    if hop.input == "2":
        return End(t("cancelled", language))
    if hop.input != "1":
        return Invalid(t("choose", language))
    try:
        loan = loan_apply(
            member_id=hop.session.member_id,
            product_id=hop.session.data["product_id"],
            amount=hop.session.data["amount"],
            term=int(hop.session.data["term"]),
            channel="ussd",
            as_of=business_today(),
        )
    except LoanError as exc:
        db.session.rollback()
        return End(t("apply_refused", language, why=str(exc)[:120]))
    if loan.status in ASKING_STATUSES and product_needs_security(loan.product):
        # Submitted: the applicant names guarantors now. Nothing before this screen may be
        # gone back to (confirm again would apply twice): 0 leads to the main menu.
        hop.session.data["loan_id"] = loan.id
        hop.session.stack[:] = ["main"]
        return Goto("guar_who", push=False)
    if loan.status == "approved":
        return End(
            t(
                "apply_approved",
                language,
                loan_no=loan.loan_no,
                amount=kes(loan.principal - loan.fee_amount),
            )
        )
    return End(t("apply_review", language, loan_no=loan.loan_no))


# -- guarantees --------------------------------------------------------------------------
# The applicant asks (right after a secured application, or later from menu 2 or 8); the
# guarantor answers (menu 8). The services hold the rules; the refusals a member can fix
# (an unknown number, their own, someone asked already, an amount) are checked here first
# so they are said in the member's language on the same screen.

GUAR_LISTED = 3  # requests, or own applications, a screen lists (oldest first; more show
# as these are answered)
HELD_PER_PAGE = 2
APPLICANT_NAME = 20  # characters of the applicant's name a guarantor reads (they know them)


def _floor_kes(amount: Decimal) -> str:
    """Cover and free deposits to the shilling below: a screen never overstates them."""
    return f"KES {amount.to_integral_value(rounding=ROUND_FLOOR):,.0f}"


def _loan(loan_id: int) -> Loan:
    loan = db.session.get(Loan, loan_id)
    assert loan is not None  # an id the menus listed; loans are never deleted
    return loan


def _secured_waiting(member_id: int) -> list[LoanLine]:
    """The member's own secured applications still short of cover, guarantors askable."""
    lines = ussd_secured_applications(member_id=member_id, statuses=ASKING_STATUSES)
    return [line for line in lines if not loan_cover(_loan(line.id)).complete]


def _cover_words(loan: Loan) -> dict[str, object]:
    cover = loan_cover(loan)
    return dict(
        loan_no=loan.loan_no,
        min=cover.min_guarantors,
        required=_pay(cover.required),
        covered=_floor_kes(cover.covered),
        asked=_pay(cover.asked),
        need=_pay(max(Decimal(0), cover.required - cover.covered - cover.asked)),
    )


def _guarantor_name(hop: Hop) -> str:
    guarantor = db.session.get(Member, hop.session.data["guarantor_id"])
    return mask_name(guarantor.name if guarantor else "")


def _guar_pending_render(hop: Hop) -> str:
    waiting = _secured_waiting(hop.session.member_id)[:GUAR_LISTED]
    lines = [
        f"{i}. {t('guar_pending', _lang(hop), loan_no=line.loan_no)}"
        for i, line in enumerate(waiting, 1)
    ]
    return _with_nav(hop, "\n".join([*lines, t("guar_new_loan", _lang(hop))]))


def _guar_pending(hop: Hop) -> Step:
    if hop.input == "9":
        return _apply_offers(hop)
    waiting = _secured_waiting(hop.session.member_id)[:GUAR_LISTED]
    if hop.input.isdigit() and 1 <= int(hop.input) <= len(waiting):
        hop.session.data["loan_id"] = waiting[int(hop.input) - 1].id
        return Goto("guar_who")
    return Invalid(t("choose", _lang(hop)))


def _guar_who_render(hop: Hop) -> str:
    words = _cover_words(_loan(hop.session.data["loan_id"]))
    return _with_nav(hop, t("guar_who", _lang(hop), **words))


def _guar_who(hop: Hop) -> Step:
    language = _lang(hop)
    loan = _loan(hop.session.data["loan_id"])
    if loan.status not in ASKING_STATUSES:
        return End(t("guar_closed", language, loan_no=loan.loan_no))
    guarantor = guarantor_find(hop.input)
    if guarantor is None:
        return Invalid(t("guar_unknown", language))
    if guarantor.id == loan.member_id:
        return Invalid(t("guar_self", language))
    if ussd_guarantee_live(loan_id=loan.id, guarantor_id=guarantor.id):
        return Invalid(t("guar_asked", language, name=mask_name(guarantor.name)))
    hop.session.data["guarantor_id"] = guarantor.id  # a member id, not a secret
    return Goto("guar_confirm")


def _guar_confirm(hop: Hop) -> Step:
    if hop.input == "1":
        return Goto("guar_amount")
    if hop.input == "2":
        hop.session.data.pop("guarantor_id", None)
        if hop.session.stack and hop.session.stack[-1] == "guar_who":
            hop.session.stack.pop()
        return Goto("guar_who", push=False)
    return Invalid(t("choose", _lang(hop)))


def _guar_amount_render(hop: Hop) -> str:
    words = _cover_words(_loan(hop.session.data["loan_id"]))
    return _with_nav(
        hop, t("guar_amount", _lang(hop), name=_guarantor_name(hop), need=words["need"])
    )


def _guar_amount(hop: Hop) -> Step:
    language = _lang(hop)
    loan = _loan(hop.session.data["loan_id"])
    amount = _shillings(hop)
    # The service's own bound (a guarantee is at most the loan), asked before it is.
    if amount is None or amount < 1 or amount > loan.principal:
        return _amount_bad(hop, Decimal(1), loan.principal)
    guarantor_id = hop.session.data["guarantor_id"]
    try:
        guarantee_request(
            loan_id=loan.id,
            guarantor_id=guarantor_id,
            amount=amount,
            actor=f"member:{_member(hop).member_no}",
        )
    except GuaranteeError as exc:
        db.session.rollback()
        loan = _loan(loan.id)
        if loan.status not in ASKING_STATUSES:
            return End(t("guar_closed", language, loan_no=loan.loan_no))
        if ussd_guarantee_live(loan_id=loan.id, guarantor_id=guarantor_id):
            # Asked meanwhile (another session, or staff): back to the number screen.
            if hop.session.stack and hop.session.stack[-1] == "guar_confirm":
                hop.session.stack.pop()
            if hop.session.stack and hop.session.stack[-1] == "guar_who":
                hop.session.stack.pop()
            hop.session.screen = "guar_who"
            return Invalid(t("guar_asked", language, name=_guarantor_name(hop)))
        return End(t("guar_not_asked", language, why=str(exc)[:120]))
    hop.session.data["amount"] = str(int(amount))
    hop.session.stack[:] = ["main"]  # asked: going back would only ask again
    return Goto("guar_added", push=False)


def _guar_added_render(hop: Hop) -> str:
    words = _cover_words(_loan(hop.session.data["loan_id"]))
    amount = _pay(Decimal(hop.session.data["amount"]))
    # No "0 Back 00 Home" line here (both still work): the cover needs the room.
    return t("guar_added", _lang(hop), amount=amount, **words)


def _guar_added(hop: Hop) -> Step:
    if hop.input == "1":
        hop.session.data.pop("guarantor_id", None)
        return Goto("guar_who", push=False)
    if hop.input == "2":
        loan = _loan(hop.session.data["loan_id"])
        return End(t("guar_done", _lang(hop), loan_no=loan.loan_no))
    return Invalid(t("choose", _lang(hop)))


def _waiting(hop: Hop) -> list[Guarantee]:
    return guarantees_waiting(hop.session.member_id, today=business_today())[:GUAR_LISTED]


def _guar_menu_render(hop: Hop) -> str:
    """Main menu 8: the requests waiting are listed here, so answering one is the request
    and then the PIN (or 2): three hops after the session's PIN, counting this one."""
    language = _lang(hop)
    waiting = _waiting(hop)
    lines = [t("guar_menu_head" if waiting else "guar_menu_none", language)]
    lines += [f"{i}. {g.loan.loan_no} {_pay(g.amount)}" for i, g in enumerate(waiting, 1)]
    lines.append(t("guar_menu_held", language))
    if _secured_waiting(hop.session.member_id):
        lines.append(t("guar_menu_mine", language))
    return _with_nav(hop, "\n".join(lines))


def _guar_menu(hop: Hop) -> Step:
    waiting = _waiting(hop)
    if hop.input.isdigit() and 1 <= int(hop.input) <= len(waiting):
        hop.session.data["guarantee_id"] = waiting[int(hop.input) - 1].id
        return Goto("guar_request")
    if hop.input == "4":
        hop.session.data["page"] = 0
        return Goto("guar_held")
    if hop.input == "5":
        mine = _secured_waiting(hop.session.member_id)
        if len(mine) == 1:
            hop.session.data["loan_id"] = mine[0].id
            return Goto("guar_who")
        if mine:
            return Goto("guar_loan")
    return Invalid(t("choose", _lang(hop)))


def _guarantee(hop: Hop) -> Guarantee:
    guarantee = db.session.get(Guarantee, hop.session.data["guarantee_id"])
    assert guarantee is not None  # an id the menu listed; guarantees are never deleted
    return guarantee


def _guar_request_render(hop: Hop) -> str:
    guarantee = _guarantee(hop)
    loan = guarantee.loan
    return _with_nav(
        hop,
        t(
            "guar_request",
            _lang(hop),
            name=loan.member.name[:APPLICANT_NAME].strip(),
            amount=_pay(guarantee.amount),
            loan_no=loan.loan_no,
            free=_floor_kes(member_deposits(hop.session.member_id).free),
        ),
    )


def _guar_request(hop: Hop) -> Step:
    """The PIN accepts (pledging deposits is confirmed as a payment would be), 2 declines
    (it pledges nothing). An entry that cannot be a PIN costs no try."""
    language = _lang(hop)
    member_id = hop.session.member_id
    guarantee_id = hop.session.data["guarantee_id"]
    if hop.input == "2":
        try:
            guarantee = guarantee_decline(
                guarantee_id=guarantee_id, guarantor_id=member_id, via="ussd"
            )
        except GuaranteeError:
            db.session.rollback()
            return End(_answer_refused(hop))
        return End(t("guar_declined", language, **_answer_words(guarantee)))
    if not (len(hop.input) == 4 and hop.input.isdigit()):
        return Invalid(t("guar_pin_or_2", language))
    try:
        ok = member_check_pin(member_id=member_id, pin=hop.input, now=utcnow())
    except PinLocked as exc:
        return End(_locked_text(exc.until, language))
    if not ok:
        return Invalid(t("pin_wrong", language, left=_tries_left(hop)))
    try:
        guarantee = guarantee_accept(guarantee_id=guarantee_id, guarantor_id=member_id, via="ussd")
    except GuaranteeError:
        db.session.rollback()
        return End(_answer_refused(hop))
    return End(t("guar_accepted", language, **_answer_words(guarantee)))


def _answer_words(guarantee: Guarantee) -> dict[str, object]:
    loan = guarantee.loan
    first = loan.member.name.split()[0][:20] if loan.member.name.split() else ""
    return dict(amount=_pay(guarantee.amount), loan_no=loan.loan_no, name=first)


def _answer_refused(hop: Hop) -> str:
    """Why the service said no, in the member's words: the request is no longer open
    (answered, withdrawn, expired, the loan decided), else the free deposits are short
    (the one other refusal guarantee_accept makes, under the member's lock)."""
    guarantee = _guarantee(hop)
    still_open = (
        guarantee.status == "requested"
        and guarantee.expires_on >= business_today()
        and guarantee.loan.status in PENDING_STATUSES
    )
    if not still_open:
        return t("guar_gone", _lang(hop))
    free = member_deposits(hop.session.member_id).free
    return t("guar_short", _lang(hop), free=_floor_kes(free), amount=_pay(guarantee.amount))


def _guar_held_render(hop: Hop) -> str:
    language = _lang(hop)
    page = int(hop.session.data.get("page", 0))
    held = guarantees_held(hop.session.member_id)
    free = member_deposits(hop.session.member_id).free
    lines = [t("guar_held_head", language, free=_floor_kes(free))]
    for one in held[page * HELD_PER_PAGE : (page + 1) * HELD_PER_PAGE]:
        lines.append(
            t(
                "guar_held_line",
                language,
                loan_no=one.loan_no,
                name=_short_name(one.borrower_name),
                exposure=_pay(one.exposure),
            )
        )
    if not held:
        lines.append(t("guar_held_none", language))
    if len(held) > (page + 1) * HELD_PER_PAGE:
        lines.append(t("more", language))
    return _with_nav(hop, "\n".join(lines))


def _guar_held(hop: Hop) -> Step:
    page = int(hop.session.data.get("page", 0))
    if (
        hop.input == MORE
        and len(guarantees_held(hop.session.member_id)) > (page + 1) * HELD_PER_PAGE
    ):
        hop.session.data["page"] = page + 1
        return Goto("guar_held", push=False)
    return Invalid(t("choose", _lang(hop)))


def _short_name(name: str) -> str:
    """ "Wanjiku Achieng Otieno" -> "Wanjiku A.": who the borrower is, in a line's room."""
    parts = name.split()
    if not parts:
        return ""
    first = parts[0][:12].rstrip("-")
    return f"{first} {parts[-1][0]}." if len(parts) > 1 else first


# -- promise to pay ----------------------------------------------------------------------


def promise_entry(hop: Hop) -> Step:
    late = _late_loans(hop.session.member_id)
    if len(late) == 1:
        hop.session.data["loan_id"] = late[0].id
        return Goto("promise_date")
    return Goto("promise_loan")


def _promise_date_render(hop: Hop) -> str:
    last = business_today() + timedelta(days=MAX_DAYS_AHEAD)
    return _with_nav(hop, t("promise_date", _lang(hop), last=last.strftime("%d%m")))


def _promise_date(hop: Hop) -> Step:
    """DDMM (no "/" on many keypads): the next such date from tomorrow, up to 14 days."""
    today = business_today()
    entry = hop.input
    if len(entry) == 4 and entry.isdigit():
        for year in (today.year, today.year + 1):
            try:
                day = date(year, int(entry[2:]), int(entry[:2]))
            except ValueError:
                break
            if today < day <= today + timedelta(days=MAX_DAYS_AHEAD):
                hop.session.data["promise_date"] = day.isoformat()
                return Goto("promise_amount")
    return Invalid(t("promise_date_bad", _lang(hop)))


def _promise_amount_render(hop: Hop) -> str:
    loan = db.session.get(Loan, hop.session.data["loan_id"])
    _owed, due, _when = _position(loan)
    most = promise_ceiling(loan_id=loan.id)
    return _with_nav(
        hop,
        t("promise_amount", _lang(hop), loan_no=loan.loan_no, due=_pay(due), most=_pay(most)),
    )


def _promise_amount(hop: Hop) -> Step:
    """The promise's rule (promises.promise_problem, as SMS and the desk use it) is asked
    here, so a member over the ceiling retypes it; promise_record asks again at confirm."""
    language = _lang(hop)
    loan = db.session.get(Loan, hop.session.data["loan_id"])
    amount = _shillings(hop)
    if amount is None:
        return _amount_bad(hop, Decimal(1), promise_ceiling(loan_id=loan.id))
    problem = promise_problem(
        loan=loan,
        member_id=hop.session.member_id,
        promised_date=date.fromisoformat(hop.session.data["promise_date"]),
        as_of=business_today(),
        amount=amount,
    )
    if problem is not None:
        if problem[0] == "too_much":  # the same rule's words, cut to fit above the screen
            return Invalid(t("promise_too_much", language, most=f"KES {problem[1]['most']}"))
        words = promise_problem_words(problem, language)
        return End(t("promise_refused", language, why=words[:120]))
    hop.session.data["amount"] = str(int(amount))
    return Goto("promise_confirm")


def _promise_confirm_render(hop: Hop) -> str:
    loan = db.session.get(Loan, hop.session.data["loan_id"])
    return t(
        "promise_confirm",
        _lang(hop),
        amount=_pay(Decimal(hop.session.data["amount"])),
        loan_no=loan.loan_no,
        date=_short_date(date.fromisoformat(hop.session.data["promise_date"])),
    )


def _promise_confirm(hop: Hop) -> Step:
    if hop.input == "2":
        return End(t("cancelled", _lang(hop)))
    if hop.input != "1":
        return Invalid(t("choose", _lang(hop)))
    amount = Decimal(hop.session.data["amount"])
    try:
        promise_record(
            member_id=hop.session.member_id,
            loan_id=hop.session.data["loan_id"],
            amount=amount,
            promised_date=date.fromisoformat(hop.session.data["promise_date"]),
            as_of=business_today(),
            channel="ussd",
        )
    except PromiseError as exc:
        db.session.rollback()
        why = promise_problem_words(exc.problem, _lang(hop)) if exc.problem else str(exc)
        return End(t("promise_refused", _lang(hop), why=why[:120]))
    return End(t("promise_done", _lang(hop), amount=_pay(amount)))


# -- savings and shares (menu 9) ---------------------------------------------------------
# Save: an M-PESA prompt into deposits or a savings account (the payments service's STK
# "deposit"); Withdraw: to M-PESA from a withdrawable account, the PIN again as for any
# money out (the withdrawals service holds the rules: minimum balance, daily limit, fee,
# holds); Buy shares: from free deposits with the PIN, or by M-PESA prompt; My dividends:
# this year's and last year's posted runs. The account chosen is kept in the session as
# what the screens show (product, account, name, number): no secret, no re-read.

# Accounts a list offers: deposits and savings products; with a name of 18 characters and
# a 10-character number, three fit under the title with an error line above.
ACCOUNTS_LISTED = 3
ACCOUNT_NAME = 18  # characters of a product's name a line shows


def sav_entry(hop: Hop) -> Step:
    return Goto("sav_menu")


def _account_choice(line: AccountLine) -> list[Any]:
    return [line.product_id, line.account_id, line.name[:ACCOUNT_NAME], line.number]


def _chosen(hop: Hop) -> tuple[int, int | None, str, str]:
    """The account the member chose (product id, account id or None for a product they
    hold none of yet, name, number); the first of theirs when none is chosen."""
    chosen = hop.session.data.get("account")
    if not chosen:
        first = ussd_accounts(member_id=hop.session.member_id, language=_lang(hop))[0]
        chosen = _account_choice(first)
    product_id, account_id, name, number = chosen
    return int(product_id), account_id, str(name), str(number)


def _accounts_screen(name: str, title: str, then: str) -> Screen:
    """Pick one of the accounts `data["choices"]` lists (put there by the menu); the
    choice goes to `data["account"]`, the member on to `then`."""

    def render(hop: Hop) -> str:
        lines = [t(title, _lang(hop))]
        for i, (_p, _a, label, number) in enumerate(hop.session.data.get("choices", []), 1):
            lines.append(t("account_line", _lang(hop), n=i, name=label, number=number))
        return _with_nav(hop, "\n".join(lines))

    def handle(hop: Hop) -> Step:
        choices = hop.session.data.get("choices", [])
        if hop.input.isdigit() and 1 <= int(hop.input) <= len(choices):
            hop.session.data["account"] = choices[int(hop.input) - 1]
            if then == "wd_amount":
                return _withdraw_from(hop)
            return Goto(then)
        return Invalid(t("choose", _lang(hop)))

    return Screen(name, render, handle, resumable=True)


def _sav_menu(hop: Hop) -> Step:
    member_id, language = hop.session.member_id, _lang(hop)
    if hop.input == "1":
        lines = ussd_accounts(member_id=member_id, language=language, held_only=False)
        # Deposits and savings; shares are bought from menu item 3.
        targets = [a for a in lines if a.kind in ("deposits", "savings")][:ACCOUNTS_LISTED]
        return _choose(hop, targets, "save_account", "save_amount")
    if hop.input == "2":
        held = ussd_accounts(member_id=member_id, language=language)
        targets = [a for a in held if a.withdrawable][:ACCOUNTS_LISTED]
        if not targets:
            return Invalid(t("wd_none", language))
        return _choose(hop, targets, "wd_account", "wd_amount")
    if hop.input == "3":
        return Goto("shares_how")
    if hop.input == "4":
        return Goto("dividends")
    if hop.input == "5":
        return Goto("so_menu")
    return Invalid(t("choose", language))


def _choose(hop: Hop, targets: list[AccountLine], screen: str, then: str) -> Step:
    """Straight on with the one account there is; else the list to pick from."""
    hop.session.data["choices"] = [_account_choice(a) for a in targets]
    if len(targets) == 1:
        hop.session.data["account"] = hop.session.data["choices"][0]
        return _withdraw_from(hop) if then == "wd_amount" else Goto(then)
    return Goto(screen)


def _save_amount_render(hop: Hop) -> str:
    _p, _a, name, number = _chosen(hop)
    return _with_nav(hop, t("save_amount", _lang(hop), name=name, number=number))


def _save_amount(hop: Hop) -> Step:
    amount = _shillings(hop)
    if amount is None or stk_amount_problem(amount) is not None:
        return _amount_bad(hop, MIN_STK_AMOUNT, MAX_STK_AMOUNT)
    hop.session.data["amount"] = str(int(amount))
    return Goto("save_confirm")


def _save_confirm_render(hop: Hop) -> str:
    _p, _a, name, number = _chosen(hop)
    amount = kes(Decimal(hop.session.data.get("amount", "0")))
    return t(
        "save_confirm", _lang(hop), amount=amount, name=name, number=number, phone=hop.request.phone
    )


def _save_confirm(hop: Hop) -> Step:
    language = _lang(hop)
    if hop.input == "2":
        return End(t("cancelled", language))
    if hop.input != "1":
        return Invalid(t("choose", language))
    product_id, account_id, _name, _number = _chosen(hop)
    amount = hop.session.data["amount"]
    try:
        payments_request_deposit_stk(
            member_id=hop.session.member_id,
            account_id=account_id,
            product_id=None if account_id else product_id,
            amount=amount,
            phone=hop.request.phone,
            channel="ussd",
        )
    except PaymentError as exc:
        db.session.rollback()
        return End(t("repay_refused", language, why=str(exc))[:182])
    return End(t("repay_sent", language, amount=kes(Decimal(amount))))


def _withdraw_from(hop: Hop) -> Step:
    """The amount screen, unless nothing can come out of the account now (said in words,
    with the figures that decide it)."""
    _p, account_id, _name, number = _chosen(hop)
    try:
        quote = withdrawal_quote(member_id=hop.session.member_id, account_id=account_id or 0)
    except WithdrawalError as exc:
        return End(t("wd_refused", _lang(hop), why=str(exc)[:120]))
    if quote.available < B2C_MIN_AMOUNT:
        why = t(
            "wd_nothing_why",
            _lang(hop),
            balance=kes(quote.balance),
            min=kes(quote.min_balance),
            fee=kes(quote.fee),
        )
        return End(t("wd_nothing", _lang(hop), number=number, why=why))
    return Goto("wd_amount")


def _quote(hop: Hop) -> WithdrawalQuote | None:
    _p, account_id, _name, _number = _chosen(hop)
    try:
        return withdrawal_quote(member_id=hop.session.member_id, account_id=account_id or 0)
    except WithdrawalError:
        return None


def _wd_amount_render(hop: Hop) -> str:
    _p, _a, name, number = _chosen(hop)
    quote = _quote(hop)
    if quote is None:
        return _with_nav(hop, t("wd_none", _lang(hop)))
    return _with_nav(
        hop,
        t(
            "wd_amount",
            _lang(hop),
            name=name,
            number=number,
            balance=kes(quote.balance),
            available=_floor_kes(quote.available),
            fee=kes(quote.fee),
        ),
    )


def _wd_amount(hop: Hop) -> Step:
    """The service's rules (withdrawal_quote: what is available now, M-PESA's own) are
    asked here, so a wrong amount is retyped; withdrawal_request asks again under lock."""
    quote = _quote(hop)
    if quote is None:
        return End(t("wd_none", _lang(hop)))
    amount = _shillings(hop)
    if amount is None or amount > quote.available or withdrawal_amount_problem(amount) is not None:
        return _amount_bad(hop, B2C_MIN_AMOUNT, quote.available)
    hop.session.data["amount"] = str(int(amount))
    hop.session.data["fee"] = str(quote.fee)
    return Goto("wd_pin")


def _wd_pin_render(hop: Hop) -> str:
    return t(
        "wd_pin",
        _lang(hop),
        amount=kes(Decimal(hop.session.data.get("amount", "0"))),
        phone=hop.request.phone,
        fee=kes(Decimal(hop.session.data.get("fee", "0"))),
    )


def _pin_confirms(hop: Hop) -> Step | None:
    """The PIN typed to confirm money leaving (an entry that cannot be a PIN costs no
    try); None when it is right, else the step to show."""
    language = _lang(hop)
    if hop.input == "2":
        return End(t("cancelled", language))
    if not (len(hop.input) == 4 and hop.input.isdigit()):
        return Invalid(t("pin_or_2_cancel", language))
    try:
        ok = member_check_pin(member_id=hop.session.member_id, pin=hop.input, now=utcnow())
    except PinLocked as exc:
        return End(_locked_text(exc.until, language))
    if not ok:
        return Invalid(t("pin_wrong", language, left=_tries_left(hop)))
    return None


def _wd_pin(hop: Hop) -> Step:
    refused = _pin_confirms(hop)
    if refused is not None:
        return refused
    _p, account_id, _name, _number = _chosen(hop)
    amount = Decimal(hop.session.data["amount"])
    try:
        withdrawal_request(
            member_id=hop.session.member_id,
            account_id=account_id or 0,
            amount=amount,
            channel="ussd",
        )
    except WithdrawalError as exc:
        db.session.rollback()
        return End(t("wd_refused", _lang(hop), why=str(exc)[:150]))
    return End(t("wd_sent", _lang(hop), amount=kes(amount)))


def _shares_line(hop: Hop) -> AccountLine | None:
    held = ussd_accounts(member_id=hop.session.member_id, language=_lang(hop))
    return next((a for a in held if a.kind == "shares"), None)


def _shares_how_render(hop: Hop) -> str:
    shares = _shares_line(hop)
    free = member_deposits(hop.session.member_id).free
    return _with_nav(
        hop,
        t(
            "shares_how",
            _lang(hop),
            shares=kes(shares.balance if shares else Decimal(0)),
            free=_floor_kes(free),
        ),
    )


def _shares_how(hop: Hop) -> Step:
    if hop.input == "1":
        if member_deposits(hop.session.member_id).free < 1:
            return Invalid(t("shares_no_free", _lang(hop)))
        return Goto("shares_amount")
    if hop.input == "2":
        shares = _shares_line(hop)
        if shares is None:
            return Invalid(t("choose", _lang(hop)))
        hop.session.data["account"] = _account_choice(shares)
        return Goto("save_amount")  # an M-PESA prompt into the share account
    return Invalid(t("choose", _lang(hop)))


def _shares_amount_render(hop: Hop) -> str:
    free = member_deposits(hop.session.member_id).free
    return _with_nav(hop, t("shares_amount", _lang(hop), free=_floor_kes(free)))


def _shares_amount(hop: Hop) -> Step:
    free = member_deposits(hop.session.member_id).free.to_integral_value(rounding=ROUND_FLOOR)
    amount = _shillings(hop)
    if amount is None or amount < 1 or amount > free:
        return _amount_bad(hop, Decimal(1), free)
    hop.session.data["amount"] = str(int(amount))
    return Goto("shares_pin")


def _shares_pin(hop: Hop) -> Step:
    refused = _pin_confirms(hop)
    if refused is not None:
        return refused
    member = _member(hop)
    amount = Decimal(hop.session.data["amount"])
    try:
        member_buy_shares(
            member_id=member.id,
            amount=amount,
            # One purchase per session: a resent hop is answered from the session anyway.
            reference=f"ussd:{hop.request.session_id}",
            value_date=business_today(),
            from_savings=True,
            actor=f"member:{member.member_no}",
        )
    except (MemberError, LedgerError) as exc:
        db.session.rollback()
        return End(t("shares_refused", _lang(hop), why=str(exc)[:120]))
    shares = _shares_line(hop)
    return End(
        t(
            "shares_done",
            _lang(hop),
            amount=kes(amount),
            shares=kes(shares.balance if shares else amount),
        )
    )


def _dividends_render(hop: Hop) -> str:
    """This year's and last year's posted runs: gross (dividend and interest on deposits),
    withholding tax, net; a run not yet posted is not shown (its figures may change)."""
    language = _lang(hop)
    year = business_today().year
    posted = [
        d for d in member_dividends(hop.session.member_id, [year, year - 1]) if d.status == "posted"
    ]
    if not posted:
        return _with_nav(hop, t("div_none", language, last=year - 1, year=year))
    lines = [t("div_head", language)]
    for d in posted:
        lines.append(
            t(
                "div_line",
                language,
                year=d.year,
                gross=f"{d.dividend + d.interest:,.2f}",
                tax=f"{d.tax:,.2f}",
                net=f"{d.net:,.2f}",
            )
        )
    return _with_nav(hop, "\n".join(lines))


def _dividends(hop: Hop) -> Step:
    return Invalid(t("choose", _lang(hop)))


# -- standing orders (menu 9, item 5) ----------------------------------------------------
# A member's monthly transfer from their savings to deposits, shares or a loan of theirs,
# or a payday order (a monthly M-PESA prompt into deposits, shares or savings); the
# standing-orders service holds the rules (1 to 28, at most MAX_ACTIVE_ORDERS, the loan
# theirs and open) and the nightly job moves the money. A new order is confirmed with the
# PIN, as money that will leave; cancelling one stops money, so 1/2 confirms it. A
# savings-sourced order always takes part-payments (the service's default): asking would
# cost a hop for a choice few members would change.

SO_LISTED = 3  # orders the standing-orders screen lists (the oldest first)
# The cancel screen lists all of them (up to MAX_ACTIVE_ORDERS): three when that is all
# there are, else two a page and "98 More" (three with that line would not fit).
SO_PER_PAGE = 2
SO_LOANS = 3  # live loans the "pays into" screen offers after deposits and shares
# What each kind of order may pay into, as the "pays into" screen numbers them (loans of
# a savings-sourced order follow).
SO_TARGETS = {"savings": ("deposits", "shares"), "mpesa": ("deposits", "shares", "savings")}


def _so_orders(member_id: int | None) -> list[tuple[int, str, str, int | None, Decimal, int, str]]:
    """The member's active orders, oldest first: (id, source, target, loan_id, amount, day,
    loan_no or "")."""
    rows = db.session.execute(
        select(
            StandingOrder.id,
            StandingOrder.source,
            StandingOrder.target,
            StandingOrder.loan_id,
            StandingOrder.amount,
            StandingOrder.day_of_month,
            Loan.loan_no,
        )
        .outerjoin(Loan, Loan.id == StandingOrder.loan_id)
        .where(StandingOrder.member_id == member_id, StandingOrder.status == "active")
        .order_by(StandingOrder.id)
    ).all()
    return [(r[0], r[1], r[2], r[3], r[4], r[5], r[6] or "") for r in rows]


def _so_what(target: str, loan_no: str, language: str) -> str:
    if target == "loan":
        return loan_no
    return t("so_list_savings" if target == "savings" else f"so_to_{target}", language)


def _so_line(source: str, target: str, loan_no: str, amount: Decimal, day: int, lang: str) -> str:
    """One order as a list shows it: whole shillings (an order set at the desk with cents
    shows them on the cancel screen)."""
    return t(
        "so_line_mpesa" if source == "mpesa" else "so_line",
        lang,
        amount=f"{amount:,.0f}",
        what=_so_what(target, loan_no, lang),
        day=day,
    )


def _so_listed(hop: Hop) -> list[list[Any]]:
    """The member's orders as the screens list them ([id, line]); kept in the session by
    Cancel so the number picked names the order the member read."""
    language = _lang(hop)
    return [
        [oid, _so_line(source, target, loan_no, amount, day, language)]
        for oid, source, target, _l, amount, day, loan_no in _so_orders(hop.session.member_id)
    ]


def _so_menu_render(hop: Hop) -> str:
    listed = _so_listed(hop)[:SO_LISTED]
    if not listed:
        return _with_nav(hop, t("so_none", _lang(hop)))
    return _with_nav(hop, "\n".join([*(line for _id, line in listed), t("so_actions", _lang(hop))]))


def _so_menu(hop: Hop) -> Step:
    language = _lang(hop)
    orders = _so_orders(hop.session.member_id)
    if hop.input == "1":
        if len(orders) >= MAX_ACTIVE_ORDERS:
            return Invalid(t("so_full", language, most=MAX_ACTIVE_ORDERS))
        for key in ("so_source", "so_target", "so_amount", "so_day"):
            hop.session.data.pop(key, None)
        return Goto("so_source")
    if hop.input == "2" and orders:
        listed = _so_listed(hop)
        hop.session.data["so_listed"] = listed
        hop.session.data["so_page"] = 0
        if len(listed) == 1:  # straight on with the one there is
            hop.session.data["so_order"] = listed[0]
            return Goto("so_cancel_confirm")
        return Goto("so_cancel")
    return Invalid(t("choose", language))


def _so_source(hop: Hop) -> Step:
    source = {"1": "savings", "2": "mpesa"}.get(hop.input)
    if source is None:
        return Invalid(t("choose", _lang(hop)))
    hop.session.data["so_source"] = source
    return Goto("so_target")


def _so_choices(hop: Hop) -> list[list[Any]]:
    """What the order may pay into, numbered as shown: [target, loan_id, what]."""
    language = _lang(hop)
    source = hop.session.data.get("so_source", "savings")
    choices: list[list[Any]] = [
        [target, None, t(f"so_to_{target}", language)] for target in SO_TARGETS[source]
    ]
    if source == "savings":
        for loan in _live_loans(hop.session.member_id)[:SO_LOANS]:
            choices.append(["loan", loan.id, loan.loan_no])
    return choices


def _so_target_render(hop: Hop) -> str:
    language = _lang(hop)
    lines = [t("so_target", language)]
    for i, (target, _loan, what) in enumerate(_so_choices(hop), 1):
        key = "so_choice_loan" if target == "loan" else "so_choice"
        lines.append(t(key, language, n=i, what=what.capitalize() if target != "loan" else what))
    return _with_nav(hop, "\n".join(lines))


def _so_target(hop: Hop) -> Step:
    choices = _so_choices(hop)
    if not (hop.input.isdigit() and 1 <= int(hop.input) <= len(choices)):
        return Invalid(t("choose", _lang(hop)))
    hop.session.data["so_target"] = choices[int(hop.input) - 1]
    return Goto("so_amount")


def _so_amount_render(hop: Hop) -> str:
    return _with_nav(
        hop, t("so_amount", _lang(hop), low=_pay(MIN_STK_AMOUNT), high=_pay(MAX_STK_AMOUNT))
    )


def _so_amount(hop: Hop) -> Step:
    """Whole shillings within one M-PESA payment's limits: a payday prompt can ask no more,
    and an order from savings keeps to the same range (more is set at the desk)."""
    amount = _shillings(hop)
    if amount is None or stk_amount_problem(amount) is not None:
        return _amount_bad(hop, MIN_STK_AMOUNT, MAX_STK_AMOUNT)
    hop.session.data["so_amount"] = str(int(amount))
    return Goto("so_day")


def _so_day(hop: Hop) -> Step:
    if not (hop.input.isdigit() and len(hop.input) <= 2 and 1 <= int(hop.input) <= 28):
        return Invalid(t("so_day_bad", _lang(hop)))
    hop.session.data["so_day"] = int(hop.input)
    return Goto("so_pin")


def _so_words(hop: Hop) -> dict[str, object]:
    _target, _loan, what = hop.session.data.get("so_target") or ["deposits", None, ""]
    return {
        "amount": kes(Decimal(hop.session.data.get("so_amount", "0"))),
        "what": what,
        "day": hop.session.data.get("so_day", 1),
    }


def _so_pin_render(hop: Hop) -> str:
    mpesa = hop.session.data.get("so_source") == "mpesa"
    return t("so_pin_mpesa" if mpesa else "so_pin", _lang(hop), **_so_words(hop))


def _so_pin(hop: Hop) -> Step:
    refused = _pin_confirms(hop)
    if refused is not None:
        return refused
    language = _lang(hop)
    member = _member(hop)
    data = hop.session.data
    target, loan_id, _what = data["so_target"]
    source = data["so_source"]
    try:
        standing_order_create(
            member_id=member.id,
            target=target,
            amount=data["so_amount"],
            day_of_month=int(data["so_day"]),
            actor=f"member:{member.member_no}",
            loan_id=loan_id,
            channel="ussd",
            source=source,
        )
    except StandingOrderError as exc:
        db.session.rollback()
        return End(t("so_refused", language, why=str(exc)[:120]))
    return End(t("so_done_mpesa" if source == "mpesa" else "so_done", language, **_so_words(hop)))


def _so_shown(hop: Hop) -> tuple[int, int, bool]:
    """The orders this page of the cancel screen shows (start, end) and whether more
    follow; numbered through all pages, so a number always names the same order."""
    count = len(hop.session.data.get("so_listed", []))
    if count <= SO_LISTED:
        return 0, count, False
    start = int(hop.session.data.get("so_page", 0)) * SO_PER_PAGE
    end = min(start + SO_PER_PAGE, count)
    return start, end, end < count


def _so_cancel_render(hop: Hop) -> str:
    listed = hop.session.data.get("so_listed", [])
    start, end, more = _so_shown(hop)
    lines = [t("so_cancel_which", _lang(hop))]
    for i in range(start, end):
        lines.append(f"{i + 1}. {listed[i][1]}")
    if more:
        lines.append(t("more", _lang(hop)))
    return _with_nav(hop, "\n".join(lines))


def _so_cancel(hop: Hop) -> Step:
    listed = hop.session.data.get("so_listed", [])
    start, end, more = _so_shown(hop)
    if hop.input == MORE and more:
        hop.session.data["so_page"] = int(hop.session.data.get("so_page", 0)) + 1
        return Goto("so_cancel", push=False)
    if not (hop.input.isdigit() and start < int(hop.input) <= end):
        return Invalid(t("choose", _lang(hop)))
    hop.session.data["so_order"] = listed[int(hop.input) - 1]
    return Goto("so_cancel_confirm")


def _so_cancel_confirm_render(hop: Hop) -> str:
    _id, line = hop.session.data.get("so_order") or [0, ""]
    return t("so_cancel_confirm", _lang(hop), line=line)


def _so_cancel_confirm(hop: Hop) -> Step:
    language = _lang(hop)
    if hop.input == "2":
        return End(t("cancelled", language))
    if hop.input != "1":
        return Invalid(t("choose", language))
    member = _member(hop)
    order_id, _line = hop.session.data["so_order"]
    try:
        standing_order_cancel(
            order_id=int(order_id), actor=f"member:{member.member_no}", member_id=member.id
        )
    except StandingOrderError as exc:
        db.session.rollback()
        return End(t("so_cancel_refused", language, why=str(exc)[:120]))
    return End(t("so_cancelled", language))


# -- statement, language -----------------------------------------------------------------


def _statement_render(hop: Hop) -> str:
    """The last 5 movements, short enough for a screen: day/month, account, amount
    (the SMS statement carries the full form)."""
    language = _lang(hop)
    labels = STATEMENT_LABELS.get(language, STATEMENT_LABELS["en"])
    lines = [
        f"{line.value_date:%d/%m} {labels[line.account]} "
        f"{'+' if line.amount > 0 else '-'}{abs(line.amount):,.2f}"
        for line in member_statement(member_id=hop.session.member_id, limit=5)
    ] or [labels["none"]]
    return _with_nav(hop, "\n".join([*lines, t("statement_more", language)]))


def _statement(hop: Hop) -> Step:
    if hop.input != "1":
        return Invalid(t("choose", _lang(hop)))
    member = _member(hop)
    balances = member_balances(member_id=member.id)
    notify_statement(
        member=member,
        lines=statement_lines(member.id, member.language),
        savings=balances.savings,
        shares=balances.share_capital,
        loan_balance=balances.loan_total,
        request_id=f"ussd:{hop.request.session_id}",
    )
    db.session.commit()
    return End(t("statement_sent", _lang(hop)))


def _language(hop: Hop) -> Step:
    choice = {"1": "en", "2": "sw"}.get(hop.input)
    if choice is None:
        return Invalid(t("choose", _lang(hop)))
    member_set_language(member_id=hop.session.member_id, language=choice)
    hop.session.language = choice
    hop.session.stack.clear()
    return Goto("main", push=False)


SCREENS: dict[str, Screen] = {
    s.name: s
    for s in (
        Screen("activate", _activate_render, _activate, authed=False, navigable=False),
        Screen("new_pin", _new_pin_render, _new_pin, authed=False, navigable=False),
        Screen(
            "confirm_pin",
            lambda h: t("confirm_pin", _lang(h)),
            _confirm_pin,
            authed=False,
            navigable=False,
        ),
        Screen("pin", lambda h: t("pin", _lang(h)), _pin, authed=False, navigable=False),
        Screen(
            "forgot_id",
            lambda h: t("forgot_id", _lang(h)),
            _forgot_id,
            authed=False,
            navigable=False,
        ),
        Screen("forgot_code", _forgot_code_render, _forgot_code, authed=False, navigable=False),
        Screen("resume", lambda h: t("resume", _lang(h)), _resume, navigable=False),
        Screen("main", _main_render, _main),
        Screen("balance", _balance_render, _balance),
        _loan_list("repay_loan", "repay_choose", _live_loans, then="repay_amount"),
        Screen("repay_amount", _repay_amount_render, _repay_amount, resumable=True),
        Screen("repay_confirm", _repay_confirm_render, _repay_confirm, resumable=True),
        Screen("apply_product", _apply_product_render, _apply_product, resumable=True),
        Screen("apply_amount", _apply_amount_render, _apply_amount, resumable=True),
        Screen("apply_term", _apply_term_render, _apply_term, resumable=True),
        Screen("apply_confirm", _apply_confirm_render, _apply_confirm, resumable=True),
        Screen("guar_pending", _guar_pending_render, _guar_pending),
        _loan_list("guar_loan", "guar_choose", _secured_waiting, then="guar_who"),
        Screen("guar_who", _guar_who_render, _guar_who, resumable=True),
        Screen(
            "guar_confirm",
            lambda h: _with_nav(h, t("guar_confirm", _lang(h), name=_guarantor_name(h))),
            _guar_confirm,
            resumable=True,
        ),
        Screen("guar_amount", _guar_amount_render, _guar_amount, resumable=True),
        Screen("guar_added", _guar_added_render, _guar_added),
        Screen("guar_menu", _guar_menu_render, _guar_menu),
        Screen("guar_request", _guar_request_render, _guar_request, resumable=True),
        Screen("guar_held", _guar_held_render, _guar_held),
        _loan_list("promise_loan", "promise_choose", _late_loans, then="promise_date"),
        Screen("promise_date", _promise_date_render, _promise_date, resumable=True),
        Screen("promise_amount", _promise_amount_render, _promise_amount, resumable=True),
        Screen("promise_confirm", _promise_confirm_render, _promise_confirm, resumable=True),
        Screen("sav_menu", lambda h: _with_nav(h, t("sav_menu", _lang(h))), _sav_menu),
        _accounts_screen("save_account", "save_which", then="save_amount"),
        Screen("save_amount", _save_amount_render, _save_amount, resumable=True),
        Screen("save_confirm", _save_confirm_render, _save_confirm, resumable=True),
        _accounts_screen("wd_account", "wd_which", then="wd_amount"),
        Screen("wd_amount", _wd_amount_render, _wd_amount, resumable=True),
        Screen("wd_pin", _wd_pin_render, _wd_pin, resumable=True),
        Screen("shares_how", _shares_how_render, _shares_how),
        Screen("shares_amount", _shares_amount_render, _shares_amount, resumable=True),
        Screen(
            "shares_pin",
            lambda h: t(
                "shares_pin", _lang(h), amount=kes(Decimal(h.session.data.get("amount", "0")))
            ),
            _shares_pin,
            resumable=True,
        ),
        Screen("dividends", _dividends_render, _dividends),
        Screen("so_menu", _so_menu_render, _so_menu),
        Screen("so_source", lambda h: _with_nav(h, t("so_source", _lang(h))), _so_source),
        Screen("so_target", _so_target_render, _so_target, resumable=True),
        Screen("so_amount", _so_amount_render, _so_amount, resumable=True),
        Screen("so_day", lambda h: _with_nav(h, t("so_day", _lang(h))), _so_day, resumable=True),
        Screen("so_pin", _so_pin_render, _so_pin, resumable=True),
        Screen("so_cancel", _so_cancel_render, _so_cancel, resumable=True),
        Screen("so_cancel_confirm", _so_cancel_confirm_render, _so_cancel_confirm, resumable=True),
        Screen("statement", _statement_render, _statement),
        Screen("language", lambda h: t("language", _lang(h)), _language),
    )
}
SCREENS.update(PHONE_SCREENS)
