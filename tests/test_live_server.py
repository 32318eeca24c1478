"""The live test server (tests/conftest.py live_url) closes every response it serves, a
static file included, even when the browser drops the connection halfway: an unclosed
file is a ResourceWarning, an error under filterwarnings=error, in whichever test the
garbage collector happens to run."""

from __future__ import annotations

import gc
import socket
import struct
import time
from urllib.parse import urlsplit

import requests
from flask import Flask

STATIC = "/admin/sacco-static/console.css"


def test_a_static_file_is_served(app: Flask, live_url: str) -> None:
    reply = requests.get(f"{live_url}{STATIC}", timeout=10)
    assert reply.status_code == 200 and reply.content
    reply.close()


def test_a_static_file_whose_client_resets_the_connection_is_closed(
    app: Flask, live_url: str
) -> None:
    where = urlsplit(live_url)
    for _ in range(20):
        sock = socket.create_connection((where.hostname, where.port), timeout=5)
        sock.sendall(f"GET {STATIC} HTTP/1.1\r\nHost: {where.netloc}\r\n\r\n".encode())
        sock.recv(64)  # the server is writing: now the browser goes away
        # A reset, not a polite close: what a closed tab does to a download.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    time.sleep(0.5)  # the server's threads finish with the dropped connections
    gc.collect()
