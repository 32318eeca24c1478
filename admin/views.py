"""Model views. Edits that move money or loan state are services, not form saves."""

from __future__ import annotations

from flask_admin import Admin
from markupsafe import Markup

from admin.auth import SecureModelView
from app.extensions import db
from app.models import (
    Account,
    JournalEntry,
)


def _display_balance(view: object, context: object, model: Account, name: str) -> str:
    # Savings and income are credit-normal: the journal stores them negative, a person
    # reads them positive.
    return f"{model.display_balance:,.2f}"


class AccountView(SecureModelView):
    column_list = ("code", "kind", "name", "status", "balance")
    column_formatters = {"balance": _display_balance}
    column_formatters_detail = {"balance": _display_balance}
    column_searchable_list = ("code", "name")
    column_filters = ("kind", "status")


_LINE = Markup(
    "<tr><td>{}</td><td>{}</td><td class='text-right'>{}</td><td class='text-right'>{}</td></tr>"
)
_LINES = Markup(
    "<table class='table table-sm mb-0'><tr><th>account</th><th></th>"
    "<th class='text-right'>debit</th><th class='text-right'>credit</th></tr>{}</table>"
)


def _entry_lines(view: object, context: object, model: JournalEntry, name: str) -> Markup:
    """An entry's lines as a person checks them: account, debit, credit (Markup.format
    escapes every value)."""
    rows = Markup("").join(
        _LINE.format(
            line.account.code,
            line.account.name,
            f"{line.amount:,.2f}" if line.amount > 0 else "",
            f"{-line.amount:,.2f}" if line.amount < 0 else "",
        )
        for line in model.lines
    )
    return _LINES.format(rows)


class JournalView(SecureModelView):
    column_list = (
        "id",
        "posted_at",
        "value_date",
        "kind",
        "description",
        "actor",
        "idempotency_key",
    )
    column_searchable_list = ("description", "idempotency_key")
    column_filters = ("kind", "value_date")
    column_default_sort = ("id", True)
    column_details_list = (*column_list, "member_id", "loan_id", "lines")
    column_formatters_detail = {"lines": _entry_lines}


def register_views(console: Admin) -> None:
    """Each area of the console registers its own pages, in the order of the menu."""
    from admin import (
        agreements,
        branch_withdrawals,
        desk,
        dividends,
        exits,
        guarantee_recovery,
        guarantees,
        loans,
        members,
        payments,
        phone,
        products,
        promises,
        quality,
        recovery,
        reports,
        savings,
        share_transfers,
        sms,
        staff,
        standing_orders,
        term_savings,
    )

    s = db  # Flask-Admin 2.2 deprecates passing db.session (a warning is an error in tests)
    members.register(console)
    loans.register(console)
    products.register(console)
    savings.register(console)  # account products
    dividends.register(console)  # the annual dividend run
    share_transfers.register(console)  # between members, maker-checker
    exits.register(console)  # members leaving: notice, settlement, payout
    standing_orders.register(console)  # the member page's block and its forms
    branch_withdrawals.register(console)  # cash or bank at the branch, maker-checker
    term_savings.register(console)  # fixed deposits and targets on the member page
    console.add_view(AccountView(Account, s, name="Accounts", category="Ledger"))
    console.add_view(JournalView(JournalEntry, s, name="Journal", category="Ledger"))
    payments.register(console)
    sms.register(console)
    promises.register(console)
    # Collections and recovery: the officer desk, agreements, legal and write-offs.
    desk.register(console)
    agreements.register(console)
    recovery.register(console)
    reports.register(console)
    guarantees.register(console)  # the security blocks' forms and two reports
    guarantee_recovery.register(console)  # a loan's guarantors: recovery, replacement
    staff.register(console)
    from admin import api_clients

    api_clients.register(console)  # Admin: the integration API's clients
    from admin import webhooks

    webhooks.register(console)  # Admin: webhook subscriptions and deliveries
    quality.register(console)
    phone.register(console)
