"""Every SMS the SACCO sends, in English and Kiswahili, and how long each one is.

Templates are plain `str.format` strings so a translator can read them. Every character is
in the GSM 03.38 default alphabet: one character outside it (a curly quote, an emoji)
turns the whole message into UCS-2, where a segment holds 70 characters instead of 160
and the member pays for two or three messages. tests/test_sms_templates.py renders each
template with worst-case data and checks that; a reminder must fit one segment.

`render_sms` formats money (Decimal) as "KES 1,234.00" and dates as 31/12/2026, so
callers pass values, not strings.
"""

from __future__ import annotations

import math
import re
import string
from datetime import date, datetime
from decimal import Decimal

from app.errors import SaccoError
from app.money import round_money


class SmsTemplateError(SaccoError):
    """An unknown template or a missing parameter: a programming error, not member input."""


# The GSM 03.38 default alphabet (without ESC, which only introduces an extended char).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each costs two septets (ESC + the char).
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")

GSM7_SINGLE, GSM7_PART = 160, 153  # septets; a multipart SMS spends 7 on its header
UCS2_SINGLE, UCS2_PART = 70, 67  # UTF-16 code units


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text)


def gsm7_segments(text: str) -> int:
    """How many SMS the network bills for `text` (an empty text still costs one)."""
    if is_gsm7(text):
        septets = [2 if ch in GSM7_EXTENDED else 1 for ch in text]
        if sum(septets) <= GSM7_SINGLE:
            return 1
        # A part never splits an ESC pair, so fill parts char by char.
        parts, used = 1, 0
        for size in septets:
            if used + size > GSM7_PART:
                parts, used = parts + 1, 0
            used += size
        return parts
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= UCS2_SINGLE else math.ceil(units / UCS2_PART)


def kes(amount: Decimal) -> str:
    """Money as members read it: KES 1,234.00 (rounded through the one rounding rule)."""
    return f"KES {round_money(amount):,.2f}"


def sms_date(day: date) -> str:
    return day.strftime("%d/%m/%Y")


_HELP_EN = (
    "SMS keywords: BAL - your balances, STMT - mini statement, PROMISE amount date - "
    "promise to pay, YES/NO loan - answer a guarantee request, HELP - this list, "
    "STOP - no more reminders, START - reminders again."
)
_HELP_SW = (
    "Maneno ya SMS: SALIO - salio lako, TAARIFA - taarifa fupi, AHADI kiasi tarehe - "
    "ahadi ya kulipa, NDIO/HAPANA mkopo - jibu ombi la udhamini, MSAADA - orodha hii, "
    "SIMAMA - acha vikumbusho, ANZA - vikumbusho tena."
)

# name -> {"en": ..., "sw": ...}. Reminder names start with "reminder_" or "promise_" and
# must fit one segment with worst-case data.
TEMPLATES: dict[str, dict[str, str]] = {
    "deposit_received": {
        "en": "Deposit of {amount} received. Savings balance {savings_balance}. Ref {receipt}.",
        "sw": "Umeweka {amount}. Salio la akiba ni {savings_balance}. Kumb. {receipt}.",
    },
    # Money in to an account other than deposits (withdrawable savings, share capital).
    "account_deposit_received": {
        "en": "{amount} received to account {account}. Balance {savings_balance}. Ref {receipt}.",
        "sw": "Tumepokea {amount} kwa akaunti {account}. Salio {savings_balance}. Kumb. {receipt}.",
    },
    "repayment_received": {
        "en": "Payment of {amount} received for loan {loan_no}. Balance left {balance_left}. "
        "Ref {receipt}.",
        "sw": "Tumepokea malipo ya {amount} ya mkopo {loan_no}. Salio la mkopo ni "
        "{balance_left}. Kumb. {receipt}.",
    },
    "payment_failed": {
        "en": "Your payment of {amount} did not go through: {reason}. No money was taken. "
        "Please try again.",
        "sw": "Malipo yako ya {amount} hayakufanikiwa: {reason}. Hakuna pesa iliyokatwa. "
        "Tafadhali jaribu tena.",
    },
    "loan_approved": {
        "en": "Your loan {loan_no} of {amount} is approved. We will send the money to your "
        "M-PESA shortly.",
        "sw": "Mkopo wako {loan_no} wa {amount} umeidhinishwa. Tutatuma pesa kwa M-PESA "
        "yako hivi karibuni.",
    },
    "guarantee_request": {
        "en": "{applicant} asks you to guarantee {amount} of loan {loan_no}. Dial {ussd} "
        "(Guarantees) or reply YES {loan_no} or NO {loan_no} by {date}.",
        "sw": "{applicant} anakuomba udhamini wa {amount} kwa mkopo {loan_no}. Piga {ussd} "
        "(Udhamini) au jibu YES {loan_no} au NO {loan_no} kufikia {date}.",
    },
    "guarantee_accepted": {
        "en": "{guarantor} has guaranteed {amount} of your loan {loan_no}.",
        "sw": "{guarantor} amekudhamini {amount} kwa mkopo wako {loan_no}.",
    },
    "guarantee_declined": {
        "en": "{guarantor} did not agree to guarantee your loan {loan_no}. Ask another member "
        "by USSD or visit the SACCO office.",
        "sw": "{guarantor} hakukubali kudhamini mkopo wako {loan_no}. Muombe mwanachama "
        "mwingine kwa USSD au tembelea ofisi ya SACCO.",
    },
    "exit_settled": {
        "en": "Your SACCO membership has ended. Loans paid from your money: {owed}. "
        "Refund due to you: {refund}. Thank you for saving with us.",
        "sw": "Uanachama wako wa SACCO umekamilika. Mikopo iliyolipwa kutoka pesa zako: "
        "{owed}. Marejesho yako: {refund}. Asante kwa kuweka akiba nasi.",
    },
    # Standing orders (savings to a loan, deposits or shares), once per order and month.
    "standing_order_done": {
        "en": "Standing order: {moved} of {asked} moved from your savings to {target}.",
        "sw": "Agizo la kudumu: {moved} kati ya {asked} zimehamishwa kutoka akiba yako "
        "kwenda {target}.",
    },
    "standing_order_short": {
        "en": "Standing order to {target} of {asked} not paid: your savings are too low. "
        "Save by Paybill or USSD.",
        "sw": "Agizo la kudumu la {asked} kwenda {target} halikulipwa: akiba yako haitoshi. "
        "Weka akiba kwa Paybill au USSD.",
    },
    "guarantee_expired": {
        "en": "{guarantor} did not answer your request to guarantee loan {loan_no} in time. "
        "Ask another member by USSD or visit the SACCO office.",
        "sw": "{guarantor} hakujibu ombi la kudhamini mkopo {loan_no} kwa wakati. Muombe "
        "mwanachama mwingine kwa USSD au tembelea ofisi ya SACCO.",
    },
    # Replies to a guarantor who answered by SMS (YES/NO L...), and their default notice.
    "guarantor_accepted": {
        "en": "You now guarantee {amount} of loan {loan_no} for {applicant}. It is held from "
        "your deposits. Free deposits now {free}.",
        "sw": "Sasa unadhamini {amount} ya mkopo {loan_no} wa {applicant}. Kiasi hicho "
        "kimeshikiliwa kwenye akiba yako. Akiba huru sasa ni {free}.",
    },
    "guarantor_declined": {
        "en": "You declined to guarantee loan {loan_no} for {applicant}. They have been told.",
        "sw": "Umekataa kudhamini mkopo {loan_no} wa {applicant}. Ameshaarifiwa.",
    },
    "guarantor_refused": {
        "en": "Your answer was not recorded: {reason}.",
        "sw": "Jibu lako halikurekodiwa: {reason}.",
    },
    "guarantor_default": {
        "en": "Loan {loan_no} of {borrower}, which you guarantee, is in default. {amount} of "
        "your deposits is held for it and may be recovered. Call the SACCO office.",
        "sw": "Mkopo {loan_no} wa {borrower} unaoudhamini umeshindwa kulipwa. {amount} ya akiba "
        "yako imeshikiliwa kwa ajili yake na inaweza kukatwa. Piga simu ofisini.",
    },
    "guarantee_recovered": {
        "en": "{amount} was taken from your deposits for loan {loan_no} of {applicant}, which "
        "you guaranteed, as the SACCO decided after it defaulted. Visit the SACCO office.",
        "sw": "{amount} zimekatwa kutoka akiba yako kwa mkopo {loan_no} wa {applicant} "
        "uliodhamini, kama SACCO ilivyoamua baada ya kutolipwa. Tembelea ofisi ya SACCO.",
    },
    "loan_rejected": {
        "en": "Sorry, your loan application {loan_no} was not approved: {reason}.",
        "sw": "Samahani, ombi lako la mkopo {loan_no} halikukubaliwa: {reason}.",
    },
    "loan_disbursed": {
        "en": "Loan {loan_no} of {amount} sent to your M-PESA, fee {fee}. Ref {receipt}. "
        "First installment {first_installment} due {first_due_date}.",
        "sw": "Mkopo {loan_no} wa {amount} umetumwa kwa M-PESA yako, ada {fee}. "
        "Kumb. {receipt}. Awamu ya kwanza {first_installment} tarehe {first_due_date}.",
    },
    # A withdrawal to M-PESA from a savings account: paid, or failed with its money back.
    "withdrawal_sent": {
        "en": "{amount} sent to your M-PESA from account {account}, fee {fee}. Ref {receipt}. "
        "Savings balance {savings}.",
        "sw": "{amount} zimetumwa kwa M-PESA yako kutoka akaunti {account}, ada {fee}. "
        "Kumb. {receipt}. Salio la akiba {savings}.",
    },
    "withdrawal_failed": {
        "en": "Your withdrawal of {amount} from account {account} did not go through: "
        "{reason}. The money and the fee {fee} are back in your savings.",
        "sw": "Utoaji wako wa {amount} kutoka akaunti {account} haukufanikiwa: {reason}. "
        "Pesa na ada {fee} zimerudishwa kwenye akiba yako.",
    },
    "pin_locked": {
        "en": "SACCO USSD is locked after too many wrong tries (PIN, ID number or code). Try "
        "again in {minutes} minutes or call the SACCO office. If this was not you, call us now.",
        "sw": "USSD ya SACCO imefungwa baada ya majaribio mengi yasiyo sahihi (PIN, nambari ya "
        "kitambulisho au nambari ya siri). Jaribu tena baada ya dakika {minutes} au piga simu "
        "ofisini. Kama si wewe, tupigie sasa.",
    },
    "pin_reset_code": {
        "en": "Your code to reset your SACCO PIN is {otp}. Enter it on the USSD screen within "
        "{minutes} minutes. Do not share it: SACCO staff never ask for it.",
        "sw": "Nambari yako ya siri ya kubadilisha PIN ya SACCO ni {otp}. Iweke kwenye skrini "
        "ya USSD ndani ya dakika {minutes}. Usimpe mtu: wafanyakazi wa SACCO hawaiulizi.",
    },
    "pin_changed": {
        "en": "Your SACCO PIN was changed. If you did not do this, call the SACCO office now.",
        "sw": "PIN yako ya SACCO imebadilishwa. Kama si wewe, piga simu ofisini sasa.",
    },
    "phone_change_otp": {
        "en": "Your code to change your SACCO phone number is {otp}. It expires in {minutes} "
        "minutes. Do not share it with anyone.",
        "sw": "Nambari yako ya siri ya kubadilisha simu ni {otp}. Itaisha baada ya dakika "
        "{minutes}. Usimpe mtu yeyote.",
    },
    "phone_changed": {
        "en": "Your SACCO phone number is now the one ending {phone_tail}. If you did not "
        "ask for this, call the SACCO office now.",
        "sw": "Nambari yako ya simu ya SACCO sasa ni inayoishia {phone_tail}. Kama "
        "hukuomba hili, piga simu ofisini sasa.",
    },
    "statement": {
        "en": "Statement:\n{lines}\nSavings {savings}\nShares {shares}\nLoan {loan_balance}",
        "sw": "Taarifa:\n{lines}\nAkiba {savings}\nHisa {shares}\nMkopo {loan_balance}",
    },
    "promise_recorded": {
        "en": "Thank you. Your promise to pay {amount} on loan {loan_no} by {date} is recorded.",
        "sw": "Asante. Ahadi yako ya kulipa {amount} ya mkopo {loan_no} kufikia {date} "
        "imerekodiwa.",
    },
    "balance": {
        "en": "Savings {savings}. Shares {shares}. Loan balance {loan_balance}.",
        "sw": "Akiba {savings}. Hisa {shares}. Salio la mkopo {loan_balance}.",
    },
    "help": {"en": _HELP_EN, "sw": _HELP_SW},
    "promise_refused": {
        "en": "Promise not recorded: {reason}.",
        "sw": "Ahadi haikurekodiwa: {reason}.",
    },
    "not_member": {
        "en": "This phone number is not registered with the SACCO. Visit our office to join.",
        "sw": "Nambari hii ya simu haijasajiliwa na SACCO. Tembelea ofisi yetu kujiunga.",
    },
    "opted_out": {
        "en": "You will get no more reminders. Receipts still come. Send START to get "
        "reminders again.",
        "sw": "Hutapokea vikumbusho tena. Risiti zitaendelea kuja. Tuma ANZA kupata "
        "vikumbusho tena.",
    },
    "opted_in": {
        "en": "Reminders are on again. Send STOP to turn them off.",
        "sw": "Vikumbusho vimewashwa tena. Tuma SIMAMA kuvizima.",
    },
    "reminder_due_3d": {
        "en": "Reminder: {amount} on loan {loan_no} is due on {due_date}. Pay via Paybill "
        "{paybill}, Account {account}. Ignore if paid.",
        "sw": "Kumbusho: {amount} ya mkopo {loan_no} inadaiwa tarehe {due_date}. Lipa "
        "kupitia Paybill {paybill}, Akaunti {account}. Puuza kama umelipa.",
    },
    "reminder_due_today": {
        "en": "Loan {loan_no}: {amount} is due today {due_date}. Pay via Paybill {paybill}, "
        "Account {account}. Ignore if paid.",
        "sw": "Mkopo {loan_no}: {amount} inadaiwa leo {due_date}. Lipa kupitia Paybill "
        "{paybill}, Akaunti {account}. Puuza kama umelipa.",
    },
    "reminder_overdue_1d": {
        "en": "Loan {loan_no}: {amount} is {days} day(s) overdue. Please pay today via "
        "Paybill {paybill}, Account {account}.",
        "sw": "Mkopo {loan_no}: {amount} imechelewa siku {days}. Tafadhali lipa leo kupitia "
        "Paybill {paybill}, Akaunti {account}.",
    },
    "reminder_overdue_7d": {
        "en": "Loan {loan_no}: {amount} is {days} days overdue. Please pay now to keep your "
        "record clean. Paybill {paybill}, Account {account}.",
        "sw": "Mkopo {loan_no}: {amount} imechelewa siku {days}. Tafadhali lipa sasa kulinda "
        "rekodi yako. Paybill {paybill}, Akaunti {account}.",
    },
    "reminder_overdue_30d": {
        "en": "Loan {loan_no} is in default: {amount} is {days} days overdue. Your guarantors "
        "may be contacted. Pay via Paybill {paybill}, Acc {account}.",
        "sw": "Mkopo {loan_no} umeshindwa kulipwa: {amount} imechelewa siku {days}. "
        "Wadhamini wako wanaweza kuarifiwa. Lipa Paybill {paybill}, Akaunti {account}.",
    },
    "reminder_agreement_due": {
        "en": "Reminder: {amount} of your settlement on loan {loan_no} is due tomorrow {date}. "
        "Paybill {paybill}, Account {account}.",
        "sw": "Kumbusho: {amount} ya makubaliano ya mkopo {loan_no} inadaiwa kesho {date}. "
        "Paybill {paybill}, Akaunti {account}.",
    },
    "promise_due_tomorrow": {
        "en": "Reminder: you promised to pay {amount} on loan {loan_no} by tomorrow {date}. "
        "Paybill {paybill}, Account {account}.",
        "sw": "Kumbusho: uliahidi kulipa {amount} ya mkopo {loan_no} kufikia kesho {date}. "
        "Paybill {paybill}, Akaunti {account}.",
    },
    "dividend_paid": {
        "en": "Dividend {year}: {dividend} on your shares and {interest} interest on your "
        "deposits, less tax {tax}. {net} is credited to your savings account {account}.",
        "sw": "Gawio la {year}: {dividend} kwa hisa zako na riba {interest} kwa akiba yako, "
        "kodi {tax} imekatwa. {net} imewekwa kwenye akaunti yako ya akiba {account}.",
    },
    "dividend_paid_mpesa": {
        "en": "Dividend {year}: {dividend} on your shares and {interest} interest on your "
        "deposits, less tax {tax}. {net} is on its way to your M-PESA from account {account}.",
        "sw": "Gawio la {year}: {dividend} kwa hisa zako na riba {interest} kwa akiba yako, "
        "kodi {tax} imekatwa. {net} inatumwa kwa M-PESA yako kutoka akaunti {account}.",
    },
    "dividend_paid_arrears": {
        "en": "Dividend {year}: {dividend} on shares and {interest} interest on deposits, "
        "less tax {tax}. {amount} paid your loan arrears; {net} is credited to account "
        "{account}.",
        "sw": "Gawio la {year}: {dividend} kwa hisa na riba {interest} kwa akiba, kodi {tax} "
        "imekatwa. {amount} imelipa madeni ya mkopo wako; {net} imewekwa kwenye akaunti "
        "{account}.",
    },
    "promise_broken": {
        "en": "Your promise to pay {amount} on loan {loan_no} by {date} was not kept. Please "
        "pay now or call the SACCO office.",
        "sw": "Ahadi yako ya kulipa {amount} ya mkopo {loan_no} kufikia {date} haikutimizwa. "
        "Tafadhali lipa sasa au piga simu ofisini.",
    },
}

# Messages whose body carries a one-time code: staff read them masked, everywhere the
# console shows an outbox body (sms_body_for_staff), and they are never sent again.
CODE_TEMPLATES = frozenset({"phone_change_otp", "pin_reset_code"})
_CODE = re.compile(r"\d{4,}")

REMINDER_TEMPLATES = tuple(
    name for name in TEMPLATES if name.startswith(("reminder_", "promise_due", "promise_broken"))
)

_FORMATTER = string.Formatter()


def template_params(template: str) -> set[str]:
    """The placeholders a template needs (the same in both languages)."""
    fields: set[str] = set()
    for text in TEMPLATES[template].values():
        fields.update(name for _, name, _, _ in _FORMATTER.parse(text) if name)
    return fields


def _shown(value: object) -> object:
    # datetime is a date too, but a timestamp would not belong in an SMS: refuse it.
    if isinstance(value, datetime):
        raise SmsTemplateError("pass a date, not a datetime, to an SMS template")
    if isinstance(value, Decimal):
        return kes(value)
    if isinstance(value, date):
        return sms_date(value)
    if isinstance(value, float):
        raise SmsTemplateError("money is Decimal, never float")
    return value


def render_sms(template: str, language: str, **params: object) -> str:
    """The body of `template` in `language` (English when the language is unknown)."""
    texts = TEMPLATES.get(template)
    if texts is None:
        raise SmsTemplateError(f"unknown SMS template {template!r}")
    text = texts.get(language) or texts["en"]
    missing = template_params(template) - params.keys()
    if missing:
        raise SmsTemplateError(f"template {template!r} needs {', '.join(sorted(missing))}")
    return text.format(**{key: _shown(value) for key, value in params.items()})


def sms_body_for_staff(template: str, body: str) -> str:
    """The body as any staff member may read it: in a code-carrying message every run of
    4 or more digits (the code) is starred out; the member's phone is the code's only
    reader."""
    if template in CODE_TEMPLATES:
        return _CODE.sub(lambda m: "*" * len(m.group()), body)
    return body
