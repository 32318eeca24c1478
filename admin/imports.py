"""The loan book upload page: templates to fill in, an upload checked row by row into a
stored preview, then the import itself, through the services `sacco import loan-book`
uses (app/services/loan_import.py).

Decisions where the issue is silent:

- The upload is parsed and checked once, when it arrives, and every row's result is kept
  in the database (`loan_book_previews`), not the file on this server's disk: the preview
  pages page through those rows with a query, the import reads them back, and any web
  replica serves either. The preview's token is random (22 URL-safe characters, 128
  bits: not guessable); an imported preview is deleted, and one older than a day is
  deleted at the next upload.
- At most 5 MB: a 10,000-loan CSV is under 1 MB. The limit is set on the request, so a
  bigger body is refused before it is read. Within it, a book holds at most 20,000 loans
  and an XLSX unpacks to at most 25 MB (`loan_import.MAX_ROWS`, `MAX_UNPACKED_BYTES`),
  refused in words before the sheet is parsed or as soon as the rows run over.
- The request's own transaction (the sign-in's reads) is ended before the parse: on
  SQLite a transaction holds the one write lock, and SMS, USSD and jobs must not wait on
  a spreadsheet.
- The preview shows 100 rows a page (every list paginates), with a switch to the rows with
  problems only; the import re-checks the rows against the books as they are then, as the
  CLI does, and with bad rows imports nothing unless the staff member ticks "leave the bad
  rows out" (the CLI's --skip-bad).
"""

from __future__ import annotations

import io
from datetime import date, datetime
from pathlib import Path

from flask import flash, redirect, request, send_file, url_for
from flask_admin import Admin, BaseView, expose
from flask_login import current_user
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.utils import secure_filename
from werkzeug.wrappers import Response

from admin.auth import SecureMixin, TokenForm, require
from app.clock import business_today
from app.csvout import csv_bytes
from app.errors import SaccoError
from app.extensions import db
from app.services.loan_import import (
    COLUMNS,
    MAX_ROWS,
    TEMPLATE_ROWS,
    loan_book_import_preview,
    loan_book_open,
    loan_book_preview_get,
    loan_book_preview_page,
    loan_book_preview_store,
)

MAX_UPLOAD = 5 * 1024 * 1024
PREVIEW_PAGE = 100
SUFFIXES = (".csv", ".xlsx")
GONE = "That upload is gone (imported, or older than a day); upload it again."


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
            max_rows=MAX_ROWS,
        )

    @expose("/template.csv")
    def template_csv(self) -> Response:
        return Response(
            csv_bytes([COLUMNS, *TEMPLATE_ROWS], newline="\n"),  # the one CSV writer
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
        # End the sign-in check's transaction before the body is read: a slow client's
        # 5 MB would otherwise hold SQLite's one write lock for as long as it takes.
        db.session.commit()
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
        # End the request's transaction before the parse: on SQLite any open transaction
        # holds the write lock, and nothing else may wait on a spreadsheet.
        db.session.commit()
        try:
            preview = loan_book_preview_store(
                book=loan_book_open(data=data, name=name),
                as_of=as_of,
                staff=current_user._get_current_object(),
            )
        except SaccoError as exc:
            db.session.rollback()
            flash(f"Cannot use this file: {exc}", "error")
            return back
        return redirect(url_for(".preview", token=preview.token))

    @expose("/preview/<token>")
    def preview(self, token: str) -> Response | str:
        stored = loan_book_preview_get(token=token)
        if stored is None:
            flash(GONE, "error")
            return redirect(url_for(".index"))
        only_bad = request.args.get("show") == "bad"
        shown = stored.bad_count if only_bad else stored.total
        pages = max((shown + PREVIEW_PAGE - 1) // PREVIEW_PAGE, 1)
        page = min(max(request.args.get("page", 1, type=int) or 1, 1), pages)
        rows = loan_book_preview_page(
            preview=stored, only_bad=only_bad, page=page, per_page=PREVIEW_PAGE
        )
        name, as_of, total = stored.filename, stored.as_of.isoformat(), stored.total
        counts = {"ok": stored.ok_count, "imported": stored.imported_count, "bad": stored.bad_count}
        db.session.commit()  # only reads: no transaction (SQLite: no lock) while rendering
        return self.render(
            "admin_sacco/import_preview.html",
            token=token,
            name=name,
            as_of=as_of,
            columns=COLUMNS,
            rows=rows,
            counts=counts,
            total=total,
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
        skip_bad = request.form.get("skip_bad") == "1"
        again = redirect(url_for(".preview", token=token))
        try:
            report, name = loan_book_import_preview(
                token=token, skip_bad=skip_bad, staff=current_user._get_current_object()
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
            # Earlier batches stay; importing the same book again writes only the rest.
            flash(f"Import stopped: {report.error}. Import the book again for the rest.", "error")
            return again
        queued = (
            f" Days late and penalties of the {len(report.late_loans)} loan(s) in arrears are "
            "being brought up to date."
            if report.arrears_queued
            else ""
        )
        flash(f"Loan book {name}: {report.summary}.{queued}", "success")
        return redirect(url_for(".index"))


def register(console: Admin) -> None:
    console.add_view(
        LoanBookView(
            name="Loan book upload", category="Loans", endpoint="loanbook", url="loan-book"
        )
    )
