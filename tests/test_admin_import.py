"""The loan book upload page: templates, an upload checked row by row in a preview that
imports nothing, then the import `sacco import loan-book` runs."""

from __future__ import annotations

import csv
import html
import io
import re
from decimal import Decimal
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditLog, Loan
from app.services.loan_import import COLUMNS, loan_book_read
from tests.helpers import browse as _browse
from tests.helpers import csrf_token, login, staff
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
    assert len(list(uploads.iterdir())) == 1  # kept for the import, under the instance folder

    # Confirming without leaving the bad row out imports nothing either.
    refused = html.unescape(confirm(client, location).get_data(as_text=True))
    assert "1 bad row(s): nothing imported" in refused
    assert loans() == 0

    done = html.unescape(confirm(client, location, skip_bad="1").get_data(as_text=True))
    assert "imported 1 loans (1 members created)" in done
    assert loans() == 1
    loan = db.session.scalar(select(Loan))
    assert (loan.principal, loan.channel, loan.status) == (Decimal("50000.00"), "import", "active")
    refusal, audit = db.session.scalars(
        select(AuditLog).where(AuditLog.action == "loan_book.import").order_by(AuditLog.id)
    ).all()
    assert refusal.after["written"] is False and refusal.after["imported"] == 0
    assert audit.actor == "staff:branch.manager@sacco.test" and audit.object_id == "book.csv"
    assert audit.after["imported"] == 1 and audit.after["bad_rows"] == 1
    assert list(uploads.iterdir()) == []  # imported: the upload is gone


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
    assert list(uploads.iterdir()) == []


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
    assert [r.values["Phone"] for r in read] == ["0711223344", "0722334455"]  # leading 0 kept

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
    assert bare.status_code == 302 and len(list(uploads.iterdir())) == 1
