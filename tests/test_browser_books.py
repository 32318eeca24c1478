"""The books in a real browser (issue 21): after a month of activity, a branch manager
reads December's balance sheet compared with the year before, follows a figure down to
its journal lines, and opens SASRA's capital adequacy return for that month end and
downloads it. Screenshots go to screenshots/ (see tests/test_browser.py for the setup:
Debian's chromium driven by Playwright, skipped without it unless required)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from io import BytesIO

import pytest
from flask import Flask
from openpyxl import load_workbook

from app.extensions import db
from app.services.books.statements import balance_sheet
from tests.helpers import browser_sign_in, chromium_page, screenshot, staff
from tests.test_books_month import END, month_of_activity


@pytest.fixture
def browser_page() -> Iterator[object]:
    with chromium_page(width=1366, height=900) as page:
        yield page


def test_the_balance_sheet_and_a_return_from_the_browser(
    app: Flask, live_url: str, browser_page: object
) -> None:
    from playwright.sync_api import Page, expect

    page: Page = browser_page  # type: ignore[assignment]
    month_of_activity()
    sheet = balance_sheet(as_of=END, compare_to=date(2024, 12, 31))
    assets = f"{sheet.totals['assets']:,.2f}"
    db.session.rollback()  # the test's reads end before the browser's requests
    email = staff("branch_manager")

    browser_sign_in(page, live_url, email)
    page.goto(f"{live_url}/admin/books/?kind=bs&as_of={END.isoformat()}&compare=year")
    expect(page.locator("body")).to_contain_text("Statement of financial position")
    expect(page.locator("body")).to_contain_text(assets)
    expect(page.locator("body")).to_contain_text("Loans receivable")
    screenshot(page, "40-books-balance-sheet")

    # A figure links to the journal lines that make it.
    link = page.locator("a[href*='/admin/books/drill']").first
    figure = link.inner_text().strip()
    link.click()
    expect(page.locator("#drill-lines")).to_be_visible()
    expect(page.locator("#drill-figure")).to_contain_text(figure)
    screenshot(page, "41-books-drill-down")

    page.goto(f"{live_url}/admin/regulatory/?month_end={END.isoformat()}&form=capital_adequacy")
    expect(page.locator("body")).to_contain_text("Capital Adequacy")
    expect(page.locator("body")).to_contain_text("Core capital")
    screenshot(page, "42-regulatory-capital-adequacy")

    with page.expect_download() as download:
        page.locator("a[href$='.xlsx']").first.click()
    workbook = load_workbook(BytesIO(download.value.path().read_bytes()))
    assert workbook.sheetnames, "the return downloaded as an empty workbook"
