"""The loan book upload page: templates, an upload checked row by row in a preview that
imports nothing, then the import `sacco import loan-book` runs."""

from __future__ import annotations

import csv
import gc
import html
import importlib
import io
import re
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.cli.runtime import make_worker
from app.extensions import db
from app.models import AuditLog, Loan, LoanBookPreview, StaffUser
from app.services.loan_import import ARREARS_JOB, COLUMNS, loan_book_read
from tests.helpers import browse as _browse
from tests.helpers import csrf_token, login, make_app, staff
from tests.loan_factories import make_product

PAGE = "/admin/loan-book/"
AS_OF = "2026-11-21"
HEADER = ",".join(COLUMNS)
GOOD = "CUST-0001,Wanjiku Kamau,0711223344,DEV,50000.00,12,36,2025-06-15,active"
GOOD_2 = "CUST-0002,Otieno Ochieng,0722334455,Instant Loan,2000,90,1,28/02/2026,arrears"
BAD = "CUST-0003,Njeri Wambui,0733445566,NOPE,30000,12,12,2026-01-10,active"


@pytest.fixture
def uploads(app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The instance folder of this test alone: uploads land in it."""
    monkeypatch.setattr(app, "instance_path", str(tmp_path))
    make_product("DEV")
    make_product("INSTANT")
    return tmp_path / "loan-book-uploads"


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    db.session.commit()  # SQLite: the test's read transaction would hold the write lock
    return _browse(client, path, method, **kwargs)


def signed_in(app: Flask, role: str = "branch_manager") -> FlaskClient:
    client = app.test_client()
    db.session.commit()
    login(client, staff(role))
    return client


def upload(client: FlaskClient, lines: list[str] | bytes, name: str = "book.csv", **form: str):  # noqa: ANN201
    body = lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode()
    db.session.commit()
    return browse(
        client,
        f"{PAGE}upload",
        "POST",
        data={
            "csrf_token": csrf_token(client),
            "as_of": AS_OF,
            "file": (io.BytesIO(body), name),
            **form,
        },
        content_type="multipart/form-data",
    )


def confirm(client: FlaskClient, preview: str, **form: str):  # noqa: ANN201
    token = re.search(r"/preview/([A-Za-z0-9_-]{22})", preview).group(1)  # type: ignore[union-attr]
    db.session.commit()
    return browse(
        client,
        f"{PAGE}import/{token}",
        "POST",
        data={"csrf_token": csrf_token(client), "as_of": AS_OF, **form},
        follow_redirects=True,
    )


def loans() -> int:
    db.session.commit()
    return db.session.scalar(select(func.count()).select_from(Loan)) or 0


def previews() -> int:
    db.session.commit()
    return db.session.scalar(select(func.count()).select_from(LoanBookPreview)) or 0


def words(page: str) -> str:
    """A page's text as a person reads it: tags dropped, spaces collapsed."""
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())
    return re.sub(r" ([,.;:])", r"\1", text)  # "</span>," reads as ","


def preview_of(client: FlaskClient, reply) -> tuple[str, str]:  # noqa: ANN001
    assert reply.status_code == 302, reply.get_data(as_text=True)[:300]
    location = reply.headers["Location"]
    page = browse(client, location)
    assert page.status_code == 200
    return location, html.unescape(page.get_data(as_text=True))


def test_the_preview_shows_a_bad_rows_error_in_words_and_imports_nothing(
    app: Flask, uploads: Path
) -> None:
    client = signed_in(app)
    location, page = preview_of(client, upload(client, [HEADER, GOOD, BAD]))

    assert "2 rows: 1 ready to import, 0 imported before (skipped), 1 with problems" in words(page)
    line_3 = re.search(r'<tr id="line-3"[^>]*>(.*?)</tr>', page, re.S).group(1)  # type: ignore[union-attr]
    assert "unknown product 'NOPE'" in line_3
    assert ">ok<" in re.search(r'<tr id="line-2"[^>]*>(.*?)</tr>', page, re.S).group(1)  # type: ignore[union-attr]
    assert loans() == 0  # a preview writes nothing
    # Kept for the import in the database (every web replica sees it), not on this disk.
    assert previews() == 1 and not uploads.exists()

    # Confirming without leaving the bad row out imports nothing either.
    refused = html.unescape(confirm(client, location).get_data(as_text=True))
    assert "1 bad row(s): nothing imported" in refused
    assert loans() == 0

    done = html.unescape(confirm(client, location, skip_bad="1").get_data(as_text=True))
    assert "imported 1 loan (1 member created)" in done
    assert loans() == 1
    loan = db.session.scalar(select(Loan))
    assert (loan.principal, loan.channel, loan.status) == (Decimal("50000.00"), "import", "active")
    refusal, audit = db.session.scalars(
        select(AuditLog).where(AuditLog.action == "loan_book.import").order_by(AuditLog.id)
    ).all()
    assert refusal.after["written"] is False and refusal.after["imported"] == 0
    assert audit.actor == "staff:branch.manager@sacco.test" and audit.object_id == "book.csv"
    assert audit.after["imported"] == 1 and audit.after["bad_rows"] == 1
    assert previews() == 0  # imported: the preview is gone


def test_a_clean_book_imports_every_loan_and_a_second_upload_creates_nothing_twice(
    app: Flask, uploads: Path
) -> None:
    client = signed_in(app)
    location, page = preview_of(client, upload(client, [HEADER, GOOD, GOOD_2]))
    assert "2 ready to import" in words(page) and 'name="skip_bad"' not in page
    assert "imported 2 loans (2 members created)" in html.unescape(
        confirm(client, location).get_data(as_text=True)
    )
    assert loans() == 2

    _, again = preview_of(client, upload(client, [HEADER, GOOD, GOOD_2]))
    assert "0 ready to import, 2 imported before (skipped)" in words(again)
    assert "imported before; skipped" in again
    assert loans() == 2


def test_a_file_without_the_columns_is_refused_in_words(app: Flask, uploads: Path) -> None:
    client = signed_in(app)
    reply = upload(client, ["Customer,Amount", "C1,100"])
    page = html.unescape(browse(client, reply.headers["Location"], follow_redirects=True).text)
    assert "Cannot use this file: missing columns: Customer ID, Name" in page
    assert previews() == 0


def test_a_file_too_big_or_of_another_kind_is_refused(app: Flask, uploads: Path) -> None:
    client = signed_in(app)
    big = (HEADER + "\n").encode() + (GOOD + "\n").encode() * 80_000  # about 5.8 MB
    # The body built by hand: the test client would spool it to a file it never closes.
    boundary = "sacco-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
            f"{csrf_token(client)}\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        + big
        + f"\r\n--{boundary}--\r\n".encode()
    )
    reply = browse(
        client,
        f"{PAGE}upload",
        "POST",
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    assert reply.status_code == 302
    page = browse(client, reply.headers["Location"]).get_data(as_text=True)
    assert "The file is larger than 5 MB." in page
    other = upload(client, b"%PDF-1.4", name="book.pdf")
    assert "a loan book is a .csv or .xlsx file" in html.unescape(
        browse(client, other.headers["Location"]).get_data(as_text=True)
    )
    assert not uploads.exists() or list(uploads.iterdir()) == []


def test_the_templates_have_the_columns_the_import_reads(app: Flask, uploads: Path) -> None:
    client = signed_in(app)
    reply = browse(client, f"{PAGE}template.csv")
    assert reply.status_code == 200 and reply.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(reply.get_data(as_text=True))))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 3

    xlsx = browse(client, f"{PAGE}template.xlsx")
    assert xlsx.status_code == 200 and xlsx.mimetype.endswith("spreadsheetml.sheet")
    path = uploads.parent / "template.xlsx"
    path.write_bytes(xlsx.get_data())
    read = loan_book_read(path=path)
    assert [r.values["Phone"] for r in read] == ["0700000001", "0700000002"]  # leading 0 kept

    # Both templates, uploaded as they come, are good books.
    _, page = preview_of(client, upload(client, xlsx.get_data(), name="template.xlsx"))
    assert "2 ready to import" in words(page) and "0 with problems" in words(page)


def test_a_loan_officer_gets_403_on_the_page_and_the_upload(app: Flask, uploads: Path) -> None:
    client = signed_in(app, "loan_officer")
    assert browse(client, PAGE).status_code == 403
    assert browse(client, f"{PAGE}template.csv").status_code == 403
    assert upload(client, [HEADER, GOOD]).status_code == 403
    assert not uploads.exists()
    assert loans() == 0


def test_an_import_without_the_csrf_token_imports_nothing(app: Flask, uploads: Path) -> None:
    client = signed_in(app)
    location, _ = preview_of(client, upload(client, [HEADER, GOOD]))
    token = location.split("/preview/")[1].split("?")[0]
    page = browse(
        client, f"{PAGE}import/{token}", "POST", data={"as_of": AS_OF}, follow_redirects=True
    )
    assert "The form expired" in page.get_data(as_text=True)
    assert loans() == 0
    bare = browse(
        client,
        f"{PAGE}upload",
        "POST",
        data={"as_of": AS_OF, "file": (io.BytesIO(b"x"), "b.csv")},
        content_type="multipart/form-data",
    )
    assert bare.status_code == 302 and previews() == 1


# --- limits: a book is refused in words before it costs a worker its memory ---------------

SHEET_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"


PACKAGE = {
    "[Content_Types].xml": (
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        '<Override PartName="/xl/sharedStrings.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>'
    ),
    "_rels/.rels": (
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>'
    ),
    "xl/workbook.xml": (
        f'<workbook xmlns="{SHEET_NS}" xmlns:r="http://schemas.openxmlformats.org/'
        'officeDocument/2006/relationships"><sheets>'
        '<sheet name="Loan book" sheetId="1" r:id="rId1"/></sheets></workbook>'
    ),
    "xl/_rels/workbook.xml.rels": (
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/worksheet" Target="worksheets/sheet1.xml"/>'
        '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/sharedStrings" Target="sharedStrings.xml"/></Relationships>'
    ),
}


def xlsx(sheet_data: Iterator[bytes], strings: Iterator[bytes], dimension: str = "") -> bytes:
    """A workbook whose sheet and shared strings are streamed into the zip as given, as a
    crafted file would be: nothing the size of what it unpacks to is held here."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for name, text in PACKAGE.items():
            target.writestr(name, text)
        with target.open("xl/worksheets/sheet1.xml", "w") as part:
            part.write(f'<worksheet xmlns="{SHEET_NS}">{dimension}<sheetData>'.encode())
            for chunk in sheet_data:
                part.write(chunk)
            part.write(b"</sheetData></worksheet>")
        with target.open("xl/sharedStrings.xml", "w") as part:
            part.write(f'<sst xmlns="{SHEET_NS}">'.encode())
            for chunk in strings:
                part.write(chunk)
            part.write(b"</sst>")
    return out.getvalue()


def test_the_crafted_workbooks_are_workbooks(tmp_path: Path) -> None:
    """The builder below makes files openpyxl reads (so the limits, not a broken zip, are
    what refuses them)."""
    path = tmp_path / "small.xlsx"
    row = (
        b'<row r="2">' + b"".join(f'<c t="s"><v>{i}</v></c>'.encode() for i in range(9)) + b"</row>"
    )
    path.write_bytes(xlsx(iter([header_row(), row]), header_strings()))
    (read,) = loan_book_read(path=path)
    assert read.values["Customer ID"] == "Customer ID" and read.line == 2


def header_strings() -> Iterator[bytes]:
    for column in COLUMNS:
        yield f"<si><t>{column}</t></si>".encode()


def header_row() -> bytes:
    cells = "".join(f'<c t="s"><v>{index}</v></c>' for index in range(len(COLUMNS)))
    return f'<row r="1">{cells}</row>'.encode()


def measured_upload(client: FlaskClient, body: bytes, name: str) -> tuple[str, int, float]:
    """Upload through the console's route; the page it lands on, the peak of memory the
    upload and that page allocated (tracemalloc) and how long they took."""
    db.session.commit()
    token = csrf_token(client)
    # The body built by hand: the test client would spool a big file to one it never closes.
    boundary = "sacco-test-boundary"
    form = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
        for key, value in (("csrf_token", token), ("as_of", AS_OF))
    )
    data = (
        (
            f'{form}--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + body
        + f"\r\n--{boundary}--\r\n".encode()
    )
    gc.collect()
    # Already tracing (PYTHONTRACEMALLOC=…) counts from the process start: measure from here.
    already = tracemalloc.is_tracing()
    tracemalloc.start()
    baseline, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    started = time.perf_counter()
    try:
        reply = browse(
            client,
            f"{PAGE}upload",
            "POST",
            data=data,
            content_type=f"multipart/form-data; boundary={boundary}",
        )
        assert reply.status_code == 302
        # The page it lands on is measured too: a preview parsed there would show here.
        landed = browse(client, reply.headers["Location"]).get_data(as_text=True)
        _, peak = tracemalloc.get_traced_memory()
        peak -= baseline
    finally:
        if not already:
            tracemalloc.stop()
    took = time.perf_counter() - started
    page = html.unescape(landed)
    return words(page), peak, took


def test_a_zip_bomb_is_refused_in_words_before_it_is_unpacked(app: Flask, uploads: Path) -> None:
    client = signed_in(app)
    megabyte = b"A" * (1024 * 1024)

    def huge_string() -> Iterator[bytes]:
        yield from header_strings()
        yield b"<si><t>"
        for _ in range(400):
            yield megabyte
        yield b"</t></si>"

    row = b'<row r="2"><c t="s"><v>9</v></c></row>'  # a cell showing the 400 MB string
    bomb = xlsx(iter([header_row(), row]), huge_string())
    assert len(bomb) < 1024 * 1024  # about 400 KB on the wire

    page, peak, took = measured_upload(client, bomb, "bomb.xlsx")

    print(f"\nzip bomb ({len(bomb):,} bytes): refused in {took:.3f} s, peak {peak / 2**20:.1f} MB")
    assert (
        "Cannot use this file: bomb.xlsx unpacks to 400 MB, more than the 25 MB a loan book "
        "may hold (about 20,000 loans); split it into smaller books" in page
    )
    assert peak < 16 * 1024 * 1024  # the request's own allocations: the upload, not 400 MB
    assert previews() == 0 and loans() == 0


def test_a_million_row_sheet_is_refused_in_words_before_it_is_parsed(
    app: Flask, uploads: Path
) -> None:
    client = signed_in(app)

    def million_rows() -> Iterator[bytes]:
        yield header_row()
        for start in range(2, 1_000_002, 10_000):
            yield "".join(
                f'<row r="{n}"><c t="s"><v>0</v></c></row>' for n in range(start, start + 10_000)
            ).encode()

    sheet = xlsx(million_rows(), header_strings())
    assert len(sheet) < 5 * 1024 * 1024  # under the upload limit: it reaches the parser

    page, peak, took = measured_upload(client, sheet, "million.xlsx")

    print(
        f"\nmillion rows ({len(sheet):,} bytes): refused in {took:.3f} s, "
        f"peak {peak / 2**20:.1f} MB"
    )
    assert re.search(
        r"Cannot use this file: million\.xlsx unpacks to \d+ MB, more than the 25 MB a loan "
        r"book may hold",
        page,
    ), page
    assert peak < 16 * 1024 * 1024
    assert previews() == 0


def test_a_book_of_more_loans_than_the_cap_is_refused_while_it_is_read(
    app: Flask, uploads: Path
) -> None:
    client = signed_in(app)
    rows = [HEADER] + [
        f"CUST-{n},Name {n},07{n:08d},DEV,50000,12,36,2025-06-15,active" for n in range(20_001)
    ]
    page, peak, took = measured_upload(client, ("\n".join(rows) + "\n").encode(), "long.csv")
    print(f"\n20,001-row CSV: refused in {took:.3f} s, peak {peak / 2**20:.1f} MB")
    assert (
        "Cannot use this file: the book has more than 20,000 loans (the most one upload may "
        "hold); split it into smaller books" in page
    )

    # A sheet that declares a million rows (its <dimension>) is refused before it is read.
    declared = xlsx(
        iter([header_row(), b'<row r="1048576"><c t="s"><v>0</v></c></row>']),
        header_strings(),
        dimension='<dimension ref="A1:I1048576"/>',
    )
    page, _, took = measured_upload(client, declared, "declared.xlsx")
    print(f"declared 1,048,576 rows: refused in {took:.3f} s")
    assert "declared.xlsx: the sheet runs to row 1,048,576, more than a book of 20,000" in page

    # Without a <dimension>, the empty rows up to a far row are counted as they are read.
    gap = xlsx(
        iter([header_row(), b'<row r="1048576"><c t="s"><v>0</v></c></row>']), header_strings()
    )
    page, _, took = measured_upload(client, gap, "gap.xlsx")
    print(f"a row at 1,048,576: refused in {took:.3f} s")
    assert "the book runs past line 40,000 (blank lines too)" in page
    assert previews() == 0 and loans() == 0


def test_the_preview_is_parsed_once_and_any_web_replica_serves_it_and_its_import(
    app: Flask, uploads: Path, _urls: dict[str, str]
) -> None:
    client = signed_in(app)
    book = [HEADER] + [
        f"CUST-{n:04d},Member {n},07{n:08d},DEV,50000,12,36,2025-06-15,active" for n in range(150)
    ]
    location, page = preview_of(client, upload(client, book + [BAD]))
    assert "151 rows: 150 ready to import, 0 imported before (skipped), 1 with problems" in (
        words(page)
    )
    assert not uploads.exists()  # the file is not kept on this server's disk

    # A second web server (its own instance folder, the same database) shows the pages.
    other = make_app(_urls)
    other_client = other.test_client()
    other_client.set_cookie("session", client.get_cookie("session").value, domain="localhost")
    try:
        with other.app_context():
            second = other_client.get(
                f"{location}&page=2" if "?" in location else f"{location}?page=2"
            )
            assert second.status_code == 200
            text = words(html.unescape(second.get_data(as_text=True)))
            assert "page 2 of 2" in text and "CUST-0149" in text and "CUST-0000" not in text
            bad = other_client.get(f"{location.split('?')[0]}?show=bad").get_data(as_text=True)
            assert "unknown product 'NOPE'" in html.unescape(bad) and "CUST-0001" not in bad
    finally:
        # Else its pooled connections are collected open, in whichever test runs then.
        with other.app_context():
            db.session.remove()
            db.engine.dispose()
        other.extensions["redis"].close()
    done = html.unescape(confirm(client, location, skip_bad="1").get_data(as_text=True))
    assert "imported 150 loans (150 members created)" in done
    assert loans() == 150 and previews() == 0


def test_a_loan_imported_in_arrears_is_late_on_the_dashboard_at_once_and_has_an_officer(
    app: Flask, uploads: Path
) -> None:
    client = signed_in(app)
    location, _ = preview_of(client, upload(client, [HEADER, GOOD, GOOD_2]))
    done = html.unescape(confirm(client, location).get_data(as_text=True))
    assert "imported 2 loans" in done
    assert "Days late and penalties of the 1 loan(s) in arrears are being brought up" in done
    # The job the import queued after its commit: the nightly rule, for these loans.
    db.session.commit()
    make_worker(("default",)).work(burst=True)
    db.session.remove()

    late = db.session.scalar(select(Loan).where(Loan.principal == Decimal("2000.00")))
    assert late is not None
    # Instant Loan of 28/02/2026 for one month: due 28/03, late on 21/11 by 238 days.
    assert (late.days_past_due, late.aging_bucket, late.in_default) == (238, "90+", True)
    manager = db.session.scalar(select(StaffUser).where(StaffUser.role == "branch_manager"))
    assert manager is not None
    # No DEFAULT_LOAN_OFFICER: the staff member who imported follows the loans up.
    assert {loan.officer_id for loan in db.session.scalars(select(Loan))} == {manager.id}
    db.session.commit()
    dashboard = words(html.unescape(browse(client, "/admin/").get_data(as_text=True)))
    par30 = re.search(r"PAR30 ([\d.]+)%", dashboard)
    assert par30 is not None and Decimal(par30.group(1)) > 0, dashboard[:400]


def test_the_arrears_job_the_import_queues_resolves() -> None:
    module, name = ARREARS_JOB.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), name))
