"""The floor a USSD hop is measured against (benchmarks/ussd_load.py --first-hop): a bare
Flask app answering POST /ussd with one Redis GET and one SET, no database, served by the
same gunicorn command as the app. `gunicorn benchmarks.bare_ussd:app` with REDIS_URL."""

from __future__ import annotations

import os

import redis
from flask import Flask, Response, request

app = Flask(__name__)
_redis = redis.Redis.from_url(os.environ["REDIS_URL"])
REPLY = "CON SACCO: enter your PIN:\n9. Forgot PIN"


@app.post("/ussd")
def ussd() -> Response:
    key = f"bare:session:{request.form.get('sessionId', '')}"
    _redis.get(key)
    _redis.set(key, REPLY, ex=300)
    return Response(REPLY, mimetype="text/plain")


@app.get("/healthz")
def healthz() -> Response:
    return Response("ok", mimetype="text/plain")
