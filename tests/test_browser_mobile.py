"""The console on a phone: a branch manager at 390 x 844 CSS pixels (an iPhone 12-14's
screen) works the applications queue and reads a member's page and a loan's page without
the page scrolling sideways. Wide tables scroll inside their own box or stack into cards;
buttons fit the screen.

The check is the browser's own measure of the page, `scrollWidth` of the document, which
grows past 390 the moment anything on the page is wider than the screen. Screenshots go
to screenshots/ (or $SACCO_SCREENSHOTS) for a person to look at.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from flask import Flask

from app.clock import business_today
from app.extensions import db
from app.services.loans import loan_apply
from tests.factories import make_member
from tests.helpers import browser_sign_in, chromium_page, screenshot, staff
from tests.loan_factories import JOINED, make_loan, make_product

WIDTH, HEIGHT = 390, 844


def page_width(page: object) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))  # type: ignore[attr-defined]


def test_the_applications_queue_and_the_member_page_fit_a_390_px_phone(
    app: Flask, live_url: str
) -> None:
    from playwright.sync_api import Page, expect

    email = staff("branch_manager")
    # A member with a long name and history: a running late loan, applications waiting
    # (one above the product's maker-checker threshold, so its warning shows).
    member = make_member(
        name="Wanjiku Nyambura Kamau-Odhiambo", phone="0733445566", savings=Decimal(60000)
    )
    member.created_at = JOINED
    product = make_product("V1", maker_checker_threshold=Decimal("20000"))
    loan_id = make_loan(
        product=product, on=business_today() - timedelta(days=70), member=member, amount=10000
    ).id
    others = [make_member(name=f"Applicant {n}", savings=Decimal(50000)) for n in range(3)]
    for other in others:
        other.created_at = JOINED
    db.session.commit()
    for n, other in enumerate(others):
        loan_apply(
            member_id=other.id,
            product_id=product.id,
            amount=5000 if n else 30000,
            as_of=date(2026, 3, 2),
        )
    member_id = member.id
    db.session.commit()

    with chromium_page(width=WIDTH, height=HEIGHT) as page_:
        page: Page = page_
        browser_sign_in(page, live_url, email)
        expect(page.get_by_text(f"Signed in as {email}")).to_be_attached()

        widths = {}
        for name, path, ready in (
            ("mobile-applications", "/admin/applications/", "#applications"),
            ("mobile-member", f"/admin/member/details/?id={member_id}", "#balances"),
            ("mobile-loan", f"/admin/loan/details/?id={loan_id}", "#loan-summary"),
        ):
            page.goto(f"{live_url}{path}")
            expect(page.locator(ready)).to_be_visible()
            screenshot(page, name)
            widths[name] = page_width(page)
        assert all(w <= WIDTH for w in widths.values()), widths

        # The queue's buttons are usable on the phone: approve the small application.
        row = page.locator("#applications tbody tr[id^=application-]").last
        page.goto(f"{live_url}/admin/applications/")
        button = row.locator("form[id^=approve-] button")
        box = button.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, box
