"""The console in a real browser: headless Chromium (Debian's `chromium`, driven by
Playwright, which never downloads a browser of its own) against the app served over HTTP.

A branch manager signs in, reads the dashboard, approves a loan from the applications
queue, opens the member's page, and on the phone page dials *384*96# and gets the PIN
screen. Screenshots of each step go to screenshots/ (or $SACCO_SCREENSHOTS) for a person
to look at. Without chromium the test is skipped, unless SACCO_BROWSER_TEST=required
(.ci/run installs chromium and sets it), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from flask import Flask

from app.extensions import db
from app.models import Loan
from app.services.loans import loan_apply
from app.services.members import member_set_pin
from tests.helpers import PASSWORD, staff
from tests.loan_factories import make_borrower, make_product

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("SACCO_BROWSER_TEST") == "required"
SHOTS = Path(os.environ.get("SACCO_SCREENSHOTS", "screenshots"))
TIMEOUT_MS = 15_000


@pytest.fixture
def browser_page() -> Iterator[object]:
    if CHROMIUM is None:
        if REQUIRED:
            pytest.fail("SACCO_BROWSER_TEST=required but chromium is not installed")
        pytest.skip("no chromium here (apt-get install chromium) for the browser test")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            # Root in a container has no user namespace for Chromium's sandbox.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def shot(page: object, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def test_a_branch_manager_runs_the_sacco_from_the_browser(
    app: Flask, live_url: str, browser_page: object
) -> None:
    from playwright.sync_api import Page, expect

    page: Page = browser_page  # type: ignore[assignment]
    email = staff("branch_manager")
    member = make_borrower(savings=10000)
    member_set_pin(member_id=member.id, pin="4096")
    loan = loan_apply(
        member_id=member.id,
        product_id=make_product("V1").id,
        amount=5000,
        as_of=date(2026, 3, 2),
    )
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

    assert outside == []
