"""Console search as staff type it: a phone however it is written (`0733`, `+25473`,
`722 334 455`), a member or loan number without its zeros (`m3`, `l12`), or a name.

Flask-Admin's own search looks for each word anywhere in each column. That misses `0733`
(we store 254733…) and `m3` (M000003), and finds `0733` in the middle of someone else's
number. The list views call `member_match` / `loan_match` for each word instead; every
word must match (as Flask-Admin does), any column may carry it.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import ColumnElement, or_, select

from app.models import Loan, Member

_PHONE_LIKE = re.compile(r"^\+?[\d\s\-()]+$")
_SEPARATORS = re.compile(r"[\s\-()]")
_NUMBERED = re.compile(r"^([A-Za-z])0*(\d{1,6})$")


def search_words(search: str) -> list[str]:
    """The words of a search; a phone typed with spaces ("+254 722 334 455") is one."""
    text = (search or "").strip()
    if _PHONE_LIKE.match(text):
        return [_SEPARATORS.sub("", text)]
    return text.split()


def phone_prefix(word: str) -> str | None:
    """How a stored phone (2547…) starts when a person types `word` as the start of a
    number: 0733 -> 254733, +25473 -> 25473, 722334455 -> 254722334455. None when the
    word is not the start of a phone number (a bare 4455 is found anywhere in it)."""
    if not re.fullmatch(r"\+?\d+", word):
        return None
    digits = word.lstrip("+")
    if word.startswith("+") or digits.startswith("254"):
        return digits
    if digits.startswith("0") and len(digits) > 1:
        return "254" + digits[1:]
    if len(digits) == 9 and digits[0] in "17":
        return "254" + digits
    return None


def numbered(word: str, letter: str) -> str | None:
    """M3, m03 and M000003 are all M000003 (as the Paybill account reads them)."""
    found = _NUMBERED.match(word)
    if found is None or found.group(1).upper() != letter:
        return None
    return f"{letter}{int(found.group(2)):06d}"


def member_match(word: str) -> ColumnElement[bool]:
    """A member whose name, member number, national ID or phone `word` stands for."""
    either: list[ColumnElement[bool]] = [
        Member.name.icontains(word, autoescape=True),
        Member.member_no.icontains(word, autoescape=True),
        Member.national_id.icontains(word, autoescape=True),
    ]
    prefix = phone_prefix(word)
    if prefix is not None:
        either.append(Member.phone.startswith(prefix))
    else:
        either.append(Member.phone.icontains(word, autoescape=True))
    member_no = numbered(word, "M")
    if member_no is not None:
        either.append(Member.member_no == member_no)
    return or_(*either)


def loan_match(word: str) -> ColumnElement[bool]:
    """A loan by its number (`l12`, L000012) or by its member (name, number, phone)."""
    either: list[ColumnElement[bool]] = [
        Loan.loan_no.icontains(word, autoescape=True),
        Loan.member_id.in_(select(Member.id).where(member_match(word))),
    ]
    loan_no = numbered(word, "L")
    if loan_no is not None:
        either.append(Loan.loan_no == loan_no)
    return or_(*either)


def apply_words(query: Any, count_query: Any, search: str, match: Any) -> tuple[Any, Any]:
    """`query` and `count_query` (Flask-Admin's list and count) narrowed to rows matching
    every word of `search`."""
    for word in search_words(search):
        clause = match(word)
        query = query.filter(clause)
        if count_query is not None:
            count_query = count_query.filter(clause)
    return query, count_query
