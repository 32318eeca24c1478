"""Documents (app/services/documents.py, admin/documents.py): the type read from the
content and never from the name, the size cap, versions kept, every download audited and
served as an attachment that the browser must not sniff."""

from __future__ import annotations

import hashlib
import struct
import zlib
from datetime import date
from io import BytesIO
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.extensions import db
from app.models import AuditLog, Document, Loan
from app.services import documents as documents_service
from app.services.documents import (
    MAX_DOCUMENT_BYTES,
    DocumentError,
    document_download,
    document_upload,
    documents_for,
)
from app.services.permissions import PermissionDenied
from app.services.storage import LocalStorage, StorageError
from tests.helpers import browse as _browse
from tests.helpers import csrf_token, login, post_form, staff
from tests.loan_factories import make_loan, make_product, make_staff

PDF = b"%PDF-1.4\n1 0 obj <</Type /Catalog>> endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
EVERYONE = ["loan_officer", "branch_manager", "compliance", "auditor", "admin"]
UPLOADERS = ["loan_officer", "branch_manager", "compliance"]


def png() -> bytes:
    """A real 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


@pytest.fixture
def store(app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStorage:
    """Documents in the test's own folder (the storage interface lets an app plug any
    store in; this is the local one)."""
    local = LocalStorage(tmp_path / "documents")
    monkeypatch.setitem(app.extensions, "document_storage", local)
    return local


def a_loan() -> int:
    return make_loan(product=make_product(), on=date(2026, 1, 31)).id


def upload(owner_id: int, data: bytes, name: str = "scan.pdf", kind: str = "demand_letter"):  # noqa: ANN201
    return document_upload(
        staff=make_staff("loan_officer"),
        owner_type="loan",
        owner_id=owner_id,
        kind=kind,
        filename=name,
        data=data,
    )


# -- type by content ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name", "content_type", "kept_as"),
    [
        (PDF, "demand.pdf", "application/pdf", "demand.pdf"),
        (png(), "photo.png", "image/png", "photo.png"),
        (JPEG, "id copy.jpeg", "image/jpeg", "id_copy.jpg"),
        # The name lies the other way: the content decides, the name follows it.
        (PDF, "scan.png", "application/pdf", "scan.pdf"),
        (png(), "no-extension", "image/png", "no-extension.png"),
    ],
)
def test_pdf_jpeg_and_png_are_kept_by_their_content(app, store, data, name, content_type, kept_as):
    loan_id = a_loan()
    document = upload(loan_id, data, name)
    assert (document.content_type, document.filename, document.version) == (
        content_type,
        kept_as,
        1,
    )
    assert document.size == len(data)
    assert document.sha256 == hashlib.sha256(data).hexdigest()
    assert store.get(document.storage_key) == data
    assert len(document.storage_key) == 32 and "." not in document.storage_key


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 64, "evil.pdf"),
        (b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64, "evil.pdf"),
        (b"#!/bin/sh\nrm -rf /\n", "evil.png"),
        (b"<html><script>alert(1)</script></html>", "evil.jpg"),
        (b" %PDF-1.4 leading space is not a PDF", "almost.pdf"),
        (b"PK\x03\x04 a zip or an office file", "letter.pdf"),
    ],
)
def test_a_renamed_executable_or_other_file_is_refused(app, store, data, name):
    loan_id = a_loan()
    with pytest.raises(DocumentError, match="only PDF, JPEG and PNG files are kept"):
        upload(loan_id, data, name)
    assert db.session.scalars(select(Document)).all() == []
    assert not (store.root.exists() and any(store.root.iterdir()))


def test_the_size_cap(app, store):
    loan_id = a_loan()
    too_big = PDF + b"0" * (MAX_DOCUMENT_BYTES - len(PDF) + 1)
    with pytest.raises(DocumentError, match="larger than 10 MB"):
        upload(loan_id, too_big)
    with pytest.raises(DocumentError, match="the file is empty"):
        upload(loan_id, b"")
    just_fits = PDF + b"0" * (MAX_DOCUMENT_BYTES - len(PDF))
    assert upload(loan_id, just_fits).size == MAX_DOCUMENT_BYTES


def test_owner_and_kind_are_checked(app, store):
    loan_id = a_loan()
    with pytest.raises(DocumentError, match="no loan 999"):
        upload(999, PDF)
    with pytest.raises(DocumentError, match="documents belong to a loan, agreement, case"):
        document_upload(
            staff=make_staff("loan_officer"),
            owner_type="savings",
            owner_id=loan_id,
            kind="other",
            filename="x.pdf",
            data=PDF,
        )
    with pytest.raises(DocumentError, match="letters, digits and underscores"):
        upload(loan_id, PDF, kind="../../etc")
    assert db.session.scalars(select(Document)).all() == []


@pytest.mark.parametrize("role", UPLOADERS)
def test_the_roles_that_upload(app, store, role):
    loan_id = a_loan()
    who = make_staff(role)
    document = document_upload(
        staff=who, owner_type="loan", owner_id=loan_id, kind="other", filename="a.pdf", data=PDF
    )
    assert document.uploaded_by_id == who.id and document.uploaded_at is not None
    row = db.session.scalars(select(AuditLog).where(AuditLog.action == "document.upload")).one()
    assert row.actor == f"staff:{who.email}"
    assert row.after["version"] == 1 and row.after["sha256"] == document.sha256


@pytest.mark.parametrize("role", ["auditor", "admin"])
def test_other_roles_do_not_upload(app, store, role):
    loan_id = a_loan()
    with pytest.raises(PermissionDenied, match="cannot upload documents"):
        document_upload(
            staff=make_staff(role),
            owner_type="loan",
            owner_id=loan_id,
            kind="other",
            filename="a.pdf",
            data=PDF,
        )


# -- versions --------------------------------------------------------------------------------


def test_a_new_upload_of_the_same_kind_is_the_next_version_and_the_old_stays(app, store):
    loan_id = a_loan()
    first = upload(loan_id, PDF, "letter.pdf", kind="demand_letter")
    second = upload(loan_id, png(), "letter-signed.png", kind="Demand letter")
    other = upload(loan_id, JPEG, "deed.jpg", kind="title_deed")
    member_id = db.session.get(Loan, loan_id).member_id
    for_member = document_upload(
        staff=make_staff("compliance"),
        owner_type="member",
        owner_id=member_id,
        kind="demand_letter",
        filename="m.pdf",
        data=PDF,
    )

    assert (first.kind, first.version) == ("demand_letter", 1)
    assert (second.kind, second.version) == ("demand_letter", 2)
    assert (other.version, for_member.version) == (1, 1)
    shown, total = documents_for(owner_type="loan", owner_id=loan_id)
    assert total == 3
    assert [(d.kind, d.version) for d in shown] == [
        ("title_deed", 1),
        ("demand_letter", 2),
        ("demand_letter", 1),
    ]
    # Both versions' bytes are kept.
    assert store.get(first.storage_key) == PDF and store.get(second.storage_key) == png()


def test_a_refused_row_leaves_no_stored_file(app, store, monkeypatch):
    loan_id = a_loan()

    def fail(**kwargs: object) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(documents_service, "audit_record", fail)
    with pytest.raises(RuntimeError):
        upload(loan_id, PDF)
    assert list(store.root.iterdir()) == []
    assert db.session.scalars(select(Document)).all() == []


# -- downloads ---------------------------------------------------------------------------------


def test_a_download_is_audited_and_checked_against_its_checksum(app, store):
    loan_id = a_loan()
    document = upload(loan_id, PDF, "letter.pdf")
    auditor = make_staff("auditor")
    got = document_download(document_id=document.id, staff=auditor)
    assert got.data == PDF
    row = db.session.scalars(select(AuditLog).where(AuditLog.action == "document.download")).one()
    assert (row.actor, row.object_id) == (f"staff:{auditor.email}", str(document.id))
    assert row.after["version"] == 1

    # A file changed on disk is not served.
    (store.root / document.storage_key).write_bytes(PDF + b"tampered")
    with pytest.raises(DocumentError, match="does not match its checksum"):
        document_download(document_id=document.id, staff=auditor)


def test_the_local_store_takes_only_its_own_keys(tmp_path):
    local = LocalStorage(tmp_path)
    for key in ("../../etc/passwd", "a" * 31, "a/b" + "c" * 29, ""):
        with pytest.raises(StorageError, match="not a storage key"):
            local.get(key)
    with pytest.raises(StorageError, match="the stored file is missing"):
        local.get("a" * 32)


# -- the console -------------------------------------------------------------------------------


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    db.session.commit()  # SQLite: the test's read transaction would hold the write lock
    return _browse(client, path, method, **kwargs)


def signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    email = staff(role)
    db.session.commit()
    login(client, email)
    return client


def console_upload(client: FlaskClient, loan_id: int, data: bytes, name: str, **extra: str):  # noqa: ANN201
    db.session.commit()
    return post_form(
        client,
        "/admin/documents/upload",
        {
            "owner_type": "loan",
            "owner_id": str(loan_id),
            "kind": "demand_letter",
            "next": f"/admin/recovery/{loan_id}",
            "file": (BytesIO(data), name, "application/pdf"),
            **extra,
        },
    )


def test_console_upload_then_every_role_downloads(app, store):
    loan_id = a_loan()
    officer = signed_in(app, "loan_officer")
    response = console_upload(officer, loan_id, PDF, "letter.pdf")
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/admin/recovery/{loan_id}")
    page = browse(officer, f"/admin/recovery/{loan_id}").get_data(as_text=True)
    assert "Kept letter.pdf as demand letter version 1." in page
    assert f'id="document-upload-loan-{loan_id}"' in page
    document_id = db.session.scalar(select(Document.id))
    db.session.commit()

    for role in EVERYONE:
        client = officer if role == "loan_officer" else signed_in(app, role)
        got = browse(client, f"/admin/documents/{document_id}/download")
        assert got.status_code == 200, role
        assert got.data == PDF
        assert got.mimetype == "application/pdf"
        assert got.headers["X-Content-Type-Options"] == "nosniff"
        assert got.headers["Content-Disposition"].startswith("attachment;")
        assert "letter.pdf" in got.headers["Content-Disposition"]
    downloads = db.session.scalars(
        select(AuditLog.actor).where(AuditLog.action == "document.download")
    ).all()
    assert len(downloads) == len(EVERYONE)


def test_console_refuses_an_executable_named_pdf_in_words(app, store):
    loan_id = a_loan()
    officer = signed_in(app, "loan_officer")
    elf = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 200
    response = console_upload(officer, loan_id, elf, "evil.pdf")
    assert response.status_code == 302
    page = browse(officer, f"/admin/recovery/{loan_id}").get_data(as_text=True)
    assert "evil.pdf not kept: only PDF, JPEG and PNG files are kept" in page
    assert db.session.scalars(select(Document)).all() == []


def test_console_versions_newest_first_on_the_documents_page(app, store):
    loan_id = a_loan()
    officer = signed_in(app, "branch_manager")
    console_upload(officer, loan_id, PDF, "first.pdf")
    console_upload(officer, loan_id, png(), "second.png")
    page = browse(officer, f"/admin/documents/?owner_type=loan&owner_id={loan_id}").get_data(
        as_text=True
    )
    assert "2 documents, newest first" in page
    assert page.index("second.png") < page.index("first.pdf")
    assert page.index("v2") < page.index("v1")


@pytest.mark.parametrize("role", ["auditor", "admin"])
def test_console_upload_is_403_for_roles_that_may_not(app, store, role):
    loan_id = a_loan()
    client = signed_in(app, role)
    response = console_upload(client, loan_id, PDF, "letter.pdf")
    assert response.status_code == 403
    assert db.session.scalars(select(Document)).all() == []
    denied = db.session.scalars(select(AuditLog).where(AuditLog.action == "access.denied")).one()
    assert denied.after["needs"] == "document.upload"
    page = browse(client, f"/admin/recovery/{loan_id}").get_data(as_text=True)
    assert "document-upload-loan" not in page


def test_console_upload_without_the_csrf_token_keeps_nothing(app, store):
    loan_id = a_loan()
    officer = signed_in(app, "loan_officer")
    response = browse(
        officer,
        "/admin/documents/upload",
        "POST",
        data={
            "owner_type": "loan",
            "owner_id": str(loan_id),
            "kind": "other",
            "file": (BytesIO(PDF), "a.pdf", "application/pdf"),
        },
    )
    assert response.status_code == 302
    assert db.session.scalars(select(Document)).all() == []


def test_console_refuses_a_body_over_the_cap_in_words(app, store):
    loan_id = a_loan()
    officer = signed_in(app, "loan_officer")
    big = PDF + b"0" * (MAX_DOCUMENT_BYTES + 128 * 1024)
    # The body built by hand: the test client would spool it to a file it never closes.
    boundary = "sacco-test-boundary"
    fields = {"csrf_token": csrf_token(officer), "owner_type": "loan", "owner_id": str(loan_id)}
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.pdf"\r\n'
        "Content-Type: application/pdf\r\n\r\n"
    )
    body = head.encode() + big + f"\r\n--{boundary}--\r\n".encode()
    response = browse(
        officer,
        "/admin/documents/upload",
        "POST",
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    assert response.status_code == 302
    page = browse(officer, response.headers["Location"]).get_data(as_text=True)
    assert "The file is larger than 10 MB." in page
    assert db.session.scalars(select(Document)).all() == []
