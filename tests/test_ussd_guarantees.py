"""Guarantees on *384*96# (issue 19), through `POST /ussd` as Africa's Talking sends it:
an applicant names guarantors after a secured application (or comes back to it later), a
guarantor answers from menu 8 with the PIN or declines, and sees the loans they guarantee.
Every reply is checked by tests.helpers.Phone (CON/END, <= 182 GSM-7 characters); the
last test renders every new screen with worst-case data and its longest error, in both
languages. The books reconcile after each test (the autouse fixture)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.clock import business_today
from app.extensions import db, redis_client
from app.models import Guarantee, Loan, Member
from app.selectors.guarantees import loan_cover
from app.services.guarantees import guarantee_accept, guarantee_request
from app.services.loans import loan_apply, loan_approve
from app.services.members import member_set_pin
from app.sms_templates import GSM7_BASIC
from app.ussd.engine import MAX_SCREEN, Hop, Session, SessionStore, UssdRequest
from tests.factories import make_member
from tests.helpers import Phone, sms_bodies
from tests.loan_factories import JOINED, make_product, make_staff
from ussd_menus.screens import SCREENS
from ussd_menus.text import t

D = Decimal
PIN = "4826"
APPLICANT = "+254711223344"


def _member(phone: str, name: str, savings: int, language: str = "en") -> Member:
    member = make_member(phone=phone, savings=savings, name=name, language=language)
    member.created_at = JOINED  # long enough a member to borrow
    db.session.commit()
    member_set_pin(member_id=member.id, pin=PIN)
    return member


def _secured(**overrides: object) -> int:
    """V1 terms (limit 3x deposits, 1-36 months), secured by at least two guarantors
    covering all of the loan above the applicant's own free deposits."""
    rule = dict(code="SEC", name="Development", min_guarantors=2, guarantee_cover=D("100"))
    return make_product("V1", **{**rule, **overrides}).id


@pytest.fixture
def people(app: Flask) -> dict[str, Member]:
    _secured()
    return {
        "applicant": _member("0711223344", "Wanjiku Achieng", 10000),
        "john": _member("0722000001", "John Kamau", 20000),
        "mary": _member("0722000002", "Mary Njeri Otieno", 20000),
        "peter": _member("0722000003", "Peter Mwangi", 5000),
    }


def _signed_in(client: FlaskClient, phone: str) -> Phone:
    """A new session at the main menu (a session left mid-way is offered "Continue":
    these tests start over)."""
    session = Phone(client, phone)
    assert "PIN" in session.dial()
    menu = session.press(PIN)
    if "1. Continue" in menu:
        menu = session.press("2")
    assert menu.startswith("CON 1. "), menu
    return session


def _apply(client: FlaskClient, amount: str = "25000") -> tuple[Phone, str]:
    """Menu 2 for the secured product: product, amount, term, confirm. The last screen is
    the first guarantor screen."""
    phone = _signed_in(client, APPLICANT)
    assert "Development up to KES 30,000.00" in phone.press("2")
    phone.press("1")
    assert "how many months" in phone.press(amount)
    assert "Confirm" in phone.press("12")
    return phone, phone.press("1")


def _loan(member: Member) -> Loan:
    return db.session.scalar(select(Loan).where(Loan.member_id == member.id))


def test_an_applicant_names_two_guarantors_after_a_secured_application(
    client: FlaskClient, people: dict[str, Member]
) -> None:
    john, mary = people["john"], people["mary"]
    phone, first = _apply(client)
    loan = _loan(people["applicant"])
    assert loan.status == "submitted"
    # 25,000 less her own 10,000 free deposits: 15,000 to be guaranteed, by two at least.
    assert first == (
        f"CON Loan {loan.loan_no} needs 2 guarantors for KES 15,000; KES 0 accepted so far."
        "\nGuarantor's member no. or phone:\n0 Back 00 Home"
    )

    assert phone.press(john.member_no) == (
        "CON Guarantor: J*** K***\nIs this the right person?\n1. Yes\n2. No, another number"
        "\n0 Back 00 Home"
    )
    assert "still to find KES 15,000" in phone.press("1")
    added = phone.press("8000")  # hops: number, confirm, amount
    assert added.startswith("CON Asked by SMS.\n")
    assert f"{loan.loan_no}: KES 0 accepted, KES 8,000 asked, KES 15,000 needed." in added
    assert "1. Add another" in added

    assert "member no. or phone" in phone.press("1")  # another: by phone number this time
    assert "M*** N*** O***" in phone.press("0722000002")
    assert "still to find KES 7,000" in phone.press("1")
    assert "KES 15,000 asked, KES 15,000 needed" in phone.press("7000")
    done = phone.press("2")
    assert done.startswith("END ") and f"Loan {loan.loan_no} is under review" in done

    asked = db.session.execute(
        select(Guarantee.guarantor_id, Guarantee.amount, Guarantee.status, Guarantee.requested_by)
        .where(Guarantee.loan_id == loan.id)
        .order_by(Guarantee.id)
    ).all()
    actor = f"member:{people['applicant'].member_no}"
    assert asked == [
        (john.id, D("8000"), "requested", actor),
        (mary.id, D("7000"), "requested", actor),
    ]
    for guarantor, amount in ((john, "KES 8,000"), (mary, "KES 7,000")):
        texts = sms_bodies("guarantee_request", phone=guarantor.phone)
        assert len(texts) == 1 and amount in texts[0] and loan.loan_no in texts[0]


def test_refusals_show_a_short_message_on_the_same_screen(
    client: FlaskClient, people: dict[str, Member]
) -> None:
    applicant, john = people["applicant"], people["john"]
    phone, _ = _apply(client)
    loan = _loan(applicant)
    unknown = phone.press("M999999")
    assert unknown.startswith("CON No active member has that number.\nLoan ")
    assert "cannot guarantee your own loan" in phone.press(applicant.member_no)
    assert "cannot guarantee your own loan" in phone.press("0711223344")
    assert "Guarantor: J*** K***" in phone.press(john.phone)
    assert "member no. or phone" in phone.press("2")  # not the right person: another
    phone.press(john.member_no)
    phone.press("1")
    for bad in ("10.50", "-5", "25001", "lots"):
        assert "Enter whole shillings from KES 1 to KES 25,000." in phone.press(bad)
    phone.press("5000")
    phone.press("1")  # add another...
    again = phone.press(john.member_no[1:].lstrip("0"))  # ...John again, by the bare number
    assert again.startswith("CON J*** K*** was asked already.\nLoan ")
    asked = db.session.execute(select(Guarantee.guarantor_id, Guarantee.amount)).all()
    assert asked == [(john.id, D("5000"))]  # the refusals wrote nothing
    assert _loan(applicant).id == loan.id


def test_a_guarantor_accepts_by_ussd_in_three_hops_after_the_pin(
    client: FlaskClient, people: dict[str, Member]
) -> None:
    applicant, john, mary = people["applicant"], people["john"], people["mary"]
    _apply(client)
    loan = _loan(applicant)
    john_asks = guarantee_request(
        loan_id=loan.id, guarantor_id=john.id, amount=8000, actor="member:test"
    )
    guarantee_request(loan_id=loan.id, guarantor_id=mary.id, amount=7000, actor="member:test")

    phone = _signed_in(client, john.phone)
    menu = phone.press("8")  # hop 1 after the PIN
    assert menu == (
        f"CON Requests:\n1. {loan.loan_no} KES 8,000\n4. Loans I guarantee\n0 Back 00 Home"
    )
    request = phone.press("1")  # hop 2
    assert request.startswith(
        f"CON Wanjiku Achieng asks you to guarantee KES 8,000 of {loan.loan_no}. "
        "Free deposits: KES 20,000.\nEnter PIN to accept\n2. Decline"
    )
    assert "Enter your PIN, or 2 to decline." in phone.press("1")  # costs no try
    assert "Wrong PIN. Tries left: 2." in phone.press("1111")
    accepted = phone.press(PIN)  # hop 3: the PIN accepts
    assert accepted == (
        f"END You now guarantee KES 8,000 of loan {loan.loan_no}. Wanjiku is told by SMS."
    )
    raw = b"".join(redis_client().get(k) or b"" for k in redis_client().keys("ussd:*"))
    assert PIN.encode() not in raw  # the PIN that accepted is not kept in session state
    db.session.expire_all()
    row = db.session.get(Guarantee, john_asks.id)
    assert (row.status, row.answered_via) == ("accepted", "ussd")
    assert db.session.get(Member, john.id).failed_pin_count == 0  # the right PIN cleared it
    told = sms_bodies("guarantee_accepted", phone=applicant.phone)
    assert len(told) == 1 and "KES 8,000" in told[0]

    held = _signed_in(client, john.phone)
    assert "No guarantee requests." in held.press("8")
    assert held.press("4") == (
        f"CON Free deposits KES 12,000. You guarantee, held now:\n{loan.loan_no} Wanjiku A. "
        "KES 8,000\n0 Back 00 Home"
    )

    # Mary accepts too: the cover is complete and the application can now be approved.
    other = _signed_in(client, mary.phone)
    other.press("8")
    other.press("1")
    assert "You now guarantee KES 7,000" in other.press(PIN)
    db.session.expire_all()
    assert loan_cover(_loan(applicant)).complete
    approved = loan_approve(loan_id=loan.id, staff=make_staff("branch_manager"))
    assert approved.status == "approved"


def test_a_guarantor_declines(client: FlaskClient, people: dict[str, Member]) -> None:
    applicant, mary = people["applicant"], people["mary"]
    _apply(client)
    loan = _loan(applicant)
    asked = guarantee_request(
        loan_id=loan.id, guarantor_id=mary.id, amount=7000, actor="member:test"
    )
    phone = _signed_in(client, mary.phone)
    phone.press("8")
    phone.press("1")
    declined = phone.press("2")  # no PIN: declining pledges nothing
    assert declined == f"END You declined to guarantee loan {loan.loan_no}. Wanjiku is told by SMS."
    db.session.expire_all()
    row = db.session.get(Guarantee, asked.id)
    assert (row.status, row.answered_via) == ("declined", "ussd")
    assert len(sms_bodies("guarantee_declined", phone=applicant.phone)) == 1
    again = _signed_in(client, mary.phone)
    assert "No guarantee requests." in again.press("8")  # nothing left to answer


@pytest.mark.parametrize("language", ["en", "sw"])
def test_short_free_deposits_are_refused_in_words(
    client: FlaskClient, people: dict[str, Member], language: str
) -> None:
    applicant, peter = people["applicant"], people["peter"]
    peter.language = language
    db.session.commit()
    _apply(client)
    loan = _loan(applicant)
    asked = guarantee_request(
        loan_id=loan.id, guarantor_id=peter.id, amount=7000, actor="member:test"
    )
    phone = _signed_in(client, peter.phone)
    phone.press("8")
    phone.press("1")
    refused = phone.press(PIN)
    assert refused == "END " + t("guar_short", language, free="KES 5,000", amount="KES 7,000")
    db.session.expire_all()
    assert db.session.get(Guarantee, asked.id).status == "requested"  # still to answer
    assert not sms_bodies("guarantee_accepted", phone=applicant.phone)


def test_an_answered_request_is_no_longer_open(
    client: FlaskClient, people: dict[str, Member]
) -> None:
    """Answered by SMS (or in another session) between the list and the PIN."""
    applicant, john = people["applicant"], people["john"]
    _apply(client)
    loan = _loan(applicant)
    asked = guarantee_request(
        loan_id=loan.id, guarantor_id=john.id, amount=8000, actor="member:test"
    )
    phone = _signed_in(client, john.phone)
    phone.press("8")
    phone.press("1")
    guarantee_accept(guarantee_id=asked.id, guarantor_id=john.id, via="sms")
    assert phone.press(PIN) == "END " + t("guar_gone", "en")


def test_the_applicant_comes_back_later_from_menu_2_or_menu_8(
    client: FlaskClient, people: dict[str, Member]
) -> None:
    applicant, john, mary = people["applicant"], people["john"], people["mary"]
    _apply(client)  # ...and hangs up at the first guarantor screen
    loan = _loan(applicant)
    redis_client().delete(f"ussd:resume:{applicant.phone}")  # no "Continue" offered

    later = _signed_in(client, APPLICANT)
    pending = later.press("2")  # hop 1 after the PIN
    assert pending == (
        f"CON 1. Add a guarantor to {loan.loan_no}\n9. Apply for a new loan\n0 Back 00 Home"
    )
    assert f"Loan {loan.loan_no} needs 2 guarantors" in later.press("1")
    later.press(john.member_no)
    later.press("1")
    assert "KES 8,000 asked, KES 15,000 needed" in later.press("8000")  # 5 hops after the PIN

    other = _signed_in(client, APPLICANT)
    menu = other.press("8")
    assert "No guarantee requests." in menu and "5. Guarantors for my loan" in menu
    assert "needs 2 guarantors" in other.press("5")
    other.press(mary.member_no)
    other.press("1")
    assert "KES 15,000 asked, KES 15,000 needed" in other.press("7000")

    make_product("INSTANT")  # one application a product: another product still lends
    new = _signed_in(client, APPLICANT)
    new.press("2")
    offers = new.press("9")
    assert "Instant Loan up to" in offers and "Development" not in offers

    # Once the cover is complete there is nothing to add: menu 2 goes straight to offers.
    for guarantee in db.session.scalars(select(Guarantee).where(Guarantee.loan_id == loan.id)):
        guarantee_accept(guarantee_id=guarantee.id, guarantor_id=guarantee.guarantor_id, via="sms")
    done = _signed_in(client, APPLICANT)
    assert "Instant Loan up to" in done.press("2")
    done.press("00")
    assert "5. Guarantors" not in done.press("8")


GOALS = {
    # goal: (entries after the PIN, what the last screen shows, the most hops allowed)
    "answer a guarantee request (accept)": (["8", "1", PIN], "You now guarantee", 3),
    "answer a guarantee request (decline)": (["8", "1", "2"], "You declined", 3),
    "add a guarantor later": (["2", "1", "M", "1", "5000"], "asked, KES 15,000 needed", 5),
}


@pytest.mark.parametrize("goal", sorted(GOALS))
def test_hops_to_each_guarantee_goal_after_the_pin(
    client: FlaskClient, people: dict[str, Member], goal: str
) -> None:
    """The counts the README's table lists."""
    entries, shows, most = GOALS[goal]
    _apply(client)
    loan = _loan(people["applicant"])
    john = people["john"]
    if goal.startswith("answer"):
        guarantee_request(loan_id=loan.id, guarantor_id=john.id, amount=8000, actor="member:x")
        phone = _signed_in(client, john.phone)
    else:
        redis_client().delete(f"ussd:resume:{APPLICANT}")
        phone = _signed_in(client, APPLICANT)
        entries = [john.member_no if e == "M" else e for e in entries]
    screen = ""
    for entry in entries:
        screen = phone.press(entry)
    assert shows in screen
    assert len(entries) <= most


def test_kiswahili_through_the_whole_flow(client: FlaskClient, people: dict[str, Member]) -> None:
    applicant, john = people["applicant"], people["john"]
    for member in (applicant, john):
        member.language = "sw"
    db.session.commit()
    phone = _signed_in(client, APPLICANT)
    phone.press("2")
    phone.press("1")
    phone.press("25000")
    phone.press("12")
    first = phone.press("1")
    assert "unahitaji wadhamini 2 kwa KES 15,000; KES 0 zimekubaliwa" in first
    assert "Mdhamini: J*** K***" in phone.press(john.member_no)
    assert "kinachokosekana KES 15,000" in phone.press("1")
    assert "Ameombwa kwa SMS.\nL" in phone.press("8000")
    assert "unakaguliwa" in phone.press("2")

    answer = _signed_in(client, john.phone)
    assert answer.press("8").startswith("CON Maombi:\n1. L")
    assert "anakuomba udhamini wa KES 8,000" in answer.press("1")
    assert "Sasa unadhamini KES 8,000" in answer.press(PIN)
    held = _signed_in(client, john.phone)
    held.press("8")
    assert "Akiba huru KES 12,000" in held.press("4")


# -- every new screen within 182 GSM-7 characters -----------------------------------------

LONG = "Bartholomew-Nyambura Wanjiku-Achieng Omondi"
BIG = 1_999_999
# Each screen with the errors it can show above itself (the engine's empty-entry one too).
ERRORS = {
    "guar_pending": ["choose"],
    "guar_loan": ["choose"],
    "guar_who": ["guar_unknown", "guar_self", "guar_asked"],
    "guar_confirm": ["choose"],
    "guar_amount": ["amount_bad"],
    "guar_added": ["choose"],
    "guar_menu": ["choose"],
    "guar_request": ["guar_pin_or_2", "pin_wrong"],
    "guar_held": ["choose"],
}
ENDS = [
    "guar_done",
    "guar_closed",
    "guar_not_asked",
    "guar_accepted",
    "guar_declined",
    "guar_short",
    "guar_gone",
]
WORST = {
    "name": "B*** N*** W*** A*** O***",
    "loan_no": "L999999",
    "low": "KES 1",
    "high": f"KES {BIG:,}",
    "amount": f"KES {BIG:,}",
    "free": "KES 99,999,999",
    "left": 2,
    "why": "x" * 120,
}


@pytest.mark.parametrize("language", ["en", "sw"])
def test_every_guarantee_screen_fits_182_gsm7_characters_with_worst_case_data(
    app: Flask, language: str
) -> None:
    """Rendered directly, as the map's own worst-case test does: the longest names, 7-digit
    amounts, three of everything a screen lists (requests, held guarantees, applications
    waiting), a page more of held guarantees; each with its longest error above it."""
    products = [_secured(code=f"SEC{i}", max_amount=None, limit_multiple=D("10")) for i in range(3)]
    product_id = products[0]
    member = _member("0711223344", LONG, 99_999_999, language)
    # Three of the member's own applications short of cover (one a product: menu 2's and
    # menu 8's lists of loans to add guarantors to).
    own = [
        loan_apply(member_id=member.id, product_id=p, amount=BIG, as_of=business_today())
        for p in products
    ]
    # Four accepted guarantees (a page and more of "loans I guarantee"), three waiting.
    given: list[int] = []
    loans: list[int] = []
    for i in range(7):
        borrower = _member(f"07330000{i:02d}", LONG, 200_000)
        loan = loan_apply(
            member_id=borrower.id, product_id=product_id, amount=BIG, as_of=business_today()
        )
        asked = guarantee_request(
            loan_id=loan.id, guarantor_id=member.id, amount=BIG, actor="member:test"
        )
        if i < 4:
            guarantee_accept(guarantee_id=asked.id, guarantor_id=member.id, via="ussd")
        given.append(asked.id)
        loans.append(loan.id)
    # The applicant's screens, shown for the first borrower's loan: 1,799,999 to find above
    # their own 200,000, the member's 1,999,999 accepted and as much asked of another.
    guarantor = _member("0744000000", LONG, 10)
    guarantee_request(loan_id=loans[0], guarantor_id=guarantor.id, amount=BIG, actor="member:t")
    assert len(own) == 3
    data = {
        "loan_id": loans[0],
        "guarantor_id": guarantor.id,
        "guarantee_id": given[-1],
        "amount": str(BIG),
        "page": 0,
    }
    store = SessionStore(redis_client(), "secret")
    request = UssdRequest("ATUid_render", "254711223344", "*384*96#", "", "63902")
    for name, errors in ERRORS.items():
        for page in (0, 1):
            session = Session(
                screen=name,
                data={**data, "page": page},
                member_id=member.id,
                language=language,
                authed=True,
            )
            body = SCREENS[name].render(Hop(request, session, "", store))
            assert set(body) <= GSM7_BASIC, (name, set(body) - GSM7_BASIC)
            for error in [*errors, "error_empty"]:
                shown = f"{t(error, language, **WORST)}\n{body}"
                assert len(shown) <= MAX_SCREEN, (name, error, len(shown), shown)
    for key in ENDS:
        text = t(key, language, **WORST)
        assert len(text) <= MAX_SCREEN and set(text) <= GSM7_BASIC, (key, len(text), text)
    main = t("main", language)
    assert "\n8. " + ("Guarantees\n" if language == "en" else "Udhamini\n") in main
