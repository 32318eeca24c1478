"""The API's documentation page in a real browser (Debian's chromium through Playwright):
Swagger UI draws every operation of the generated document from files the server itself
serves (no CDN, no validator badge: not one request leaves the server), an operation opens
with its parameters and answers, and the page is kept as screenshot 50-api-docs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from tests.helpers import browse, chromium_page, screenshot


@pytest.fixture
def browser_page() -> Iterator[object]:
    with chromium_page(width=1366, height=900) as page:
        yield page


def test_the_api_docs_load_offline_with_every_operation(
    app: Flask, live_url: str, browser_page: object
) -> None:
    from playwright.sync_api import Page, expect

    page: Page = browser_page  # type: ignore[assignment]
    document = browse(app.test_client(), "/api/v1/openapi.json").get_json()
    operations = [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]
    outside: list[str] = []  # the docs must work offline: nothing leaves the server
    page.on(
        "request",
        lambda r: None if r.url.startswith((live_url, "data:")) else outside.append(r.url),
    )
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))

    page.goto(f"{live_url}/api/v1/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("SACCO integration API")
    expect(page.locator(".opblock").first).to_be_visible()
    # Every operation of the document is drawn, by method and path.
    blocks = page.locator(".opblock")
    expect(blocks).to_have_count(len(operations))
    drawn = {
        (
            blocks.nth(i).locator(".opblock-summary-method").inner_text().strip(),
            blocks.nth(i).locator(".opblock-summary-path").get_attribute("data-path"),
        )
        for i in range(blocks.count())
    }
    assert drawn == set(operations)
    expect(page.get_by_role("button", name="Authorize")).to_be_visible()

    # An operation opens with its parameter and its documented answers.
    member = page.locator('.opblock-get:has([data-path="/api/v1/members/{member_no}"])')
    member.locator(".opblock-summary").first.click()
    expect(member.locator(".parameters")).to_contain_text("member_no")
    expect(member.locator(".responses-table").first).to_contain_text("401")
    expect(member.locator(".responses-table").first).to_contain_text("application/problem+json")
    screenshot(page, "50-api-docs")

    assert outside == []
    assert failed == []
    assert errors == []
