"""The console in a real browser: headless Chromium (Debian's `chromium`, driven by
Playwright, which never downloads a browser of its own) against the app served over HTTP.

A branch manager signs in, reads the dashboard, approves a loan from the applications
queue, opens the member's page, and on the phone page dials *384*96# and gets the PIN
screen. Screenshots of each step go to screenshots/ (or $SACCO_SCREENSHOTS) for a person
to look at. Without chromium the test is skipped, unless SACCO_BROWSER_TEST=required
(.ci/run installs chromium and sets it), where a missing browser is a failure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date

import pytest
from flask import Flask
from sqlalchemy import select

from app.extensions import db
from app.models import Loan, StaffUser
from app.services.loans import loan_apply
from app.services.members import member_set_pin
from tests.helpers import PASSWORD, browser_sign_in, chromium_page, screenshot, staff
from tests.loan_factories import make_application, make_borrower, make_product


@pytest.fixture
def browser_page() -> Iterator[object]:
    with chromium_page(width=1366, height=900) as page:
        yield page


def shot(page: object, name: str) -> None:
    screenshot(page, name)


def test_a_branch_manager_runs_the_sacco_from_the_browser(
    app: Flask, live_url: str, browser_page: object
) -> None:
    from playwright.sync_api import Page, expect

    page: Page = browser_page  # type: ignore[assignment]
    email = staff("branch_manager")
    member = make_borrower(savings=10000)
    member_set_pin(member_id=member.id, pin="4096")
    loan = make_application(member, date(2026, 3, 2))
    loan_id, loan_no, member_id = loan.id, loan.loan_no, member.id
    name, phone = member.name, "0" + member.phone[-9:]
    db.session.commit()
    outside: list[str] = []  # the console must work offline: nothing leaves the server
    page.on(
        "request",
        lambda r: None if r.url.startswith((live_url, "data:")) else outside.append(r.url),
    )

    # Sign in
    page.goto(f"{live_url}/admin/")
    expect(page.get_by_role("heading", name="Staff sign in")).to_be_visible()
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")

    # The dashboard, with its charts drawn from the vendored library
    expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()
    expect(page.get_by_text("PAR30").first).to_be_visible()
    expect(page.locator("canvas").first).to_be_visible()
    shot(page, "01-dashboard")

    # Approve the loan from the applications queue
    page.goto(f"{live_url}/admin/applications/")
    row = page.locator(f"#application-{loan_id}")
    expect(row).to_contain_text(name)
    shot(page, "02-applications")
    page.locator(f"#approve-{loan_id} input[name=reason]").fill("Savings cover the loan")
    page.locator(f"#approve-{loan_id} button").click()
    expect(page.get_by_text(f"{loan_no} approved.")).to_be_visible()
    shot(page, "03-approved")
    db.session.expire_all()
    approved = db.session.get(Loan, loan_id)
    assert approved.status == "approved"
    assert approved.decision_reason == "Savings cover the loan"
    db.session.rollback()  # the test's read ends before the browser's next request

    # The member's page
    page.goto(f"{live_url}/admin/member/details/?id={member_id}")
    expect(page.get_by_text(name).first).to_be_visible()
    expect(page.get_by_text(loan_no).first).to_be_visible()
    shot(page, "04-member")

    # The phone page: dial *384*96# as the member and get the PIN screen
    page.goto(f"{live_url}/admin/phone/")
    page.fill("#phone-number", phone)
    page.click("#dial")
    expect(page.locator("#screen")).to_contain_text("SACCO: enter your PIN:")
    shot(page, "05-phone-pin")
    page.fill("#ussd-input", "4096")
    page.click("#send")
    expect(page.locator("#screen")).to_contain_text("1")  # the main menu's first choice
    shot(page, "06-phone-menu")
    # Cancel hangs up: the page reports the session's end to /ussd/events as the gateway does.
    page.click("#cancel")
    expect(page.locator("#screen")).to_contain_text("Session cancelled.")
    deadline = time.monotonic() + 10
    while not _ussd_event_statuses() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ussd_event_statuses() == ["Incomplete"]

    assert outside == []


def _ussd_event_statuses() -> list[str]:
    from app.models import UssdEvent

    db.session.rollback()
    statuses = [e.status or "" for e in db.session.query(UssdEvent).order_by(UssdEvent.id)]
    db.session.rollback()
    return statuses


def _sign_in(page: object, live_url: str, email: str) -> None:
    browser_sign_in(page, live_url, email)


def test_collections_desk_promise_and_agreement_approval_from_the_browser(
    app: Flask, live_url: str, browser_page: object
) -> None:
    """Issue 12: a loan officer logs a call where the member promises to pay; a branch
    manager approves the compromise agreement the officer drafted; the desk and the
    leaderboard are photographed."""
    from datetime import timedelta
    from decimal import Decimal

    from playwright.sync_api import Page, expect

    from app.clock import business_today
    from app.models import Agreement, ContactLog, PromiseToPay
    from app.selectors.loans import loan_debt
    from app.services.agreements import agreement_draft, agreement_submit
    from tests.loan_factories import make_loan
    from workers.schedule import run_job

    page: Page = browser_page  # type: ignore[assignment]
    officer_email, manager_email = staff("loan_officer"), staff("branch_manager")
    officer = db.session.scalars(select(StaffUser).where(StaffUser.email == officer_email)).one()
    today = business_today()
    # Paid out five months ago and never repaid: in arrears, in default, the officer's.
    loan = make_loan(product=make_product("V1"), on=today - timedelta(days=150))
    loan.officer_id = officer_id = officer.id
    db.session.commit()
    loan_id, loan_no = loan.id, loan.loan_no
    assert run_job("loan-arrears", today) == 0  # the job ends the session: ids, not rows
    officer = db.session.get(StaffUser, officer_id)
    owed = loan_debt(loan_id=loan_id).total
    settlement = (owed * Decimal("0.8")).quantize(Decimal("1"))
    agreement = agreement_draft(
        loan_id=loan_id,
        staff=officer,
        settlement_amount=settlement,
        discount=owed - settlement,
        schedule=[
            (today + timedelta(days=30), settlement - settlement // 2),
            (today + timedelta(days=60), settlement // 2),
        ],
    )
    agreement_submit(agreement_id=agreement.id, staff=officer)
    agreement_id = agreement.id
    db.session.commit()

    # The officer's desk: log a call where the member promises 1,000 in three days
    _sign_in(page, live_url, officer_email)
    page.goto(f"{live_url}/admin/desk/")
    form = page.locator(f"#contact-{loan_id}")
    expect(form).to_be_visible()
    shot(page, "11-officer-desk")
    form.locator("select[name=outcome]").select_option("promised")
    form.locator("input[name=amount]").fill("1000")
    form.locator("input[name=promise_date]").fill((today + timedelta(days=3)).isoformat())
    form.locator("button[type=submit]").click()
    expect(page.locator(".alert-success").first).to_be_visible()
    shot(page, "12-call-logged")
    db.session.expire_all()
    call = db.session.scalars(select(ContactLog).where(ContactLog.loan_id == loan_id)).one()
    promise = db.session.get(PromiseToPay, call.promise_id)
    assert (call.outcome, call.staff_id) == ("promised", officer_id)
    assert (promise.amount, promise.recorded_by_id) == (Decimal("1000.00"), officer_id)
    db.session.rollback()

    # The leaderboard, open to every role
    page.goto(f"{live_url}/admin/desk/leaderboard/")
    expect(page.locator("#leaderboard")).to_be_visible()
    shot(page, "13-leaderboard")
    page.get_by_role("button", name="Sign out").click()

    # The branch manager approves the agreement the officer drafted
    _sign_in(page, live_url, manager_email)
    page.goto(f"{live_url}/admin/agreement/{agreement_id}")
    page.on("dialog", lambda dialog: dialog.accept())
    page.locator("#approve-form button").click()
    expect(page.locator("h3")).to_contain_text("approved")
    shot(page, "14-agreement-approved")
    db.session.expire_all()
    assert db.session.get(Agreement, agreement_id).status == "approved"
    assert loan_no  # the loan the agreement settles


def test_the_loan_pages_guarantors_and_collateral_from_the_browser(
    app: Flask, live_url: str, browser_page: object
) -> None:
    """Issue 19: a loan officer opens a secured application, asks a second guarantor for
    the member and records a vehicle log book; the security block shows the cover, each
    guarantee and the lien, photographed."""
    from datetime import timedelta
    from decimal import Decimal

    from playwright.sync_api import Page, expect

    from app.clock import business_today
    from app.models import Collateral, Guarantee
    from app.services.guarantees import guarantee_accept, guarantee_request

    page: Page = browser_page  # type: ignore[assignment]
    officer_email = staff("loan_officer")
    today = business_today()
    product = make_product(
        "V1",
        code="SEC",
        name="Development",
        min_guarantors=2,
        guarantee_cover=Decimal("100"),
        collateral_allowed=True,
        collateral_haircut=Decimal("40"),
    )
    borrower = make_borrower(savings=10000)
    loan = loan_apply(member_id=borrower.id, product_id=product.id, amount=25000, as_of=today)
    first, second = make_borrower(savings=20000), make_borrower(savings=20000)
    asked = guarantee_request(
        loan_id=loan.id, guarantor_id=first.id, amount=9000, actor="member:test"
    )
    guarantee_accept(guarantee_id=asked.id, guarantor_id=first.id, via="ussd")
    loan_id, second_no, second_id = loan.id, second.member_no, second.id
    first_name, owner = first.name, borrower.name
    db.session.commit()

    _sign_in(page, live_url, officer_email)
    page.goto(f"{live_url}/admin/loan/details/?id={loan_id}")
    block = page.locator("#loan-security")
    expect(block).to_be_visible()
    expect(page.locator("#cover-complete")).to_contain_text("not yet")
    expect(page.locator("#loan-guarantees")).to_contain_text(first_name)

    ask = page.locator("#ask-guarantor")
    ask.locator("input[name=guarantor]").fill(second_no)
    ask.locator("input[name=amount]").fill("6000")
    ask.locator("button[type=submit]").click()
    expect(page.locator(".alert-success").first).to_contain_text("is asked by SMS")

    record = page.locator("#record-collateral")
    record.locator("select[name=kind]").select_option("log_book")
    record.locator("input[name=description]").fill("KDA 123X Toyota Probox")
    record.locator("input[name=owner_name]").fill(owner)
    record.locator("input[name=market_value]").fill("600000")
    record.locator("input[name=forced_sale_value]").fill("10000")
    record.locator("input[name=valued_on]").fill((today - timedelta(days=2)).isoformat())
    record.locator("input[name=valuer]").fill("Regent Valuers")
    record.locator("button[type=submit]").click()
    expect(page.locator(".alert-success").first).to_contain_text("lien registered")
    expect(page.locator("#loan-collateral")).to_contain_text("KDA 123X Toyota Probox")
    page.locator("#loan-security").scroll_into_view_if_needed()
    shot(page, "15-loan-security")

    db.session.expire_all()
    statuses = db.session.scalars(
        select(Guarantee.status).where(Guarantee.guarantor_id == second_id)
    ).all()
    assert statuses == ["requested"]
    [lien] = db.session.scalars(select(Collateral).where(Collateral.loan_id == loan_id)).all()
    assert (lien.kind, lien.lien_status) == ("log_book", "registered")
    db.session.rollback()


def test_a_dividend_run_is_declared_previewed_and_approved_from_the_browser(
    app: Flask, live_url: str, browser_page: object
) -> None:
    """Issue 20: a branch manager declares the AGM's rates and reads the preview; a second
    branch manager, not the declarer, approves the run."""
    from decimal import Decimal

    from playwright.sync_api import Page, expect

    from app.models import DividendRun
    from app.services.members import member_buy_shares, member_deposit
    from app.services.staff import staff_add
    from tests.factories import make_member

    page: Page = browser_page  # type: ignore[assignment]
    maker_email = staff("branch_manager")
    checker_email = "second.manager@sacco.test"
    staff_add(email=checker_email, role="branch_manager", password=PASSWORD)
    # Two members with a year of deposits and shares (2025, the year the AGM declares).
    for n, (deposits, shares) in enumerate([(50000, 20000), (12000, 2000)], 1):
        member = make_member()
        member_deposit(
            member_id=member.id, amount=deposits, reference=f"BD-{n}", value_date=date(2025, 2, 3)
        )
        member_buy_shares(
            member_id=member.id, amount=shares, reference=f"BS-{n}", value_date=date(2025, 2, 4)
        )
    db.session.commit()

    # The maker declares: the form, then the preview with its totals and largest lines
    _sign_in(page, live_url, maker_email)
    page.goto(f"{live_url}/admin/dividends/")
    page.click("#declare-run")
    form = page.locator("#declare-form")
    form.locator("input[name=year]").fill("2025")
    form.locator("input[name=share_rate]").fill("10")
    form.locator("input[name=deposit_rate]").fill("5")
    form.locator("select[name=method]").select_option("simple")
    form.locator("input[name=resolution_ref]").fill("AGM 2026 min. 7")
    shot(page, "21-dividend-declare")
    form.locator("button[type=submit]").click()
    expect(page.locator("#total-members")).to_contain_text("2")
    # Shares 22,000 at 10%; deposits 40,000 at 5%; tax 5% and 15%.
    expect(page.locator("#total-dividend")).to_contain_text("2,200.00")
    expect(page.locator("#total-interest")).to_contain_text("2,000.00")
    expect(page.locator("#total-net")).to_contain_text("3,790.00")
    expect(page.locator("#run-top tbody tr")).to_have_count(2)
    expect(page.locator("#approval-refused")).to_contain_text("You declared this run")
    shot(page, "22-dividend-preview")
    db.session.expire_all()
    run = db.session.scalars(select(DividendRun)).one()
    run_id = run.id
    assert (run.status, run.net) == ("draft", Decimal("3790.00"))
    db.session.rollback()  # the test's read ends before the browser's next request
    page.get_by_role("button", name="Sign out").click()

    # The checker approves
    _sign_in(page, live_url, checker_email)
    page.goto(f"{live_url}/admin/dividends/{run_id}")
    page.on("dialog", lambda dialog: dialog.accept())
    page.locator("#approve-form button").click()
    expect(page.locator("h3")).to_contain_text("approved")
    expect(page.locator("#post-form")).to_be_visible()
    shot(page, "23-dividend-approved")
    db.session.expire_all()
    approved = db.session.get(DividendRun, run_id)
    assert approved.status == "approved" and approved.approved_by.email == checker_email
    db.session.rollback()
