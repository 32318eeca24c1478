"""The loan book upload page: templates to fill in, an upload, a preview of every row's
check, then the import itself, through the services `sacco import loan-book` uses
(app/services/loan_import.py).

Decisions where the issue is silent:

- The uploaded file is kept between the preview and the import under the instance folder,
  in a folder with a random name (22 URL-safe characters, 128 bits: not guessable), so the
  import reads the very bytes the preview checked; it is deleted after the import, and any
  upload older than a day is deleted at the next upload.
- At most 5 MB: a 10,000-loan CSV is under 1 MB. The limit is set on the request, so a
  bigger body is refused before it is read.
- The preview shows 100 rows a page (every list paginates), with a switch to the rows with
  problems only; the import re-checks the file, as the CLI does, and with bad rows imports
  nothing unless the staff member ticks "leave the bad rows out" (the CLI's --skip-bad).
"""

from __future__ import annotations

import csv
import io
import re
import secrets
import shutil
import time
from datetime import date, datetime
from pathlib import Path

from flask import current_app, flash, redirect, request, send_file, url_for
from flask_admin import Admin, BaseView, expose
from flask_login import current_user
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.utils import secure_filename
from werkzeug.wrappers import Response

from admin.auth import SecureMixin, TokenForm, require
from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db
from app.services.loan_import import (
    COLUMNS,
    TEMPLATE_ROWS,
    LoanBookError,
    loan_book_import_file,
    loan_book_read,
    loan_book_validate,
)

MAX_UPLOAD = 5 * 1024 * 1024
PREVIEW_PAGE = 100
KEEP_SECONDS = 24 * 3600
UPLOADS = "loan-book-uploads"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{22}$")
SUFFIXES = (".csv", ".xlsx")


def _uploads() -> Path:
    return Path(current_app.instance_path) / UPLOADS


def _stored(token: str) -> Path | None:
    """The file kept for `token`, or None (a token never names a path of its own)."""
    if not _TOKEN.match(token):
        return None
    folder = _uploads() / token
    if not folder.is_dir():
        return None
    return next((p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES), None)


def _forget(token: str) -> None:
    if _TOKEN.match(token):
        shutil.rmtree(_uploads() / token, ignore_errors=True)


def _sweep() -> None:
    """Uploads nobody imported: gone after a day, so the folder stays small."""
    root = _uploads()
    if not root.is_dir():
        return
    cutoff = time.time() - KEEP_SECONDS
    for folder in root.iterdir():
        if folder.is_dir() and folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)


def _as_of(value: str | None) -> date | None:
    if not value:
        return business_today()
    try:
        return datetime.strptime(value.strip(), "%Y-%m-%d").date()
    except ValueError:
        return None


class LoanBookView(SecureMixin, BaseView):
    """Only staff who may import open the page (branch managers and admins)."""

    permission = "loan.import"

    @expose("/")
    def index(self) -> str:
        return self.render(
            "admin_sacco/import.html",
            columns=COLUMNS,
            today=business_today().isoformat(),
            max_mb=MAX_UPLOAD // (1024 * 1024),
        )

    @expose("/template.csv")
    def template_csv(self) -> Response:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(TEMPLATE_ROWS)
        return Response(
            out.getvalue(),
            mimetype="text/csv",
            headers={"Content-Disposition": "attachment; filename=loan-book-template.csv"},
        )

    @expose("/template.xlsx")
    def template_xlsx(self) -> Response:
        from openpyxl import Workbook  # only this download pays for openpyxl

        book = Workbook()
        sheet = book.active
        sheet.title = "Loan book"
        sheet.append(COLUMNS)
        for row in TEMPLATE_ROWS:
            sheet.append(list(row))
        # Text cells throughout: Excel would drop a phone's leading 0 from a number cell.
        for cells in sheet.iter_rows():
            for cell in cells:
                cell.number_format = "@"
        out = io.BytesIO()
        book.save(out)
        out.seek(0)
        return send_file(
            out,
            mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            as_attachment=True,
            download_name="loan-book-template.xlsx",
        )

    @expose("/upload", methods=("POST",))
    def upload(self) -> Response | tuple[str, int]:
        back = redirect(url_for(".index"))
        # Refuse a big body before it is read (the form around the file is small).
        request.max_content_length = MAX_UPLOAD + 64 * 1024
        try:
            valid = TokenForm(request.form).validate()
            upload = request.files.get("file")
        except RequestEntityTooLarge:
            flash(f"The file is larger than {MAX_UPLOAD // (1024 * 1024)} MB.", "error")
            return back
        if not valid:
            flash("The form expired; please try again.", "error")
            return back
        refused = require("loan.import", self)
        if refused is not None:
            return refused
        as_of = _as_of(request.form.get("as_of"))
        if as_of is None:
            flash("The as-of date must be YYYY-MM-DD.", "error")
            return back
        name = secure_filename(upload.filename or "") if upload is not None else ""
        if not name:
            flash("Choose the loan book file to upload.", "error")
            return back
        if Path(name).suffix.lower() not in SUFFIXES:
            flash(f"{name}: a loan book is a .csv or .xlsx file.", "error")
            return back
        data = upload.stream.read(MAX_UPLOAD + 1)
        if len(data) > MAX_UPLOAD:
            flash(f"The file is larger than {MAX_UPLOAD // (1024 * 1024)} MB.", "error")
            return back
        if not data:
            flash(f"{name} is empty.", "error")
            return back
        _sweep()
        token = secrets.token_urlsafe(16)
        folder = _uploads() / token
        folder.mkdir(parents=True)
        (folder / name).write_bytes(data)
        return redirect(url_for(".preview", token=token, as_of=as_of.isoformat()))

    @expose("/preview/<token>")
    def preview(self, token: str) -> Response | str:
        path = _stored(token)
        if path is None:
            flash("That upload is gone (imported, or older than a day); upload it again.", "error")
            return redirect(url_for(".index"))
        as_of = _as_of(request.args.get("as_of"))
        if as_of is None:
            flash("The as-of date must be YYYY-MM-DD.", "error")
            return redirect(url_for(".index"))
        try:
            results = loan_book_validate(rows=loan_book_read(path=path), as_of=as_of)
        except LoanBookError as exc:
            db.session.rollback()
            _forget(token)
            flash(f"Cannot use this file: {exc}", "error")
            return redirect(url_for(".index"))
        counts = {
            outcome: sum(1 for r in results if r.outcome == outcome)
            for outcome in ("ok", "imported", "bad")
        }
        only_bad = request.args.get("show") == "bad"
        shown = [r for r in results if r.outcome == "bad"] if only_bad else results
        pages = max((len(shown) + PREVIEW_PAGE - 1) // PREVIEW_PAGE, 1)
        page = min(max(request.args.get("page", 1, type=int) or 1, 1), pages)
        return self.render(
            "admin_sacco/import_preview.html",
            token=token,
            name=path.name,
            as_of=as_of.isoformat(),
            columns=COLUMNS,
            rows=shown[(page - 1) * PREVIEW_PAGE : page * PREVIEW_PAGE],
            counts=counts,
            total=len(results),
            page=page,
            pages=pages,
            only_bad=only_bad,
        )

    @expose("/import/<token>", methods=("POST",))
    def run_import(self, token: str) -> Response | tuple[str, int]:
        if not TokenForm(request.form).validate():
            flash("The form expired; please try again.", "error")
            return redirect(url_for(".index"))
        refused = require("loan.import", self)
        if refused is not None:
            return refused
        path = _stored(token)
        if path is None:
            flash("That upload is gone (imported, or older than a day); upload it again.", "error")
            return redirect(url_for(".index"))
        as_of = _as_of(request.form.get("as_of"))
        if as_of is None:
            flash("The as-of date must be YYYY-MM-DD.", "error")
            return redirect(url_for(".index"))
        skip_bad = request.form.get("skip_bad") == "1"
        again = redirect(url_for(".preview", token=token, as_of=as_of.isoformat()))
        try:
            report = loan_book_import_file(
                path=path,
                as_of=as_of,
                skip_bad=skip_bad,
                staff=current_user._get_current_object(),
                name=path.name,
            )
        except SaccoError as exc:
            db.session.rollback()
            flash(f"Not imported: {exc}", "error")
            return again
        if not report.written:
            flash(
                f"{len(report.bad_rows)} bad row(s): nothing imported. Fix them and upload "
                "again, or tick “leave the bad rows out”.",
                "error",
            )
            return again
        if report.error:
            # Earlier batches stay; importing the same file again writes only the rest.
            flash(f"Import stopped: {report.error}. Import the file again for the rest.", "error")
            return again
        _forget(token)
        flash(f"Loan book {path.name}: {report.summary}.", "success")
        return redirect(url_for(".index"))


def register(console: Admin) -> None:
    console.add_view(
        LoanBookView(
            name="Loan book upload", category="Loans", endpoint="loanbook", url="loan-book"
        )
    )
