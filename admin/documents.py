"""Documents in the console: upload to a loan, agreement, legal case or member, list an
owner's documents (every version, newest first) and download one, audited.

Any page shows an owner's newest documents and the upload form with

    {% with owner_type='loan', owner_id=loan.id %}
      {% include 'admin_sacco/documents_block.html' %}
    {% endwith %}

The block reads them through the `documents_block(owner_type, owner_id)` template global
registered here, so the including view computes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from flask import Response, flash, redirect, request, url_for
from flask_admin import Admin, BaseView, expose
from flask_login import current_user
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response as BaseResponse

from admin.applications import when
from admin.auth import SecureMixin, TokenForm, require
from app.errors import SaccoError
from app.extensions import db
from app.models import Document, StaffUser
from app.models.recovery import DOCUMENT_OWNERS
from app.services.documents import (
    KINDS,
    MAX_DOCUMENT_BYTES,
    DocumentError,
    document_download,
    document_upload,
    documents_for,
)
from app.services.storage import StorageError

PER_PAGE = 25
BLOCK_SIZE = 10
MAX_MB = MAX_DOCUMENT_BYTES // (1024 * 1024)


@dataclass(frozen=True)
class DocumentsBlock:
    owner_type: str
    owner_id: int
    documents: list[Document]
    total: int
    uploaders: dict[int, str]

    @staticmethod
    def when(moment: datetime | None) -> str:
        return when(moment)


def documents_rules() -> dict[str, object]:
    """What the upload form tells staff (the service enforces it)."""
    return {"kinds": KINDS, "max_mb": MAX_MB}


def _uploaders(documents: list[Document]) -> dict[int, str]:
    """Who uploaded each, in one query for the page."""
    ids = {d.uploaded_by_id for d in documents}
    if not ids:
        return {}
    rows = db.session.execute(db.select(StaffUser.id, StaffUser.email).where(StaffUser.id.in_(ids)))
    return {staff_id: email for staff_id, email in rows}


def documents_block(owner_type: str, owner_id: int) -> DocumentsBlock:
    documents, total = documents_for(
        owner_type=owner_type, owner_id=int(owner_id), per_page=BLOCK_SIZE
    )
    return DocumentsBlock(owner_type, int(owner_id), documents, total, _uploaders(documents))


def _local(target: str | None) -> str | None:
    """Only a path of this console to go back to (never another site)."""
    if (
        target
        and target.startswith("/admin")
        and not target.startswith("//")
        and all(ch.isprintable() and not ch.isspace() and ch != "\\" for ch in target)
    ):
        return target
    return None


class DocumentsView(SecureMixin, BaseView):
    """Every role that may view may list and download; upload is document.upload."""

    permission = "view"

    def _back(self, owner_type: str = "", owner_id: str = "") -> BaseResponse:
        target = _local(request.form.get("next"))
        if target is None and owner_type in DOCUMENT_OWNERS and owner_id.isdigit():
            target = url_for(".index", owner_type=owner_type, owner_id=owner_id)
        return redirect(target or url_for(".index"))

    @expose("/")
    def index(self) -> str:
        owner_type = request.args.get("owner_type", "")
        owner_id = request.args.get("owner_id", type=int)
        page = max(request.args.get("page", 1, type=int) or 1, 1)
        documents: list[Document] = []
        total = 0
        if owner_type in DOCUMENT_OWNERS and owner_id is not None:
            documents, total = documents_for(
                owner_type=owner_type, owner_id=owner_id, page=page, per_page=PER_PAGE
            )
        else:
            owner_type, owner_id = "", None
        return self.render(
            "admin_sacco/documents.html",
            owner_type=owner_type,
            owner_id=owner_id,
            owners=DOCUMENT_OWNERS,
            documents=documents,
            uploaders=_uploaders(documents),
            total=total,
            page=page,
            pages=max((total + PER_PAGE - 1) // PER_PAGE, 1),
            when=when,
        )

    @expose("/upload", methods=("POST",))
    def upload(self) -> BaseResponse | tuple[str, int]:
        # Refuse a big body before it is read (the fields around the file are small).
        request.max_content_length = MAX_DOCUMENT_BYTES + 64 * 1024
        try:
            valid = TokenForm(request.form).validate()
            upload = request.files.get("file")
        except RequestEntityTooLarge:
            flash(f"The file is larger than {MAX_MB} MB.", "error")
            return redirect(_local(request.args.get("next")) or url_for(".index"))
        owner_type = request.form.get("owner_type", "")
        owner_id = request.form.get("owner_id", "")
        if not valid:
            flash("The form expired; please try again.", "error")
            return self._back(owner_type, owner_id)
        refused = require("document.upload", self)
        if refused is not None:
            return refused
        if upload is None or not upload.filename:
            flash("Choose the file to upload.", "error")
            return self._back(owner_type, owner_id)
        data = upload.stream.read(MAX_DOCUMENT_BYTES + 1)
        try:
            if not owner_id.isdigit():
                raise DocumentError("no such owner")
            document = document_upload(
                staff=current_user._get_current_object(),
                owner_type=owner_type,
                owner_id=int(owner_id),
                kind=request.form.get("kind", ""),
                filename=upload.filename,
                data=data,
            )
        except SaccoError as exc:
            db.session.rollback()
            flash(f"{upload.filename} not kept: {exc}.", "error")
        else:
            flash(
                f"Kept {document.filename} as {document.kind.replace('_', ' ')} "
                f"version {document.version}.",
                "success",
            )
        return self._back(owner_type, owner_id)

    @expose("/<int:document_id>/download")
    def download(self, document_id: int) -> BaseResponse | tuple[str, int]:
        try:
            found = document_download(
                document_id=document_id, staff=current_user._get_current_object()
            )
        except (DocumentError, StorageError) as exc:
            db.session.rollback()
            flash(f"Not downloaded: {exc}.", "error")
            return redirect(url_for(".index"))
        document = found.document
        response = Response(found.data, mimetype=document.content_type)
        # Always a download, never shown inline, and the browser must not guess a type.
        response.headers["Content-Disposition"] = (
            f"attachment; filename=\"document-{document.id}\"; filename*=UTF-8''"
            f"{quote(document.filename)}"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "private, no-store"
        return response


def register(console: Admin) -> None:
    console.add_view(
        DocumentsView(name="Documents", category="Recovery", endpoint="documents", url="documents")
    )
    app: Any = console.app
    if app is not None:
        app.add_template_global(documents_block, "documents_block")
        app.add_template_global(documents_rules, "documents_rules")
