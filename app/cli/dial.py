"""`sacco dial`: a terminal phone that talks to the running server's /ussd.

It plays Africa's Talking's part of a USSD session (contracts/africastalking.md, "USSD
hop"): one sessionId per dial, a form POST per hop with every input so far joined by "*",
and a reply that must start with "CON " or "END ". Menu authors see each screen's length
against the 182-character limit and a warning when a character forces UCS-2. When the
session ends (the menu's END, or the member hangs up) it posts `/ussd/events` as the
gateway does ("USSD end of session"), without what was typed.

The server: `--url`, else this machine's port `PORT` when it is set, else the one the
running `sacco up` wrote in the instance folder, else PORT's default (5000).
"""

from __future__ import annotations

import os
import secrets
import sys
import textwrap
import time
from datetime import UTC, datetime, tzinfo
from typing import NoReturn

import click
import requests
from flask import current_app
from flask.cli import with_appcontext

from app.cli.runtime import running_server_url
from app.phone import PhoneError, e164

# The gateway waits about 10 s for a hop; 15 s leaves room for a slow dev machine while
# still failing a hang instead of waiting for ever.
HOP_TIMEOUT_SECONDS = 15
SCREEN_LIMIT_GSM7 = 182
# One character outside GSM 03.38 switches the screen to UCS-2 (contract: "about 80").
SCREEN_LIMIT_UCS2 = 80
SANDBOX_NETWORK = "99999"
# Phones wrap long lines too; wrapping the box keeps an over-long screen readable.
DISPLAY_WIDTH = 60

# GSM 03.38 default alphabet (the escape to the extension table, 0x1B, left out: it is not
# a character a screen can contain on its own).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each is sent as escape + character, so it costs two.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")


def gsm7_length(text: str) -> int | None:
    """Septets `text` takes in the GSM 03.38 default alphabet (extension characters count
    two), or None when some character is outside it and the text would go as UCS-2."""
    length = 0
    for char in text:
        if char in GSM7_BASIC:
            length += 1
        elif char in GSM7_EXTENSION:
            length += 2
        else:
            return None
    return length


def non_gsm7(text: str) -> list[str]:
    """The distinct characters of `text` outside GSM 03.38 (basic and extension), in order."""
    seen: list[str] = []
    for char in text:
        if char not in GSM7_BASIC and char not in GSM7_EXTENSION and char not in seen:
            seen.append(char)
    return seen


def _fail(message: str) -> NoReturn:
    """One line on stderr, exit 1: never a traceback for a server that misbehaves."""
    click.echo(f"dial: {message}", err=True)
    raise SystemExit(1)


def _show(screen: str) -> None:
    """The screen in a box, its length under it, and a warning if a phone would mangle it."""
    lines = [
        wrapped
        for line in screen.split("\n")
        for wrapped in (textwrap.wrap(line, DISPLAY_WIDTH) if len(line) > DISPLAY_WIDTH else [line])
    ]
    width = max(len(line) for line in lines)
    click.echo("┌" + "─" * (width + 2) + "┐")
    for line in lines:
        click.echo(f"│ {line.ljust(width)} │")
    click.echo("└" + "─" * (width + 2) + "┘")

    units = gsm7_length(screen)
    if units is None:
        click.secho(f"({len(screen)}/{SCREEN_LIMIT_UCS2} chars, UCS-2)", dim=True)
        shown = ", ".join(f"{char!r} (U+{ord(char):04X})" for char in non_gsm7(screen))
        click.secho(
            f"warning: not GSM-7: {shown}; the screen goes as UCS-2 and holds only about "
            f"{SCREEN_LIMIT_UCS2} characters",
            fg="yellow",
        )
        if len(screen) > SCREEN_LIMIT_UCS2:
            click.secho(
                f"warning: {len(screen)} characters, over the {SCREEN_LIMIT_UCS2} a UCS-2 "
                "screen holds: the member sees it cut",
                fg="yellow",
            )
        return
    click.secho(f"({units}/{SCREEN_LIMIT_GSM7} chars)", dim=True)
    if units > SCREEN_LIMIT_GSM7:
        click.secho(
            f"warning: {units} characters, over the {SCREEN_LIMIT_GSM7} a screen holds: "
            "the member sees it cut",
            fg="yellow",
        )


def _hop(
    endpoint: str, base_url: str, form: dict[str, str], params: dict[str, str] | None = None
) -> tuple[str, str]:
    """POST one hop as the gateway does; ("CON"|"END", screen) or exit 1 with one line."""
    try:
        reply = requests.post(endpoint, data=form, params=params, timeout=HOP_TIMEOUT_SECONDS)
    except requests.Timeout:
        _fail(
            f"the server at {base_url} took over {HOP_TIMEOUT_SECONDS} s to answer "
            "(the gateway would have ended the session)"
        )
    except requests.ConnectionError:
        _fail(f"the server at {base_url} is not answering (start it with make run)")
    except requests.RequestException as exc:
        _fail(f"could not reach {endpoint}: {exc}")
    if reply.status_code == 403:
        _fail(
            f"{endpoint} answered HTTP 403: the server takes /ussd only from AT_ALLOWED_IPS "
            "(add 127.0.0.1, or leave it empty, to dial from here) and with AT_CALLBACK_TOKEN "
            "when set (this command sends its own setting)"
        )
    if reply.status_code != 200:
        _fail(
            f"{endpoint} answered HTTP {reply.status_code} "
            "(the gateway would end the session for the member)"
        )
    # requests assumes ISO-8859-1 for text/* without a charset; our server speaks UTF-8,
    # and a mis-decoded curly quote would hide exactly the problem this tool reports.
    content_type = reply.headers.get("Content-Type", "")
    encoding = reply.encoding if "charset" in content_type.lower() else "utf-8"
    body = reply.content.decode(encoding or "utf-8", errors="replace")
    kind, screen = body[:4], body[4:]
    if kind not in ("CON ", "END "):
        shown = body if len(body) <= 60 else body[:60] + "…"
        _fail(
            f"{endpoint} answered {shown!r}, which starts with neither 'CON ' nor 'END ' "
            "(the gateway would end the session for the member)"
        )
    if not content_type.lower().startswith("text/plain"):
        click.secho(
            f"warning: Content-Type is {content_type or 'missing'!r}; the gateway expects "
            "text/plain",
            fg="yellow",
        )
    return kind.strip(), screen


@click.command("dial")
@click.option(
    "--phone",
    default="0711223344",
    show_default=True,
    help="The member's phone, 07XXXXXXXX or 2547XXXXXXXX.",
)
@click.option("--url", default=None, help="The server. Default: this app on 127.0.0.1:PORT.")
@click.option("--service-code", default=None, help="Default: USSD_SERVICE_CODE (*384*96#).")
@click.option(
    "--network",
    default=SANDBOX_NETWORK,
    show_default=True,
    help="networkCode: 63902 Safaricom, 63903 Airtel, 63907 Telkom, 99999 sandbox.",
)
@with_appcontext
def dial_cmd(phone: str, url: str | None, service_code: str | None, network: str) -> None:
    """Dial the running server's USSD menu from the terminal, as Africa's Talking would.

    Each screen is shown in a box with its length (a warning when it is over 182
    characters or not GSM-7); type a reply after "> " and press Enter. Ctrl-D or Ctrl-C
    hangs up. Replies can be piped in too:

    \b
        printf '1\\n2\\n' | sacco dial --phone 0722000111
    """
    try:
        phone_number = e164(phone)
    except PhoneError as exc:
        _fail(str(exc))
    settings = current_app.config["SETTINGS"]
    base_url = (url or _server_url(settings.local_base_url)).rstrip("/")
    endpoint = f"{base_url}/ussd"
    # With AT_CALLBACK_TOKEN set the server wants it in the URL, as the gateway sends it.
    params = {"token": settings.AT_CALLBACK_TOKEN} if settings.AT_CALLBACK_TOKEN else None
    form = {
        # Fresh per dial, in the gateway's shape: servers key session state by it.
        "sessionId": "ATUid_" + secrets.token_hex(8),
        "serviceCode": service_code or settings.USSD_SERVICE_CODE,
        "phoneNumber": phone_number,
        "networkCode": network,
        "text": "",
    }
    # Read stdin directly (not click.prompt) so piped and test input work line by line
    # and an end of input is a hang-up, not an error. sys.stdin, not click.get_text_stream
    # (deprecated in Click 8.5); CliRunner swaps sys.stdin, so tests feed it too.
    stdin = sys.stdin
    echo_input = not stdin.isatty()  # a typed reply is already on screen; a piped one is not
    inputs: list[str] = []
    session = _Session(form, base_url, params, settings.tz)
    try:
        while True:
            kind, screen = _hop(endpoint, base_url, form, params)
            session.answered(f"{kind} {screen}")
            _show(screen)
            if kind == "END":
                session.end("Success")
                return
            click.echo("> ", nl=False)
            line = stdin.readline()
            if not line:
                click.echo()
                click.echo("hung up")
                session.end("Incomplete")
                return
            answer = line.rstrip("\r\n")
            if echo_input:
                click.echo(answer)
            inputs.append(answer)
            # The gateway resends the whole history each hop, not just the newest input.
            form["text"] = "*".join(inputs)
    except KeyboardInterrupt:
        click.echo()
        click.echo("hung up")
        session.end("Incomplete")


def _server_url(default: str) -> str:
    """PORT when set here, else what a running `sacco up` wrote, else the default port."""
    if os.environ.get("PORT", "").strip():
        return default
    return running_server_url(current_app.instance_path) or default


class _Session:
    """What the gateway counts for its end-of-session notice: hops, time, last screen."""

    def __init__(
        self, form: dict[str, str], base_url: str, params: dict[str, str] | None, tz: tzinfo
    ) -> None:
        self.form, self.base_url, self.params, self.tz = form, base_url, params, tz
        self.started = time.monotonic()
        self.hops = 0
        self.last = ""

    def answered(self, body: str) -> None:
        self.hops += 1
        self.last = body

    def end(self, status: str) -> None:
        """POST /ussd/events; a server that does not take it gets a warning, not a failure
        (the member's session is over either way)."""
        if not self.hops:
            return
        event = {
            "date": datetime.now(UTC).astimezone(self.tz).strftime("%Y-%m-%d %H:%M:%S"),
            "sessionId": self.form["sessionId"],
            "serviceCode": self.form["serviceCode"],
            "networkCode": self.form["networkCode"],
            "phoneNumber": self.form["phoneNumber"],
            "status": status,
            "cost": "KES 0.00",
            "durationInMillis": str(int((time.monotonic() - self.started) * 1000)),
            "hopsCount": str(self.hops),
            "lastAppResponse": self.last,
            "errorMessage": "" if status == "Success" else "the member hung up",
        }
        endpoint = f"{self.base_url}/ussd/events"
        try:
            reply = requests.post(
                endpoint, data=event, params=self.params, timeout=HOP_TIMEOUT_SECONDS
            )
        except requests.RequestException as exc:
            click.secho(f"warning: {endpoint} not told of the session's end: {exc}", fg="yellow")
            return
        except KeyboardInterrupt:
            return  # Ctrl-C again while reporting: the member is gone, so is the report
        if reply.status_code != 200:
            click.secho(
                f"warning: {endpoint} answered HTTP {reply.status_code} to the session's end",
                fg="yellow",
            )
