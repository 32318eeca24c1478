"""Documents kept for a loan, an agreement, a legal case or a member.

Decisions where the issue is silent:

- The type is read from the file's first bytes (PDF, JPEG, PNG signatures), never from its
  name or the browser's content type: a renamed executable `evil.pdf` starts with MZ or
  ELF and is refused. The name kept for download gets the extension of what the file
  really is, so a PNG uploaded as "letter.pdf" downloads as "letter.png".
- At most 10 MB: a scanned court filing or title deed is well under that.
- A new upload of the same (owner, kind) is the next version; older versions stay. The
  owner's row is locked while the version number is taken, so two uploads at once get 1
  and 2, never the same number twice.
- The bytes are stored first, under a random key; if the database then refuses the row,
  the stored file is deleted again, so no orphan stays behind a failed upload.
- Every download is audited (who, which file, which version) and re-checked against its
  sha256: a file changed on disk is refused rather than served.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from sqlalchemy import func, select
from werkzeug.utils import secure_filename

from app.errors import SaccoError
from app.extensions import db
from app.models import Agreement, Document, LegalCase, Loan, Member, StaffUser
from app.models.recovery import DOCUMENT_OWNERS
from app.services.audit import audit_record
from app.services.locking import lock_row
from app.services.permissions import permission_require
from app.services.storage import document_storage, storage_key

MAX_DOCUMENT_BYTES = 10 * 1024 * 1024

# (leading bytes, content type, extension)
SIGNATURES: tuple[tuple[bytes, str, str], ...] = (
    (b"%PDF-", "application/pdf", ".pdf"),
    (b"\xff\xd8\xff", "image/jpeg", ".jpg"),
    (b"\x89PNG\r\n\x1a\n", "image/png", ".png"),
)
OWNER_MODELS: dict[str, type] = {
    "loan": Loan,
    "agreement": Agreement,
    "case": LegalCase,
    "member": Member,
}
# Suggested kinds (the form offers them); any short name of letters, digits and _ is taken.
KINDS = (
    "agreement",
    "demand_letter",
    "court_filing",
    "hearing_notice",
    "judgment",
    "auctioneer_report",
    "valuation",
    "title_deed",
    "id_copy",
    "board_minute",
    "other",
)
_KIND = re.compile(r"^[a-z0-9_]{1,40}$")


class DocumentError(SaccoError):
    """An upload or download refused; the message says why. Nothing was written."""


def document_sniff(data: bytes) -> tuple[str, str] | None:
    """(content type, extension) of what the bytes are, or None when not PDF, JPEG, PNG."""
    for magic, content_type, extension in SIGNATURES:
        if data.startswith(magic):
            return content_type, extension
    return None


def document_kind(value: str) -> str:
    """A kind as stored: lower case, spaces and dashes as underscores ("Demand letter" ->
    "demand_letter"), so two spellings of one kind are one version line."""
    kind = re.sub(r"[\s-]+", "_", (value or "").strip().lower())
    if not _KIND.match(kind):
        raise DocumentError(
            "the kind is a short name of letters, digits and underscores (at most 40)"
        )
    return kind


def _download_name(filename: str, extension: str) -> str:
    stem = PurePosixPath(secure_filename(filename or "")).stem[:200] or "document"
    return f"{stem}{extension}"


def _owner_label(owner_type: str, owner: Loan | Agreement | LegalCase | Member) -> str:
    # owner is an instance of OWNER_MODELS[owner_type]
    if owner_type == "loan":
        return str(owner)
    if isinstance(owner, Member):
        return owner.member_no or f"member {owner.id}"
    if isinstance(owner, LegalCase):
        return f"case {owner.case_number}"
    return f"agreement {owner.id}"


def document_upload(
    *,
    staff: StaffUser,
    owner_type: str,
    owner_id: int,
    kind: str,
    filename: str,
    data: bytes,
) -> Document:
    """Keep a file for its owner as the next version of its kind; audited."""
    permission_require(staff, "document.upload")
    if owner_type not in DOCUMENT_OWNERS:
        raise DocumentError(f"documents belong to a {', '.join(DOCUMENT_OWNERS)}")
    kind = document_kind(kind)
    if not data:
        raise DocumentError("the file is empty")
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DocumentError(
            f"the file is larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MB "
            f"({len(data) / (1024 * 1024):.1f} MB)"
        )
    sniffed = document_sniff(data)
    if sniffed is None:
        raise DocumentError("only PDF, JPEG and PNG files are kept; this file is none of them")
    content_type, extension = sniffed
    owner = lock_row(OWNER_MODELS[owner_type], owner_id)
    if owner is None:
        db.session.rollback()
        raise DocumentError(f"no {owner_type} {owner_id}")
    version = (
        db.session.scalar(
            select(func.max(Document.version)).where(
                Document.owner_type == owner_type,
                Document.owner_id == owner_id,
                Document.kind == kind,
            )
        )
        or 0
    ) + 1
    key = storage_key()
    store = document_storage()
    try:
        store.put(key, data)
    except OSError as exc:
        db.session.rollback()
        raise DocumentError(f"the file could not be stored ({type(exc).__name__})") from None
    try:
        document = Document(
            owner_type=owner_type,
            owner_id=owner_id,
            kind=kind,
            version=version,
            filename=_download_name(filename, extension),
            content_type=content_type,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            storage_key=key,
            uploaded_by_id=staff.id,
        )
        db.session.add(document)
        db.session.flush()
        audit_record(
            actor=f"staff:{staff.email}",
            action="document.upload",
            object_type=owner_type,
            object_id=_owner_label(owner_type, owner),
            after={
                "document_id": document.id,
                "kind": kind,
                "version": version,
                "filename": document.filename,
                "content_type": content_type,
                "size": document.size,
                "sha256": document.sha256,
            },
        )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        store.delete(key)
        raise
    return document


@dataclass(frozen=True)
class DocumentFile:
    document: Document
    data: bytes


def document_download(*, document_id: int, staff: StaffUser) -> DocumentFile:
    """The stored bytes of one document, checked against its sha256; the download is
    audited (committed before the bytes are handed over)."""
    permission_require(staff, "view")
    document = db.session.get(Document, document_id)
    if document is None:
        raise DocumentError(f"no document {document_id}")
    data = document_storage().get(document.storage_key)
    if hashlib.sha256(data).hexdigest() != document.sha256:
        raise DocumentError("the stored file does not match its checksum; it is not served")
    audit_record(
        actor=f"staff:{staff.email}",
        action="document.download",
        object_type="document",
        object_id=document.id,
        after={
            "owner": f"{document.owner_type}:{document.owner_id}",
            "kind": document.kind,
            "version": document.version,
            "filename": document.filename,
        },
    )
    db.session.commit()
    return DocumentFile(document=document, data=data)


def documents_for(
    *, owner_type: str, owner_id: int, page: int = 1, per_page: int = 10
) -> tuple[list[Document], int]:
    """One owner's documents, newest first (every version), and how many there are."""
    where = (Document.owner_type == owner_type, Document.owner_id == owner_id)
    total = db.session.scalar(select(func.count()).select_from(Document).where(*where)) or 0
    rows = db.session.scalars(
        select(Document)
        .where(*where)
        .order_by(Document.uploaded_at.desc(), Document.id.desc())
        .limit(per_page)
        .offset((max(page, 1) - 1) * per_page)
    )
    return list(rows), total
