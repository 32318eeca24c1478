"""Where document bytes live: a small interface, so S3-compatible storage can replace the
local folder without touching the document service.

The database keeps what a file is (owner, kind, version, checksum, who and when); the store
keeps only bytes under an opaque random key. A key never comes from a file name, so an
upload cannot name a path of its own.

An app that keeps its documents elsewhere sets `app.extensions["document_storage"]` to any
object with `put`, `get` and `delete` (an S3 class wrapping boto3's put_object /
get_object / delete_object on one bucket fits); the default is the instance folder.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Protocol

from flask import current_app

from app.errors import SaccoError

DOCUMENTS_FOLDER = "documents"
_KEY = re.compile(r"^[A-Za-z0-9_-]{32}$")


class StorageError(SaccoError):
    """The store has no such file, or could not keep one."""


class Storage(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...


def storage_key() -> str:
    """A new random key: 24 random bytes, 32 URL-safe characters (not guessable)."""
    return secrets.token_urlsafe(24)


class LocalStorage:
    """Files in one folder, one per key, readable by the server's user only."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise StorageError("not a storage key")
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Written under a temporary name and renamed: a reader never sees half a file, and
        # O_EXCL refuses to overwrite (a key is used once).
        partial = self.root / f".{key}.partial"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            if path.exists():
                raise StorageError("that storage key is taken")
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StorageError("the stored file is missing") from None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def document_storage() -> Storage:
    """The app's document store: the one set in app.extensions, else the instance folder."""
    store = current_app.extensions.get("document_storage")
    if store is None:
        store = LocalStorage(Path(current_app.instance_path) / DOCUMENTS_FOLDER)
    return store
