"""Who on the staff may do what: one table, read by the services and by the console.

The services check it (a console bug or a CLI call cannot do what a role may not), and the
console reads it to answer 403 and to hide the buttons a role cannot use.
"""

from __future__ import annotations

from app.errors import SaccoError
from app.models import StaffUser
from app.models.member import STAFF_ROLES

EVERYONE = STAFF_ROLES
MAKERS = ("loan_officer", "branch_manager")

PERMISSIONS: dict[str, tuple[str, ...]] = {
    "view": EVERYONE,  # members, loans, payments, reports
    "member.edit": ("loan_officer", "branch_manager", "admin"),  # register, edit, PIN unlock
    "member.message": MAKERS,  # send a statement or resend an SMS
    "loan.recommend": MAKERS,  # the maker; also withdraws an application for the member
    "loan.approve": ("branch_manager",),  # the checker: approve or reject
    "loan.disburse": ("branch_manager",),  # pay out by bank, or send the M-PESA payout again
    "payment.request": MAKERS,  # an STK prompt to the member's phone
    "suspense.assign": ("branch_manager",),
    "loan.restructure": ("branch_manager",),
    "loan.write_off": ("branch_manager", "compliance"),  # compliance endorses write-offs
    "penalty.reverse": ("branch_manager",),
    "loan.import": ("branch_manager", "admin"),  # the loan-book upload
    "audit.view": ("compliance", "auditor", "admin"),  # and its CSV export
    "staff.manage": ("admin",),
    "product.manage": ("admin",),
    # Collections and recovery (issue 12's remedial matrix)
    "collection.record": MAKERS,  # call/visit outcomes, promises recorded after a call
    "document.upload": ("loan_officer", "branch_manager", "compliance"),
    "portfolio.assign": ("branch_manager",),  # reassign a loan's officer; set targets
    "agreement.draft": MAKERS,
    "agreement.approve": ("branch_manager",),  # and promises above an officer's limit
    "legal.file": ("branch_manager",),  # legal cases and hearings
    "recovery.start": ("branch_manager",),  # demand letter, auctioneer, foreclosure, dacion
    "write_off.recommend": ("branch_manager",),
    "write_off.decide": ("branch_manager", "compliance"),  # record the board's decision
    # Guarantees and collateral (issue 19)
    "guarantee.manage": MAKERS,  # record collateral, complete a guarantor list for a member
    "collateral.release": ("branch_manager",),  # discharge a lien
    "guarantee.substitute": ("branch_manager",),  # approve a replacement guarantor
    "guarantee.recover": ("branch_manager",),  # propose recovery from guarantors
    "guarantee.recovery_decide": ("branch_manager", "compliance"),  # record the decision
    # Dividends (issue 20): the maker enters the AGM's rates, a checker approves the run
    "dividend.declare": ("branch_manager", "admin", "compliance"),
    "dividend.approve": ("branch_manager", "admin"),
    "account_product.manage": ("admin",),  # savings and share products' terms
    # Share transfers between members: entered from the signed form, approved by another
    "share_transfer.request": ("loan_officer", "branch_manager"),
    "share_transfer.approve": ("branch_manager",),
    # A member leaving: notice taken at the desk, settled and paid by a branch manager
    "member_exit.request": ("loan_officer", "branch_manager"),
    "member_exit.settle": ("branch_manager",),
    # Withdrawals paid at the branch: recorded by staff, above the limit approved by another
    "branch_withdrawal.record": ("loan_officer", "branch_manager"),
    "branch_withdrawal.approve": ("branch_manager",),
    # A member's monthly transfer from savings (set or stopped at the desk for them)
    "standing_order.manage": MAKERS,
    # Fixed deposits and target savings opened, broken, set or released for a member
    "term_savings.manage": MAKERS,
    # The books (issue 21): statements and returns for the roles that read finance
    "books.view": ("branch_manager", "compliance", "auditor", "admin"),
    "books.chart": ("admin",),  # add (or remove an unused) account of the chart
    "books.journal": ("branch_manager", "admin"),  # a general journal entry or correction
    "books.close": ("branch_manager", "admin"),  # close a month (and a year)
    "books.reopen": ("admin",),  # reopen a closed month, with a reason
    "books.file": ("compliance", "admin"),  # mark a return filed with SASRA
    # The integration API (issue 22): its clients and webhooks registered by an admin
    "api.manage": ("admin",),
}


class PermissionDenied(SaccoError):
    """A staff member asked for something their role does not allow."""


def permitted(staff: StaffUser | str | None, action: str) -> bool:
    """True when this staff member's role may do `action`. An actor named by a string is
    not a signed-in staff member: "system" (jobs, product rules), a member acting on their
    own loan over USSD, or an operator's CLI on the server; what they may do is the
    calling service's rule, not a role's."""
    if action not in PERMISSIONS:
        raise KeyError(f"unknown permission {action!r}")
    if isinstance(staff, str):
        return True
    if staff is None or not getattr(staff, "is_authenticated", True):
        return False
    return staff.role in PERMISSIONS[action]


def permission_require(staff: StaffUser | str | None, action: str) -> None:
    if not permitted(staff, action):
        role = getattr(staff, "role", "unknown").replace("_", " ")
        raise PermissionDenied(f"{role} staff cannot {describe(action)}")


def describe(action: str) -> str:
    """What a permission allows, in words for a refusal ("... cannot approve loans")."""
    return _WORDS.get(action, action)


_WORDS = {
    "books.view": "read the books and returns",
    "books.chart": "change the chart of accounts",
    "books.journal": "post journal entries",
    "books.close": "close periods",
    "books.reopen": "reopen closed periods",
    "books.file": "file returns",
    "api.manage": "manage API clients and webhooks",
    "view": "open the console",
    "member.edit": "register or change members",
    "member.message": "send messages to members",
    "loan.recommend": "recommend or withdraw loans",
    "loan.approve": "approve or reject loans",
    "loan.disburse": "send loan payouts",
    "payment.request": "request payments from members",
    "suspense.assign": "assign payments",
    "loan.restructure": "restructure loans",
    "loan.write_off": "write off loans",
    "penalty.reverse": "reverse penalties",
    "loan.import": "import loan books",
    "audit.view": "read the audit log",
    "staff.manage": "manage staff users",
    "product.manage": "change loan products",
    "collection.record": "record collection calls and promises",
    "document.upload": "upload documents",
    "portfolio.assign": "assign loans and set targets",
    "agreement.draft": "draft compromise agreements",
    "agreement.approve": "approve compromise agreements or promises above the limit",
    "legal.file": "file legal cases",
    "recovery.start": "start recovery actions",
    "write_off.recommend": "recommend write-offs",
    "write_off.decide": "record board decisions on write-offs",
    "guarantee.manage": "record collateral or ask guarantors",
    "collateral.release": "discharge collateral",
    "guarantee.substitute": "approve replacement guarantors",
    "guarantee.recover": "propose recovery from guarantors",
    "guarantee.recovery_decide": "record decisions on recovery from guarantors",
    "dividend.declare": "declare dividend runs",
    "dividend.approve": "approve or post dividend runs",
    "account_product.manage": "change savings and share products",
    "share_transfer.request": "enter share transfers",
    "share_transfer.approve": "approve share transfers",
    "member_exit.request": "take a member's notice to leave",
    "member_exit.settle": "settle and pay out members who leave",
    "branch_withdrawal.record": "record withdrawals paid at the branch",
    "branch_withdrawal.approve": "approve withdrawals paid at the branch",
    "standing_order.manage": "set or cancel members' standing orders",
    "term_savings.manage": "open or break fixed deposits, or set or release savings targets",
}
