"""`sacco member ...` and `sacco staff ...`."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from app.models.member import STAFF_ROLES
from app.models.types import utcnow
from app.services.members import MemberError, member_add, member_issue_activation_code
from app.services.staff import StaffError, staff_add

member_cli = AppGroup("member", help="Manage members.")
staff_cli = AppGroup("staff", help="Manage staff logins for the console.")


def fail(message: str) -> None:
    """One line on stderr, exit 1: the CLI's answer to bad input."""
    click.echo(f"error: {message}", err=True)
    raise SystemExit(1)


@member_cli.command("add")
@click.option("--name", required=True, help="Full name.")
@click.option("--phone", required=True, help="Mobile number, 07XXXXXXXX or 2547XXXXXXXX.")
@click.option("--national-id", default=None, help="National ID number.")
@click.option("--language", type=click.Choice(["en", "sw"]), default="en", show_default=True)
def member_add_cmd(name: str, phone: str, national_id: str | None, language: str) -> None:
    """Register a member; prints the activation code for their first dial (shown this
    once: only its hash is kept) and the new member number alone on the last line."""
    try:
        member = member_add(
            name=name,
            phone=phone,
            national_id=national_id,
            language=language,
            actor="cli",
            commit=False,
        )
        # One commit: a member is never registered without a code to hand over.
        code = member_issue_activation_code(member_id=member.id, actor="cli")
    except MemberError as exc:
        fail(str(exc))
        return
    days = (code.expires_at - utcnow()).days + 1
    click.echo(f"Added {member.name} ({member.phone})")
    click.echo(
        f"Activation code for the first dial: {code.code} (valid {days} days; give it to "
        "the member, it is not shown again)"
    )
    click.echo(member.member_no)


@staff_cli.command("add")
@click.option("--email", required=True)
@click.option("--role", required=True, type=click.Choice(STAFF_ROLES))
@click.option("--name", default="")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def staff_add_cmd(email: str, role: str, name: str, password: str) -> None:
    """Create a staff login (password from the prompt or --password)."""
    try:
        user = staff_add(email=email, role=role, password=password, name=name, actor="cli")
    except StaffError as exc:
        fail(str(exc))
        return
    click.echo(f"Added {user.email} as {user.role}")
