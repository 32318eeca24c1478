"""`sacco dial` against a stub USSD server over real HTTP: the forms it posts are the
gateway's (contracts/africastalking.md, "USSD hop"), and a misbehaving server gets one line."""

from __future__ import annotations

import dataclasses
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from app.cli import dial

SESSION_ID = re.compile(r"^ATUid_[0-9a-f]{16}$")
PLAIN = "text/plain; charset=utf-8"

# A tiny menu: two CON screens then an END, keyed by the accumulated text.
FLOW = {
    "": "CON Welcome to Umoja SACCO\n1. Balance\n2. Loans",
    "1": "CON Which account?\n1. Savings\n2. Shares",
    "1*2": "END Shares: KES 1,000",
}


@dataclasses.dataclass
class Stub:
    url: str
    forms: list[dict[str, str]]
    events: list[dict[str, str]]
    # text -> (status, body, content type); the default answers FLOW.
    answer: Callable[[dict[str, str]], tuple[int, str, str]]
    event_status: int = 200  # what /ussd/events answers


def _flow(form: dict[str, str]) -> tuple[int, str, str]:
    return 200, FLOW.get(form["text"], "END unexpected input"), PLAIN


@pytest.fixture
def stub() -> Iterator[Stub]:
    """A stand-in /ussd on a free port that records each form it receives."""
    forms: list[dict[str, str]] = []
    events: list[dict[str, str]] = []
    state = Stub(url="", forms=forms, events=events, answer=_flow)

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        if request.method == "POST" and request.path == "/ussd/events":
            events.append({**request.form.to_dict(), "?": request.query_string.decode()})
            return Response("OK", status=state.event_status, content_type=PLAIN)(
                environ, start_response
            )
        if request.method != "POST" or request.path != "/ussd":
            return Response("not found", status=404)(environ, start_response)
        form = request.form.to_dict()
        forms.append(form)
        status, body, content_type = state.answer(form)
        return Response(body, status=status, content_type=content_type)(environ, start_response)

    server = make_server("127.0.0.1", 0, wsgi, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_dial(runner: FlaskCliRunner, *args: str, input: str = ""):  # noqa: ANN201
    return runner.invoke(args=["dial", *args], input=input)


def one_error_line(result) -> str:  # noqa: ANN001
    """Exit 1 with exactly one line on stderr, starting "dial: ", and no traceback."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dial: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_a_dial_posts_every_hop_as_the_gateway_does(runner: FlaskCliRunner, stub: Stub) -> None:
    result = run_dial(runner, "--url", stub.url, input="1\n2\n")

    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert result.stderr == ""
    assert [form["text"] for form in stub.forms] == ["", "1", "1*2"]
    session_id = stub.forms[0]["sessionId"]
    assert SESSION_ID.match(session_id), session_id
    for form in stub.forms:
        assert form == {
            "sessionId": session_id,
            "serviceCode": "*384*96#",
            "phoneNumber": "+254711223344",
            "networkCode": "99999",
            "text": form["text"],
        }
    out = result.stdout
    # Every screen shown, boxed, without its CON/END prefix, in order, with its length.
    for line in (
        "│ Welcome to Umoja SACCO │",
        "│ 1. Balance             │",
        "│ Which account? │",
        "│ Shares: KES 1,000 │",
        "(42/182 chars)",
        "(35/182 chars)",
        "(17/182 chars)",
        "> 1",
        "> 2",
    ):
        assert line in out.splitlines(), (line, out)
    assert "CON" not in out and "END" not in out
    assert out.index("Welcome") < out.index("> 1") < out.index("Which account")
    assert out.index("> 2") < out.index("Shares: KES")
    assert "warning" not in out
    assert "hung up" not in out


def test_the_options_reach_the_form(runner: FlaskCliRunner, stub: Stub) -> None:
    result = run_dial(
        runner,
        "--url",
        stub.url + "/",  # a trailing slash must not give //ussd
        "--phone",
        "0722 000 111",
        "--service-code",
        "*483*1#",
        "--network",
        "63902",
        input="1\n2\n",
    )

    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert [(f["phoneNumber"], f["serviceCode"], f["networkCode"]) for f in stub.forms] == [
        ("+254722000111", "*483*1#", "63902")
    ] * 3


def test_each_dial_is_a_fresh_session(runner: FlaskCliRunner, stub: Stub) -> None:
    first = run_dial(runner, "--url", stub.url, input="1\n2\n")
    second = run_dial(runner, "--url", stub.url, input="1\n2\n")

    assert first.exit_code == second.exit_code == 0
    ids = [form["sessionId"] for form in stub.forms]
    assert len(ids) == 6
    assert len(set(ids[:3])) == 1 and len(set(ids[3:])) == 1
    assert ids[0] != ids[3]


def test_by_default_it_dials_this_apps_port_and_service_code(
    app: Flask, runner: FlaskCliRunner, stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = int(stub.url.rsplit(":", 1)[1])
    settings = dataclasses.replace(app.config["SETTINGS"], PORT=port, USSD_SERVICE_CODE="*123*45#")
    monkeypatch.setitem(app.config, "SETTINGS", settings)

    result = run_dial(runner, input="1\n2\n")

    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert [form["serviceCode"] for form in stub.forms] == ["*123*45#"] * 3


def test_inputs_accumulate_whatever_they_are(runner: FlaskCliRunner, stub: Stub) -> None:
    """An empty reply and a PIN go into the text exactly as typed, joined by "*"."""
    stub.answer = lambda form: (200, f"CON you sent [{form['text']}]", PLAIN)

    result = run_dial(runner, "--url", stub.url, input="1\n\n1234\n")

    assert result.exit_code == 0
    assert [form["text"] for form in stub.forms] == ["", "1", "1*", "1**1234"]
    assert "│ you sent [1**1234] │" in result.stdout.splitlines()


def test_end_of_input_mid_session_hangs_up(runner: FlaskCliRunner, stub: Stub) -> None:
    result = run_dial(runner, "--url", stub.url, input="1\n")

    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert result.stdout.splitlines()[-1] == "hung up"
    assert "Which account?" in result.stdout
    assert [form["text"] for form in stub.forms] == ["", "1"]
    assert result.stderr == ""


def test_ctrl_c_hangs_up(
    runner: FlaskCliRunner, stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_post = dial.requests.post

    def post_then_ctrl_c(*args: Any, **kwargs: Any) -> Any:
        if stub.forms:  # the first screen is up; the member presses Ctrl-C on the next hop
            raise KeyboardInterrupt
        return real_post(*args, **kwargs)

    monkeypatch.setattr(dial.requests, "post", post_then_ctrl_c)

    result = run_dial(runner, "--url", stub.url, input="1\n")

    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "Welcome to Umoja SACCO" in result.stdout
    assert result.stdout.splitlines()[-1] == "hung up"
    assert "Aborted" not in result.output
    assert [form["text"] for form in stub.forms] == [""]


def test_a_reply_without_con_or_end_is_one_line_and_exit_1(
    runner: FlaskCliRunner, stub: Stub
) -> None:
    stub.answer = lambda form: (200, "oops", PLAIN)

    result = run_dial(runner, "--url", stub.url, input="1\n")

    line = one_error_line(result)
    assert "'oops'" in line and "neither 'CON ' nor 'END '" in line
    assert len(stub.forms) == 1
    assert "│" not in result.stdout  # nothing shown as if it were a screen


def test_a_bare_con_without_its_space_is_refused(runner: FlaskCliRunner, stub: Stub) -> None:
    stub.answer = lambda form: (200, "CONWelcome", PLAIN)

    line = one_error_line(run_dial(runner, "--url", stub.url))

    assert "'CONWelcome'" in line


def test_a_server_error_is_one_line_and_exit_1(runner: FlaskCliRunner, stub: Stub) -> None:
    stub.answer = lambda form: (500, "CON this body must not be shown", PLAIN)

    result = run_dial(runner, "--url", stub.url)

    line = one_error_line(result)
    assert line == (
        f"dial: {stub.url}/ussd answered HTTP 500 "
        "(the gateway would end the session for the member)"
    )
    assert "must not be shown" not in result.stdout


def test_nothing_listening_is_one_line_and_exit_1(runner: FlaskCliRunner) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and is closed now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"

    result = run_dial(runner, "--url", url, input="1\n")

    line = one_error_line(result)
    assert line == f"dial: the server at {url} is not answering (start it with make run)"
    assert result.stdout == ""


def test_a_slow_server_times_out_with_one_line(
    runner: FlaskCliRunner, stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert dial.HOP_TIMEOUT_SECONDS == 15  # the gateway's limit, with a little room
    monkeypatch.setattr(dial, "HOP_TIMEOUT_SECONDS", 0.2)

    def slow(form: dict[str, str]) -> tuple[int, str, str]:
        time.sleep(0.6)
        return 200, "END too late", PLAIN

    stub.answer = slow

    line = one_error_line(run_dial(runner, "--url", stub.url))

    assert line.startswith(f"dial: the server at {stub.url} took over 0.2 s to answer")


def test_a_bad_phone_is_one_line_and_no_hop(runner: FlaskCliRunner, stub: Stub) -> None:
    result = run_dial(runner, "--url", stub.url, "--phone", "12345")

    line = one_error_line(result)
    assert "not a Kenyan mobile number: '12345'" in line
    assert stub.forms == []


def test_a_screen_over_182_characters_is_flagged(runner: FlaskCliRunner, stub: Stub) -> None:
    stub.answer = lambda form: (200, "END " + "x" * 200, PLAIN)

    result = run_dial(runner, "--url", stub.url)

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "(200/182 chars)" in lines
    # Shown wrapped, as a phone would, rather than as one 200-column line.
    assert lines[1] == "│ " + "x" * dial.DISPLAY_WIDTH + " │"
    assert lines[4] == "│ " + "x" * 20 + " " * (dial.DISPLAY_WIDTH - 20) + " │"
    warnings = [line for line in lines if line.startswith("warning:")]
    assert warnings == [
        "warning: 200 characters, over the 182 a screen holds: the member sees it cut"
    ]


def test_a_screen_of_exactly_182_is_not_flagged(runner: FlaskCliRunner, stub: Stub) -> None:
    stub.answer = lambda form: (200, "END " + "x" * 182, PLAIN)

    result = run_dial(runner, "--url", stub.url)

    assert "(182/182 chars)" in result.stdout.splitlines()
    assert "warning" not in result.stdout


def test_extension_characters_count_double(runner: FlaskCliRunner, stub: Stub) -> None:
    # 90 braces are 180 septets: 2 more plain characters fit, a third does not.
    stub.answer = lambda form: (200, "END " + "{" * 90 + "abc", PLAIN)

    result = run_dial(runner, "--url", stub.url)

    assert "(183/182 chars)" in result.stdout.splitlines()
    assert "warning: 183 characters, over the 182" in result.stdout


@pytest.mark.parametrize("content_type", [PLAIN, "text/plain"])
def test_a_curly_quote_is_flagged_as_not_gsm7(
    runner: FlaskCliRunner, stub: Stub, content_type: str
) -> None:
    # Without a charset the reply is still read as UTF-8, so the quote is seen, not mojibake.
    stub.answer = lambda form: (200, "END You’re paid up", content_type)

    result = run_dial(runner, "--url", stub.url)

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "│ You’re paid up │" in lines
    assert "(14/80 chars, UCS-2)" in lines
    warnings = [line for line in lines if line.startswith("warning:")]
    assert warnings == [
        "warning: not GSM-7: '’' (U+2019); the screen goes as UCS-2 and holds only about "
        "80 characters"
    ]


def test_gsm7_length() -> None:
    assert dial.gsm7_length("Balance: KES 1,000\n1. Back") == 26
    assert dial.gsm7_length("é£Ñ¿@_") == 6  # accented and symbol characters of the basic set
    assert dial.gsm7_length("[€]") == 6  # extension characters cost two each
    assert dial.gsm7_length("You’re") is None
    assert dial.gsm7_length("ok 👍") is None
    assert dial.gsm7_length("ç") is None  # only the capital Ç is in the alphabet
    assert dial.non_gsm7("“hi” ‘x’ “") == ["“", "”", "‘", "’"]


def test_a_non_plain_content_type_is_warned_about(runner: FlaskCliRunner, stub: Stub) -> None:
    # Flask's default for a returned string is text/html; the contract says text/plain.
    stub.answer = lambda form: (200, "END Bye", "text/html; charset=utf-8")

    result = run_dial(runner, "--url", stub.url)

    assert result.exit_code == 0
    assert "warning: Content-Type is 'text/html; charset=utf-8'" in result.stdout
    assert "│ Bye │" in result.stdout.splitlines()


def test_dial_is_registered_with_its_help(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["dial", "--help"])

    assert result.exit_code == 0
    assert "Dial the running server's USSD menu" in result.stdout
    for option in ("--phone", "--url", "--service-code", "--network"):
        assert option in result.stdout


# -- the end of the session, as the gateway reports it --------------------------------------


def test_an_end_screen_is_reported_to_ussd_events_as_success(
    runner: FlaskCliRunner, stub: Stub
) -> None:
    result = run_dial(runner, "--url", stub.url, input="1\n2\n")

    assert result.exit_code == 0, (result.stdout, result.stderr)
    [event] = stub.events
    session_id = stub.forms[0]["sessionId"]
    assert event["sessionId"] == session_id and event["status"] == "Success"
    assert event["phoneNumber"] == "+254711223344" and event["serviceCode"] == "*384*96#"
    assert event["networkCode"] == "99999" and event["hopsCount"] == "3"
    assert event["lastAppResponse"] == "END Shares: KES 1,000"
    assert int(event["durationInMillis"]) >= 0 and event["cost"] and event["date"]
    # What the member typed (a PIN, say) is never sent with it.
    assert "input" not in event and "1*2" not in str(event)
    assert "warning" not in result.stdout


def test_hanging_up_mid_session_is_reported_as_incomplete(
    runner: FlaskCliRunner, stub: Stub
) -> None:
    result = run_dial(runner, "--url", stub.url, input="1\n")

    assert result.stdout.splitlines()[-1] == "hung up"
    [event] = stub.events
    assert event["status"] == "Incomplete" and event["hopsCount"] == "2"
    assert event["lastAppResponse"].startswith("CON Which account?")


def test_a_server_that_does_not_take_the_event_gets_a_warning_not_a_failure(
    runner: FlaskCliRunner, stub: Stub
) -> None:
    stub.event_status = 500

    result = run_dial(runner, "--url", stub.url, input="1\n2\n")

    assert result.exit_code == 0 and result.stderr == ""
    assert f"warning: {stub.url}/ussd/events answered HTTP 500 to the session's end" in (
        result.stdout.splitlines()
    )


def test_the_callback_token_rides_on_every_url_when_set(
    app: Flask, runner: FlaskCliRunner, stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = dataclasses.replace(app.config["SETTINGS"], AT_CALLBACK_TOKEN="at-secret-4f2b9c")
    monkeypatch.setitem(app.config, "SETTINGS", settings)

    result = run_dial(runner, "--url", stub.url, input="1\n2\n")

    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert stub.events[0]["?"] == "token=at-secret-4f2b9c"


def test_without_url_or_port_it_dials_the_port_sacco_up_wrote(
    app: Flask, runner: FlaskCliRunner, stub: Stub, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # noqa: ANN001
    from app.cli.runtime import SERVER_FILE, server_file_write

    monkeypatch.delenv("PORT", raising=False)
    monkeypatch.setattr(app, "instance_path", str(tmp_path))
    port = int(stub.url.rsplit(":", 1)[1])
    server_file_write(str(tmp_path), host="0.0.0.0", port=port)  # noqa: S104 - as `sacco up --host`

    result = run_dial(runner, input="1\n2\n")

    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert [form["text"] for form in stub.forms] == ["", "1", "1*2"]

    # PORT set here (settings read it) wins over the file.
    settings = dataclasses.replace(app.config["SETTINGS"], PORT=1)
    monkeypatch.setitem(app.config, "SETTINGS", settings)
    monkeypatch.setenv("PORT", "1")
    assert "http://127.0.0.1:1 is not answering" in one_error_line(run_dial(runner))
    # A file whose process is gone (a crashed `sacco up`) is ignored.
    monkeypatch.delenv("PORT")
    (tmp_path / SERVER_FILE).write_text(f'{{"url": "{stub.url}", "pid": 999999999}}')
    assert "http://127.0.0.1:1 is not answering" in one_error_line(run_dial(runner))


def test_a_refusal_by_the_allowlist_says_what_to_change(runner: FlaskCliRunner, stub: Stub) -> None:
    stub.answer = lambda form: (403, "forbidden", PLAIN)

    line = one_error_line(run_dial(runner, "--url", stub.url))

    assert line.startswith(f"dial: {stub.url}/ussd answered HTTP 403: ")
    assert "AT_ALLOWED_IPS" in line and "127.0.0.1" in line
