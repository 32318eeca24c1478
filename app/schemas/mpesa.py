"""Daraja callback bodies (contracts/daraja.md), one schema per payload.

Providers add fields, so every schema EXCLUDEs unknown keys. What the field has taught
integrators is absorbed here, once: result codes come as numbers or strings (and
"00000000" for success), amounts as numbers or strings, metadata is read by name, an item
may have no Value, a key may repeat, and a ReferenceItem may be an object or a list. Each
schema loads to a small flat dict that the services read.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, pre_load


def result_code(value: object) -> str:
    """One form for a result code: 0, "0", 0.0 and "00000000" are all "0"."""
    if isinstance(value, bool) or value is None:
        raise ValidationError("not a result code")
    if isinstance(value, int | float | Decimal):
        if value != int(value):
            raise ValidationError("not a result code")
        return str(int(value))
    text = str(value).strip()
    if not text:
        raise ValidationError("empty result code")
    if text.isdigit():
        return str(int(text))
    return text


def amount_of(value: object) -> Decimal | None:
    """An amount given as a number or a string; None when absent or unreadable."""
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value).strip().replace(",", ""))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def pairs(value: object, key: str, val: str) -> dict[str, Any]:
    """A Daraja list of {Name/Key, Value} (or one such object) as a dict; the first item
    with a value wins when a key repeats, and an item without Value is skipped."""
    items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    out: dict[str, Any] = {}
    for item in items:
        if isinstance(item, dict) and item.get(key) and val in item and item[key] not in out:
            out[str(item[key])] = item[val]
    return out


def kenyan_time(value: object, tz: ZoneInfo, formats: tuple[str, ...]) -> datetime | None:
    """A Daraja time (Kenyan, in one of `formats`) as an aware datetime; None if odd."""
    if value is None:
        return None
    text = str(value).strip()
    if text.endswith(".0"):  # a TransactionDate number that went through a float
        text = text[:-2]
    for fmt in formats:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=tz)
        except ValueError:
            continue
    return None


class _Webhook(Schema):
    class Meta:
        unknown = EXCLUDE


class _Code(fields.Field):
    def _deserialize(self, value: object, attr: str | None, data: Any, **kwargs: Any) -> str:
        return result_code(value)


class _Items(_Webhook):
    Item = fields.Raw(load_default=list)


class _StkCallback(_Webhook):
    MerchantRequestID = fields.String(load_default=None)
    CheckoutRequestID = fields.String(required=True, validate=lambda s: 0 < len(s) <= 64)
    ResultCode = _Code(required=True)
    ResultDesc = fields.String(load_default="")
    CallbackMetadata = fields.Nested(_Items, load_default=None)


class _StkBody(_Webhook):
    stkCallback = fields.Nested(_StkCallback, required=True)  # noqa: N815 - Daraja's key


class StkCallbackSchema(_Webhook):
    Body = fields.Nested(_StkBody, required=True)

    @post_load
    def flatten(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        cb = data["Body"]["stkCallback"]
        meta = pairs((cb.get("CallbackMetadata") or {}).get("Item"), "Name", "Value")
        phone = meta.get("PhoneNumber")
        return {
            "checkout_request_id": cb["CheckoutRequestID"],
            "merchant_request_id": cb.get("MerchantRequestID"),
            "result_code": cb["ResultCode"],
            "result_desc": cb.get("ResultDesc") or "",
            "amount": amount_of(meta.get("Amount")),
            "receipt": str(meta["MpesaReceiptNumber"]).strip().upper()
            if meta.get("MpesaReceiptNumber")
            else None,
            "transaction_date": meta.get("TransactionDate"),
            "phone": str(phone).split(".")[0].strip() if phone is not None else None,
        }


class C2BSchema(_Webhook):
    """Validation and confirmation share this body."""

    TransactionType = fields.String(load_default="")
    TransID = fields.String(required=True, validate=lambda s: 0 < len(s.strip()) <= 20)
    TransTime = fields.Raw(load_default=None)
    TransAmount = fields.Raw(required=True)
    BusinessShortCode = fields.Raw(load_default=None)
    BillRefNumber = fields.Raw(load_default="")
    MSISDN = fields.Raw(load_default="")
    FirstName = fields.String(load_default="", allow_none=True)
    MiddleName = fields.String(load_default="", allow_none=True)
    LastName = fields.String(load_default="", allow_none=True)

    @post_load
    def flatten(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        amount = amount_of(data["TransAmount"])
        if amount is None:
            raise ValidationError("TransAmount is not an amount", "TransAmount")
        names = (data.get(k) or "" for k in ("FirstName", "MiddleName", "LastName"))
        return {
            "trans_id": data["TransID"].strip().upper(),
            "trans_time": data.get("TransTime"),
            "amount": amount,
            "shortcode": str(data.get("BusinessShortCode") or "").strip(),
            "bill_ref": str(data.get("BillRefNumber") or "").strip(),
            "msisdn": str(data.get("MSISDN") or "").strip(),
            "payer_name": " ".join(n.strip() for n in names if n.strip())[:120],
        }


class _Params(_Webhook):
    ResultParameter = fields.Raw(load_default=list)


class _Reference(_Webhook):
    ReferenceItem = fields.Raw(load_default=list)


class _Result(_Webhook):
    ResultType = fields.Raw(load_default=None)
    ResultCode = _Code(required=True)
    ResultDesc = fields.String(load_default="")
    OriginatorConversationID = fields.String(load_default=None)
    ConversationID = fields.String(load_default=None)
    TransactionID = fields.String(load_default=None, allow_none=True)
    ResultParameters = fields.Nested(_Params, load_default=None, allow_none=True)
    ReferenceData = fields.Nested(_Reference, load_default=None, allow_none=True)


class ResultSchema(_Webhook):
    """B2C results and timeouts, and Transaction Status results: one envelope."""

    Result = fields.Nested(_Result, required=True)

    @pre_load
    def accept_bare(self, data: Any, **kwargs: Any) -> Any:
        # Some queue-timeout bodies come without the Result wrapper.
        if isinstance(data, dict) and "Result" not in data and "ResultCode" in data:
            return {"Result": data}
        return data

    @post_load
    def flatten(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        r = data["Result"]
        params = pairs((r.get("ResultParameters") or {}).get("ResultParameter"), "Key", "Value")
        return {
            "result_code": r["ResultCode"],
            "result_desc": r.get("ResultDesc") or "",
            "originator_conversation_id": (r.get("OriginatorConversationID") or "").strip() or None,
            "conversation_id": (r.get("ConversationID") or "").strip() or None,
            "transaction_id": (r.get("TransactionID") or "").strip().upper() or None,
            "params": params,
        }
