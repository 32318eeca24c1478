"""One USSD hop: parse the gateway's form, find the session, work out the newest input,
let the current screen handle it, store the state, answer CON/END.

State is JSON in Redis under sessionId + phone with a TTL. The newest input comes from
comparing the text received with the text already handled, so a resent hop gets the same
reply and does nothing twice, and a gateway that sends only the latest input (rather than
the whole path) works too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from app.phone import PhoneError, normalise_phone

log = logging.getLogger("app.ussd")

SESSION_TTL = 300  # seconds: a session lasts at most ~180 s; a little more to resume
RESUME_TTL = 300  # a dropped session may be resumed by the next dial within 5 minutes
MAX_SCREEN = 182  # characters, GSM-7
BACK, HOME, MORE = "0", "00", "98"


class UssdInputError(ValueError):
    """The gateway sent something that is not a USSD hop (no session, no phone)."""


@dataclass(frozen=True)
class UssdRequest:
    session_id: str
    phone: str  # 2547XXXXXXXX
    service_code: str
    text: str
    network: str = ""

    @classmethod
    def from_form(cls, form: Any) -> UssdRequest:
        session_id = str(form.get("sessionId") or "").strip()[:100]
        if not session_id:
            raise UssdInputError("no sessionId")
        try:
            phone = normalise_phone(str(form.get("phoneNumber") or ""))
        except PhoneError as exc:
            raise UssdInputError(str(exc)) from None
        return cls(
            session_id=session_id,
            phone=phone,
            service_code=str(form.get("serviceCode") or "")[:40],
            text=str(form.get("text") or "")[:1000],
            network=str(form.get("networkCode") or "")[:10],
        )


@dataclass(frozen=True)
class UssdResponse:
    body: str
    end: bool

    def render(self) -> str:
        return ("END " if self.end else "CON ") + self.body


@dataclass
class Session:
    """What a session remembers between hops. Never a PIN or an OTP."""

    screen: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    stack: list[str] = field(default_factory=list)
    # The text received at the last hop, as its length and an HMAC: enough to tell a
    # resend or the newest entry, while the text itself (PIN digits among it) is not kept.
    handled_len: int = 0
    handled_mac: str = ""
    reply: str = ""  # the reply given to it (a resent hop gets it again)
    member_id: int | None = None
    language: str = "en"
    authed: bool = False
    error: str = ""  # shown above the screen once (an invalid entry)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Session:
        values = json.loads(raw)
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


# KEYS[1] the session, KEYS[2] the phone's start counter, ARGV[1] the counter's window (s).
_LOAD_OR_COUNT_START = """
local raw = redis.call('GET', KEYS[1])
if raw then return {raw, 0} end
redis.call('SET', KEYS[2], 0, 'EX', ARGV[1], 'NX')
return {false, redis.call('INCR', KEYS[2])}
"""


class SessionStore:
    """One per request: a session read once is not read again (the start limit and the
    hop both ask for it; each Redis command is a round trip)."""

    def __init__(self, redis: Redis, secret: str) -> None:
        self.redis = redis
        self._secret = secret.encode()
        self._read: dict[str, bytes | str | None] = {}

    def mac(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def key(request: UssdRequest) -> str:
        return f"ussd:session:{request.session_id}:{request.phone}"

    def load(self, request: UssdRequest) -> Session | None:
        key = self.key(request)
        if key not in self._read:
            self._read[key] = self.redis.get(key)
        raw = self._read[key]
        return Session.from_json(raw) if raw else None  # a new object each time

    def load_or_count_start(self, request: UssdRequest, starts_key: str, window_s: int) -> int:
        """`load`'s read and, when the session is new, the phone's start counter in one
        round trip (a first hop is the hop the whole network sends most): 0 for a session
        already stored, else the phone's starts in the window so far, this one included.
        The counter is made with its window's expiry when new; INCR keeps that expiry."""
        key = self.key(request)
        raw, count = self.redis.register_script(_LOAD_OR_COUNT_START)(
            keys=[key, starts_key], args=[window_s]
        )
        self._read[key] = raw
        return 0 if raw else int(count)

    def save(self, request: UssdRequest, session: Session) -> None:
        raw = session.to_json()
        self.redis.set(self.key(request), raw, ex=SESSION_TTL)
        self._read[self.key(request)] = raw

    @staticmethod
    def resume_key(phone: str) -> str:
        return f"ussd:resume:{phone}"

    def remember(
        self, request: UssdRequest, session: Session, ended: bool, resumable: bool
    ) -> None:
        """Where a signed-in member is, in case the session drops: the next dial within
        5 minutes may continue from here. An ended session, or the main menu, leaves
        nothing to continue."""
        key = self.resume_key(request.phone)
        if not session.authed or session.screen == "resume":
            return  # not signed in yet, or being offered the snapshot: leave it be
        if ended or not resumable:
            self.redis.delete(key)
            return
        snapshot = {"screen": session.screen, "data": session.data, "stack": session.stack}
        self.redis.set(key, json.dumps(snapshot), ex=RESUME_TTL)

    def take_resume(self, phone: str) -> dict[str, Any] | None:
        raw = self.redis.getdel(self.resume_key(phone))
        return json.loads(raw) if raw else None

    def peek_resume(self, phone: str) -> bool:
        return bool(self.redis.exists(self.resume_key(phone)))


def newest_input(received: str, session: Session, mac: Callable[[str], str]) -> str | None:
    """The member's newest entry, or None when this hop was handled already (a resend).

    Africa's Talking sends every input so far joined by "*"; some gateways send only the
    latest. A member's own "*" inside an entry shows up as an extra separator: the whole
    remainder is the entry.
    """
    n = session.handled_len
    if len(received) == n and hmac.compare_digest(mac(received), session.handled_mac):
        return None
    if n == 0:
        return received
    if (
        len(received) > n
        and received[n] == "*"
        and hmac.compare_digest(mac(received[:n]), session.handled_mac)
    ):
        return received[n + 1 :]
    return received  # the gateway sent just the newest input


@dataclass
class Hop:
    """What a screen sees: the request, the session, the input of this hop, the store."""

    request: UssdRequest
    session: Session
    input: str
    store: SessionStore | None = None


# A screen: render(hop) -> text; handle(hop) -> the next step.
@dataclass(frozen=True)
class Goto:
    screen: str
    push: bool = True  # False for a screen that must not be returned to (a PIN entry)


@dataclass(frozen=True)
class End:
    text: str


@dataclass(frozen=True)
class Invalid:
    error: str


Step = Goto | End | Invalid


@dataclass(frozen=True)
class Screen:
    name: str
    render: Callable[[Hop], str]
    handle: Callable[[Hop], Step]
    authed: bool = True  # needs a PIN-checked member
    navigable: bool = True  # 0 / 00 work here
    # Mid-way through something (an application, a payment): a session cut off here is
    # offered "Continue" on the next dial. A screen that only shows (a balance) is not:
    # hanging up there is how a member ends.
    resumable: bool = False


def run_hop(
    request: UssdRequest,
    store: SessionStore,
    screens: dict[str, Screen],
    start: Callable[[Hop], Step],
    translate: Callable[[str, str], str],
) -> UssdResponse:
    """Apply one hop and answer it. `start` decides the first screen of a new session."""
    session = store.load(request)
    if session is None:
        session = Session()
        hop = Hop(request, session, "", store)
        response = _apply(hop, start(hop), screens, translate)
    else:
        entry = newest_input(request.text, session, store.mac)
        if entry is None:
            return UssdResponse(session.reply[4:], session.reply.startswith("END "))
        hop = Hop(request, session, entry.strip(), store)
        response = _apply(hop, _step(hop, screens, translate), screens, translate)
    session.handled_len = len(request.text)
    session.handled_mac = store.mac(request.text)
    session.reply = response.render()
    store.save(request, session)
    current = screens.get(session.screen)
    store.remember(request, session, response.end, bool(current and current.resumable))
    return response


def _step(hop: Hop, screens: dict[str, Screen], translate: Callable[[str, str], str]) -> Step:
    session = hop.session
    screen = screens[session.screen]
    if screen.navigable and session.authed:
        if hop.input == HOME:
            session.stack.clear()
            return Goto("main", push=False)
        if hop.input == BACK and session.stack:
            return Goto(session.stack.pop(), push=False)
    if hop.input == "":
        return Invalid(translate("error_empty", session.language))
    return screen.handle(hop)


def _apply(
    hop: Hop, step: Step, screens: dict[str, Screen], translate: Callable[[str, str], str]
) -> UssdResponse:
    session = hop.session
    if isinstance(step, End):
        return UssdResponse(_fit(step.text), end=True)
    if isinstance(step, Invalid):
        session.error = step.error
    else:
        if step.push and session.screen and session.screen != step.screen:
            session.stack.append(session.screen)
        session.screen = step.screen
        session.error = ""
    body = screens[session.screen].render(hop)
    if session.error:
        body = f"{session.error}\n{body}"
    return UssdResponse(_fit(body), end=False)


def _fit(text: str) -> str:
    """Never more than a screen: a body over the limit is cut (and logged, a menu bug)."""
    if len(text) > MAX_SCREEN:
        log.error("ussd screen over %d chars: %r", MAX_SCREEN, text[:60])
        return text[:MAX_SCREEN]
    return text
