"""`sacco mpesa register-urls` and `sacco mpesa request-payment`."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select

from app.extensions import db
from app.integrations.daraja import DarajaError
from app.models import Loan
from app.services.payments import PaymentError, payments_register_urls, payments_request_stk

mpesa_cli = AppGroup("mpesa", help="M-PESA: register Paybill URLs, request a payment.")


@mpesa_cli.command("register-urls")
def register_urls_cmd() -> None:
    """Tell Safaricom where Paybill payments are validated and confirmed."""
    settings = current_app.config["SETTINGS"]
    confirmation = settings.callback_url("c2b/confirmation")
    validation = settings.callback_url("c2b/validation")
    try:
        reply = payments_register_urls()
    except DarajaError as exc:
        raise click.ClickException(f"M-PESA refused the URLs: {exc}") from None
    click.echo(f"registered: {reply.get('ResponseDescription', 'ok')}")
    click.echo(f"confirmation {confirmation.replace(settings.CALLBACK_TOKEN, '<token>')}")
    click.echo(f"validation   {validation.replace(settings.CALLBACK_TOKEN, '<token>')}")


@mpesa_cli.command("request-payment")
@click.option("--loan", "loan_no", required=True, help="Loan number, e.g. L000001.")
@click.option("--amount", required=True, help="Whole shillings.")
@click.option("--phone", default=None, help="Prompt this phone instead of the member's.")
def request_payment_cmd(loan_no: str, amount: str, phone: str | None) -> None:
    """Send an M-PESA prompt (STK push) to repay a loan; prints the request id."""
    loan_id = db.session.scalar(select(Loan.id).where(Loan.loan_no == loan_no.strip().upper()))
    if loan_id is None:
        raise click.ClickException(f"no loan {loan_no}")
    try:
        request = payments_request_stk(
            loan_id=loan_id, amount=amount, phone=phone, channel="cli", actor="cli"
        )
    except PaymentError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"payment request {request.id} queued: KES {request.amount:,.0f} to {request.phone}")
