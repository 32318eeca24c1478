"""What comes back from Africa's Talking: members' texts, delivery reports and opt-outs.

Inbound texts are stored before anything else (one row per provider id, so the
provider's retries are no-ops); the keyword is then handled inside a savepoint, so a
failure there is logged and the stored text survives. Replies go through the outbox
(`sms_queue`) as transactional messages keyed `reply:<provider id>`: one reply per text,
however often the provider retries.

Language: a reply is in the member's language, except that a keyword typed in its
Kiswahili form (SALIO, TAARIFA, MSAADA, SIMAMA, ANZA, NDIO, HAPANA) is answered in
Kiswahili for that reply. The member's saved language is not changed by a text: that is a
USSD setting.

YES L000123 / NO L000123 (NDIO / HAPANA) answer a guarantee request, through the same
services as the USSD menu. Those services commit their own work, so the stored text is
committed first and the answer runs outside the savepoint; the reply is the outbox row
keyed by the text as always.

STOP / START (and the provider's opt-out callback) maintain the suppression list, keyed
by the normalised phone (2547XXXXXXXX) that the outbox checks for reminders.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.exc import IntegrityError

from app.clock import business_date
from app.extensions import db
from app.metrics import SMS_FAILED
from app.models import (
    Guarantee,
    Loan,
    Member,
    PromiseToPay,
    SmsInbound,
    SmsMessage,
    SmsSuppression,
)
from app.models.types import utcnow
from app.money import MoneyError, money_input
from app.phone import PhoneError, normalise_phone
from app.selectors.guarantees import member_deposits
from app.selectors.loans import LIVE_STATUSES
from app.selectors.members import member_balances
from app.selectors.statements import member_statement
from app.services.guarantees import (
    GuaranteeError,
    guarantee_accept,
    guarantee_decline,
    guarantees_waiting,
)
from app.services.notifications import promise_recorded_key
from app.services.promises import (
    PromiseError,
    promise_problem,
    promise_problem_words,
    promise_record,
)
from app.services.sms import sms_queue
from app.services.webhooks import webhook_sms_delivered
from app.sms_templates import kes, render_sms, sms_date

log = logging.getLogger(__name__)

# word -> (keyword, language the word belongs to)
KEYWORDS: dict[str, tuple[str, str]] = {
    "BAL": ("BAL", "en"),
    "BALANCE": ("BAL", "en"),
    "SALIO": ("BAL", "sw"),
    "STMT": ("STMT", "en"),
    "STATEMENT": ("STMT", "en"),
    "TAARIFA": ("STMT", "sw"),
    "HELP": ("HELP", "en"),
    "MSAADA": ("HELP", "sw"),
    "STOP": ("STOP", "en"),
    "SIMAMA": ("STOP", "sw"),
    "START": ("START", "en"),
    "ANZA": ("START", "sw"),
    "PROMISE": ("PROMISE", "en"),
    "AHADI": ("PROMISE", "sw"),
    # A guarantor's answer: the request SMS prints YES/NO in both languages, so only the
    # Kiswahili words say which language to answer in.
    "YES": ("YES", "en"),
    "NO": ("NO", "en"),
    "NDIO": ("YES", "sw"),
    "NDIYO": ("YES", "sw"),
    "HAPANA": ("NO", "sw"),
}
GUARANTEE_ANSWERS = ("YES", "NO")
UNKNOWN = "UNKNOWN"  # stored as the row's keyword when the first word means nothing to us
_WORD = re.compile(r"[^\W_]+")  # letters and digits; punctuation and spaces separate words

# Delivery report statuses (contracts/africastalking.md). Intermediate ones only move
# forward; the final ones end the story.
DLR_PROGRESS = {"Sent": 1, "Submitted": 2, "Buffered": 3}
DLR_DELIVERED = "Success"
DLR_FAILED = frozenset({"Rejected", "Failed", "AbsentSubscriber", "Expired"})

STATEMENT_LABELS = {
    "en": {"savings": "Savings", "loan": "Loan", "none": "No transactions yet."},
    "sw": {"savings": "Akiba", "loan": "Mkopo", "none": "Hakuna miamala bado."},
}


@dataclass(frozen=True)
class Keyword:
    keyword: str  # BAL | STMT | HELP | STOP | START | PROMISE | YES | NO | UNKNOWN
    language: str | None  # the language of the word typed; None when unknown


def parse_keyword(text: str | None) -> Keyword:
    """The first word, case-insensitive, punctuation stripped: "bal.", "Salio!" -> BAL."""
    match = _WORD.search((text or "").upper())
    if match is None:
        return Keyword(UNKNOWN, None)
    keyword, language = KEYWORDS.get(match.group(), (UNKNOWN, None))
    return Keyword(keyword, language)


def mask_phone(phone: str | None) -> str:
    """Enough of a number to follow a trail in the logs, not enough to dial it."""
    value = (phone or "").strip()
    return value[:6] + "***" + value[-2:] if len(value) > 8 else "***"


def _clip(value: str | None, width: int) -> str | None:
    # Providers send what they send; a column that refuses it would lose the whole text.
    return value.replace("\x00", "")[:width] if value is not None else None


@dataclass(frozen=True)
class InboundResult:
    outcome: str  # duplicate | replied | not_member | bad_number | failed
    inbound_id: int | None = None
    reply_id: int | None = None


def sms_receive(
    *,
    provider_id: str,
    phone: str,
    text: str | None,
    to: str | None = None,
    link_id: str | None = None,
    now: datetime | None = None,
) -> InboundResult:
    """Store a member's text once, then act on its keyword and queue one reply.

    Commits. Never raises for odd input: a garbage number is stored and logged with no
    reply; a failure while answering is logged and the stored text kept.
    """
    now = now or utcnow()
    provider_id = _clip(provider_id, 64) or ""
    text = _clip(text, 100_000) or ""
    existing = db.session.scalar(select(SmsInbound.id).where(SmsInbound.provider_id == provider_id))
    if existing is not None:
        log.info("inbound sms %s seen already", provider_id)
        return InboundResult("duplicate", existing)
    try:
        normalised: str | None = normalise_phone(phone)
    except PhoneError:
        normalised = None
    inbound = SmsInbound(
        provider_id=provider_id,
        phone=normalised or _clip(phone.strip(), 16) or "",
        to=_clip(to, 20),
        text=text,
        link_id=_clip(link_id, 64),
        received_at=now,
    )
    try:
        with db.session.begin_nested():
            db.session.add(inbound)
    except IntegrityError:
        # The provider's retry raced the first delivery: that one answers.
        found = db.session.scalar(
            select(SmsInbound.id).where(SmsInbound.provider_id == provider_id)
        )
        if found is None:
            raise
        return InboundResult("duplicate", found)

    if normalised is None:
        log.warning(
            "inbound sms %s from a number that is not Kenyan mobile (%s): stored, no reply",
            provider_id,
            mask_phone(phone),
        )
        db.session.commit()
        return InboundResult("bad_number", inbound.id)

    parsed = parse_keyword(text)
    inbound.keyword = parsed.keyword
    member = db.session.scalar(select(Member).where(Member.phone == normalised))
    inbound.member_id = member.id if member else None
    if member is not None and parsed.keyword in GUARANTEE_ANSWERS:
        return _guarantee_reply(inbound, parsed, member, now=now)
    try:
        with db.session.begin_nested():
            reply = _answer(inbound, parsed, member, now=now)
    except Exception:  # noqa: BLE001 - the stored text must survive whatever went wrong
        log.exception("could not answer inbound sms %s", provider_id)
        db.session.commit()
        return InboundResult("failed", inbound.id)
    db.session.commit()
    outcome = "not_member" if reply.template == "not_member" else "replied"
    log.info(
        "inbound sms %s keyword %s from %s (%d chars): %s",
        provider_id,
        parsed.keyword,
        mask_phone(normalised),
        len(text),
        outcome,
    )
    return InboundResult(outcome, inbound.id, reply.id)


def _answer(
    inbound: SmsInbound, parsed: Keyword, member: Member | None, *, now: datetime
) -> SmsMessage:
    # English keywords are the ones printed everywhere, so they say nothing about the
    # member's language; a Kiswahili word does.
    language = "sw" if parsed.language == "sw" else (member.language if member else "en")
    template: str
    params: dict[str, object] = {}
    if parsed.keyword in ("STOP", "START"):
        # Anyone may stop reminders and promotions, member or not.
        _suppression_set(
            phone=inbound.phone, active=parsed.keyword == "STOP", source="keyword", now=now
        )
        template = "opted_out" if parsed.keyword == "STOP" else "opted_in"
    elif member is None:
        template = "not_member"
    elif parsed.keyword == "BAL":
        balances = member_balances(member_id=member.id)
        template = "balance"
        params = {
            "savings": balances.savings,
            "shares": balances.share_capital,
            "loan_balance": balances.loan_total,
        }
    elif parsed.keyword == "STMT":
        balances = member_balances(member_id=member.id)
        template = "statement"
        params = {
            "lines": statement_lines(member.id, language),
            "savings": balances.savings,
            "shares": balances.share_capital,
            "loan_balance": balances.loan_total,
        }
    elif parsed.keyword == "PROMISE":
        outcome = _promise_by_sms(inbound, member, language, now=now)
        if isinstance(outcome, PromiseToPay):
            # promise_record texted the confirmation: that is the reply.
            return db.session.scalars(
                select(SmsMessage).where(
                    SmsMessage.idempotency_key == promise_recorded_key(outcome)
                )
            ).one()
        template, params = "promise_refused", {"reason": outcome}
    else:  # HELP, an unknown word, an empty text
        template = "help"
    return sms_queue(
        template=template,
        body=render_sms(template, language, **params),
        phone=inbound.phone,
        idempotency_key=f"reply:{inbound.provider_id}",
        kind="transactional",
        member=member,
        language=language,
        context={"inbound_id": inbound.id},
        now=now,
    )


# PROMISE 2000 28/11 [L45]: an amount, a day/month (a year may follow), and the loan when
# the member has more than one in arrears.
_PROMISE = re.compile(
    r"^\W*\w+\s+(?P<amount>\d[\d,]*(?:\.\d+)?)\s+(?P<day>\d{1,2})[/.-](?P<month>\d{1,2})"
    r"(?:[/.-](?P<year>\d{2}|\d{4}))?(?:\s+L\W*(?P<loan>\d{1,9}))?\W*$",
    re.IGNORECASE,
)
PROMISE_WORDS = {
    "format": (
        "send PROMISE amount date, e.g. PROMISE 2000 28/11",
        "tuma AHADI kiasi tarehe, mf. AHADI 2000 28/11",
    ),
    "none_late": ("you have no loan in arrears", "huna mkopo uliochelewa"),
    "which": (
        "you have several loans in arrears: add the loan number, e.g. PROMISE 2000 28/11 L45",
        "una mikopo kadhaa iliyochelewa: ongeza nambari ya mkopo, mf. AHADI 2000 28/11 L45",
    ),
}


def _words(key: str, language: str) -> str:
    english, swahili = PROMISE_WORDS[key]
    return swahili if language == "sw" else english


def _promise_by_sms(
    inbound: SmsInbound, member: Member, language: str, *, now: datetime
) -> PromiseToPay | str:
    """Record the promise a member texted, through promise_record as USSD does; or say
    why not, in the member's language. The checks run before the write, so a refusal
    never rolls back the stored text."""
    match = _PROMISE.match(inbound.text or "")
    as_of = business_date(now)
    if match is None:
        return _words("format", language)
    try:
        year = int(match["year"]) if match["year"] else as_of.year
        year += 2000 if year < 100 else 0
        promised = date(year, int(match["month"]), int(match["day"]))
    except ValueError:
        return _words("format", language)
    if match["year"] is None and promised < as_of:
        promised = promised.replace(year=promised.year + 1)  # 3/1 texted in late December
    # None stands for a named loan that is not one of these: promise_problem says so.
    late: list[Loan | None] = list(
        db.session.scalars(
            select(Loan)
            .where(
                Loan.member_id == member.id,
                Loan.status.in_(LIVE_STATUSES),
                Loan.days_past_due > 0,
            )
            .order_by(Loan.id)
        )
    )
    if match["loan"]:
        wanted = f"L{int(match['loan']):06d}"
        late = [loan for loan in late if loan and loan.loan_no == wanted] or [None]
    if not late:
        return _words("none_late", language)
    if len(late) > 1:
        return _words("which", language)
    loan = late[0]
    try:
        value = money_input(match["amount"].replace(",", ""))
    except MoneyError as exc:
        return str(exc)
    # The same rule as USSD and the desk (promises.promise_problem), the ceiling included.
    problem = promise_problem(
        loan=loan, member_id=member.id, promised_date=promised, as_of=as_of, amount=value
    )
    if problem is not None:
        return promise_problem_words(problem, language)
    assert loan is not None  # noqa: S101 - promise_problem refuses a missing loan
    try:
        return promise_record(
            member_id=member.id,
            loan_id=loan.id,
            amount=value,
            promised_date=promised,
            as_of=as_of,
            channel="sms",
            commit=False,
        )
    except PromiseError as exc:  # another promise landed in between: checked again, locked
        return promise_problem_words(exc.problem, language) if exc.problem else str(exc)


# YES L000123: the keyword, then the loan number from the request SMS (L and zeros optional).
_ANSWER = re.compile(r"^\W*\w+\W+(?:L\W*)?(?P<loan>\d{1,9})\W*$", re.IGNORECASE)
ANSWER_WORDS = {
    "format": (
        "reply YES or NO with the loan number from our SMS, e.g. YES L000123",
        "jibu NDIO au HAPANA na nambari ya mkopo kutoka kwenye SMS yetu, mf. NDIO L000123",
    ),
    "none": (
        "no guarantee request for loan {loan_no} is waiting for your answer",
        "hakuna ombi la udhamini la mkopo {loan_no} linalosubiri jibu lako",
    ),
    "expired": (
        "the request to guarantee loan {loan_no} has expired",
        "muda wa ombi la kudhamini mkopo {loan_no} umekwisha",
    ),
    "answered": (
        "you have already answered the request for loan {loan_no}",
        "umeshajibu ombi la mkopo {loan_no}",
    ),
    "short": (
        "your free deposits are {free}, less than the {amount} asked",
        "akiba yako huru ni {free}, chini ya {amount} ulizoombwa",
    ),
}


def _answer_words(key: str, language: str, **params: object) -> str:
    english, swahili = ANSWER_WORDS[key]
    text = swahili if language == "sw" else english
    return text.format(**{k: kes(v) if isinstance(v, Decimal) else v for k, v in params.items()})


def _guarantee_reply(
    inbound: SmsInbound, parsed: Keyword, member: Member, *, now: datetime
) -> InboundResult:
    """A guarantor's YES/NO: accepted or declined through the guarantee services (which
    commit), then one reply. The text is committed first, so a provider retry meanwhile is
    a duplicate and an answer that fails leaves it stored, as for any keyword."""
    language = "sw" if parsed.language == "sw" else member.language
    provider_id, inbound_id, phone = inbound.provider_id, inbound.id, inbound.phone
    member_id, text = member.id, inbound.text or ""
    db.session.commit()
    try:
        template, params = _guarantee_answer(
            member_id, parsed.keyword, text, language, as_of=business_date(now)
        )
        reply = sms_queue(
            template=template,
            body=render_sms(template, language, **params),
            phone=phone,
            idempotency_key=f"reply:{provider_id}",
            kind="transactional",
            member=db.session.get(Member, member_id),
            language=language,
            context={"inbound_id": inbound_id},
            now=now,
        )
        db.session.commit()
    except Exception:  # noqa: BLE001 - the stored text must survive whatever went wrong
        db.session.rollback()
        log.exception("could not answer inbound sms %s", provider_id)
        return InboundResult("failed", inbound_id)
    log.info(
        "inbound sms %s keyword %s from %s: %s",
        provider_id,
        parsed.keyword,
        mask_phone(phone),
        template,
    )
    return InboundResult("replied", inbound_id, reply.id)


def _guarantee_answer(
    member_id: int, keyword: str, text: str, language: str, *, as_of: date
) -> tuple[str, dict[str, object]]:
    """Answer the member's waiting request on the loan named; the reply's template and
    parameters. A refusal says why in the member's language and changes nothing."""
    match = _ANSWER.match(text)
    if match is None:
        return "guarantor_refused", {"reason": _answer_words("format", language)}
    loan_no = f"L{int(match['loan']):06d}"
    waiting = [g for g in guarantees_waiting(member_id, today=as_of) if g.loan.loan_no == loan_no]
    if not waiting:
        return _refused(member_id, loan_no, language, as_of)
    guarantee = waiting[0]
    guarantee_id, amount = guarantee.id, guarantee.amount
    applicant = guarantee.loan.member.name
    try:
        if keyword == "YES":
            guarantee_accept(
                guarantee_id=guarantee_id, guarantor_id=member_id, via="sms", today=as_of
            )
        else:
            guarantee_decline(
                guarantee_id=guarantee_id, guarantor_id=member_id, via="sms", today=as_of
            )
    except GuaranteeError:
        # Refused under the locks (short deposits, or answered meanwhile by USSD): nothing
        # was written. The state now says why, in the member's words.
        db.session.rollback()
        return _refused(member_id, loan_no, language, as_of)
    if keyword == "NO":
        return "guarantor_declined", {"loan_no": loan_no, "applicant": applicant}
    return "guarantor_accepted", {
        "amount": amount,
        "loan_no": loan_no,
        "applicant": applicant,
        "free": member_deposits(member_id).free,
    }


def _refused(
    member_id: int, loan_no: str, language: str, as_of: date
) -> tuple[str, dict[str, object]]:
    """Why the member's request on `loan_no` cannot be answered now."""
    latest = db.session.scalars(
        select(Guarantee)
        .join(Loan, Loan.id == Guarantee.loan_id)
        .where(Guarantee.guarantor_id == member_id, Loan.loan_no == loan_no)
        .order_by(Guarantee.id.desc())
        .limit(1)
    ).first()
    key = "none"
    params: dict[str, object] = {"loan_no": loan_no}
    if latest is not None:
        if latest.status == "expired" or (
            latest.status == "requested" and latest.expires_on < as_of
        ):
            key = "expired"
        elif latest.status in ("accepted", "declined"):
            key = "answered"
        elif latest.status == "requested":
            free = member_deposits(member_id).free
            if latest.amount > free:
                key, params = "short", {"free": free, "amount": latest.amount}
    return "guarantor_refused", {"reason": _answer_words(key, language, **params)}


def statement_lines(member_id: int, language: str) -> str:
    labels = STATEMENT_LABELS.get(language, STATEMENT_LABELS["en"])
    lines = member_statement(member_id=member_id)
    if not lines:
        return labels["none"]
    return "\n".join(
        f"{sms_date(line.value_date)} {labels[line.account]} "
        f"{'+' if line.amount > 0 else '-'}{kes(abs(line.amount))}"
        for line in lines
    )


def _suppression_set(*, phone: str, active: bool, source: str, now: datetime) -> SmsSuppression:
    """Switch reminders off (active) or on again for a normalised phone; safe under races."""
    row = db.session.scalar(select(SmsSuppression).where(SmsSuppression.phone == phone))
    if row is None:
        row = SmsSuppression(phone=phone, active=active, source=source, updated_at=now)
        try:
            with db.session.begin_nested():
                db.session.add(row)
            return row
        except IntegrityError:
            row = db.session.scalar(select(SmsSuppression).where(SmsSuppression.phone == phone))
            if row is None:
                raise
    row.active = active
    row.source = source
    row.updated_at = now
    return row


def sms_opt_out(*, phone: str, sender_id: str | None = None, now: datetime | None = None) -> str:
    """The provider says this number opted out of bulk SMS: no reminders until START.

    Returns "opted_out" or "bad_number" (logged; nothing to suppress). Commits.
    """
    now = now or utcnow()
    try:
        normalised = normalise_phone(phone)
    except PhoneError:
        log.warning(
            "opt-out for a number that is not Kenyan mobile (%s): ignored", mask_phone(phone)
        )
        return "bad_number"
    _suppression_set(phone=normalised, active=True, source="opt-out", now=now)
    db.session.commit()
    log.info("opt-out from %s (sender id %s)", mask_phone(normalised), sender_id)
    return "opted_out"


def sms_delivery_report(
    *,
    provider_message_id: str,
    status: str,
    failure_reason: str | None = None,
    now: datetime | None = None,
) -> str:
    """Move a sent message forward: Sent < Submitted < Buffered < Success or a failure.

    A status never moves back and Success and the failures are final, so reports that
    arrive late, out of order or twice change nothing. Returns what happened: delivered,
    failed, progressed, stale, unknown_id or unknown_status. Commits.
    """
    now = now or utcnow()
    message = db.session.scalar(
        select(SmsMessage).where(SmsMessage.provider_message_id == provider_message_id)
    )
    if message is None:
        log.warning("delivery report for unknown message id %s (%s)", provider_message_id, status)
        return "unknown_id"
    if status != DLR_DELIVERED and status not in DLR_FAILED and status not in DLR_PROGRESS:
        log.warning("delivery report with unknown status %r for sms %s", status, message.id)
        return "unknown_status"

    # A "sent" row's provider_status is either the send reply's word (e.g. "Success",
    # meaning the API took the message: rank 0) or an intermediate report. Only a report
    # of a higher rank may replace it; one conditional UPDATE keeps that true when two
    # reports race.
    values: dict[str, object] = {"provider_status": status}
    rank = DLR_PROGRESS.get(status)
    if rank is None:
        not_past = list(DLR_PROGRESS)  # a final status beats every intermediate one
        if status == DLR_DELIVERED:
            values.update(status="delivered", delivered_at=now)
        else:
            error = f"{status}: {failure_reason}" if failure_reason else status
            values.update(status="failed", last_error=error[:255])
    else:
        not_past = [name for name, r in DLR_PROGRESS.items() if r < rank]
    ahead = [name for name in DLR_PROGRESS if name not in not_past]
    conditions = [SmsMessage.id == message.id, SmsMessage.status == "sent"]
    if ahead:
        conditions.append(
            or_(SmsMessage.provider_status.is_(None), SmsMessage.provider_status.not_in(ahead))
        )
    # An UPDATE gives a CursorResult (with rowcount); SQLAlchemy 2.1 types it as a Result.
    moved = cast(
        CursorResult[Any],
        db.session.execute(
            update(SmsMessage)
            .where(*conditions)
            .values(**values)
            .execution_options(synchronize_session=False)
        ),
    ).rowcount
    if moved == 1 and status == DLR_DELIVERED:
        webhook_sms_delivered(message, now)
    db.session.commit()
    if moved != 1:
        log.info(
            "delivery report %s for sms %s ignored: already %s/%s",
            status,
            message.id,
            message.status,
            message.provider_status,
        )
        return "stale"
    if status == DLR_DELIVERED:
        return "delivered"
    if status in DLR_FAILED:
        SMS_FAILED.labels(message.template).inc()
        log.info("sms %s failed at the network: %s %s", message.id, status, failure_reason)
        return "failed"
    return "progressed"
