"""A hop whose pooled database connection turned out dead is answered, not apologised for.

The pool no longer pings every connection before use (app/db_pool.py), so a connection the
server dropped (a restart, an administrator, a proxy) is found dead by the hop's first
statement. SQLAlchemy then invalidates it (and the connections pooled before it); this runs
the hop once more on a fresh one. Only when nothing was committed in the failed attempt:
a hop that already wrote (a wrong PIN counted) is not run twice, it ends with the apology
as before. The session state in Redis is written only after a hop succeeds, so the retry
starts from the same state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.extensions import db

log = logging.getLogger("app.ussd")

T = TypeVar("T")
_COMMITS = "sacco_commits"


@event.listens_for(Session, "after_commit")
def _count_commit(session: Session) -> None:
    session.info[_COMMITS] = session.info.get(_COMMITS, 0) + 1


def once_more_on_disconnect(hop: Callable[[], T]) -> T:
    """Run `hop`; if it fails on a dead connection before committing anything, roll the
    session back and run it once more."""
    commits = db.session().info.get(_COMMITS, 0)
    try:
        return hop()
    except DBAPIError as error:
        if not error.connection_invalidated or db.session().info.get(_COMMITS, 0) != commits:
            raise
        log.warning("ussd hop met a dead database connection; trying once more: %s", error)
        db.session.rollback()
        return hop()
