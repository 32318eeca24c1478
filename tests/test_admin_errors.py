"""A database failure reaches the staff member as words, never as a stack trace."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import text

from app.extensions import db
from tests.factories import make_member
from tests.helpers import browse, login, staff


def test_a_database_failure_is_told_in_words_and_the_console_goes_on(app: Flask) -> None:
    member_id = make_member(name="Achieng Odhiambo").id
    client = app.test_client()
    login(client, staff("branch_manager"))
    path = f"/admin/member/details/?id={member_id}"
    # A real failure, not a patched one: the member page reads a table that is gone.
    db.session.execute(text("ALTER TABLE ussd_events RENAME TO ussd_events_away"))
    db.session.commit()
    try:
        broken = browse(client, path)
    finally:
        db.session.execute(text("ALTER TABLE ussd_events_away RENAME TO ussd_events"))
        db.session.commit()

    page = broken.get_data(as_text=True)
    assert broken.status_code == 503
    assert "Not done: the database could not complete this" in page
    assert "Nothing was changed" in page
    assert "Traceback" not in page and "ussd_events" not in page  # no SQL shown to staff
    again = browse(client, path)
    assert again.status_code == 200
    assert "Achieng Odhiambo" in again.get_data(as_text=True)
