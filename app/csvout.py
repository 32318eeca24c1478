"""Every CSV the project writes goes through this one writer, so no cell reaches a
spreadsheet as a formula.

A spreadsheet runs a cell that starts with = + - or @ (and, in some, a tab or a carriage
return) as a formula: `=HYPERLINK(...)` typed as an email at sign-in would otherwise land
in the audit export as a live link. Such a cell is written with a leading apostrophe,
which spreadsheets show as text and do not print.

Decision where the issue is silent: a cell that is a plain number (`-1250.00`, `+5`) is
left as it is. It cannot hold a formula, and an amount quoted as text would no longer add
up in the spreadsheet.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from decimal import Decimal

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
BOM = "\ufeff"  # Excel reads UTF-8 names right only after one


def csv_cell(value: object) -> str:
    """One cell as text a spreadsheet shows and never runs."""
    if value is None:
        return ""
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    text = str(value)
    if text.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


class _Line:
    """A file-like target for csv.writer that hands back each line it is given."""

    def write(self, line: str) -> str:
        return line


def csv_lines(rows: Iterable[Iterable[object]], *, newline: str = "\r\n") -> Iterator[str]:
    """Each row as one CSV line, every cell through csv_cell: for streaming a long export."""
    writer = csv.writer(_Line(), lineterminator=newline)
    for row in rows:
        yield writer.writerow([csv_cell(v) for v in row])


def csv_bytes(
    rows: Iterable[Iterable[object]], *, bom: bool = False, newline: str = "\r\n"
) -> bytes:
    """The whole file, UTF-8 (after a BOM when asked, for Excel)."""
    out = io.StringIO()
    if bom:
        out.write(BOM)
    for line in csv_lines(rows, newline=newline):
        out.write(line)
    return out.getvalue().encode("utf-8")
