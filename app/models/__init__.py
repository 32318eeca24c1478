"""All models, imported here so Alembic and `db.create_all` see every table."""

from app.models.api import (
    ApiClient,
    ApiIdempotencyKey,
    ApiTokenRevocation,
    WebhookDelivery,
    WebhookSubscription,
)
from app.models.audit import AuditLog
from app.models.batch import BatchPartition
from app.models.books import (
    BooksState,
    ChartAccount,
    KpiSnapshot,
    LoanProvision,
    PeriodEvent,
    ProvisionRun,
    RegulatoryFiling,
)
from app.models.guarantee_recovery import GuaranteeRecovery
from app.models.jobs import JobRun
from app.models.ledger import ACCOUNT_KINDS, Account, JournalEntry, JournalLine
from app.models.loan import Installment, Loan, LoanProduct, PortfolioSnapshot
from app.models.loan_book import LoanBookPreview, LoanBookPreviewRow
from app.models.member import Member, StaffUser
from app.models.mpesa import MpesaCallback, MpesaRequest, Payment
from app.models.recovery import (
    Agreement,
    AgreementInstallment,
    CollectionTarget,
    ContactLog,
    DataQualityFinding,
    Document,
    Hearing,
    LegalCase,
    RecoveryMilestone,
    WriteOffRequest,
)
from app.models.savings import (
    AccountProduct,
    BranchWithdrawal,
    DividendLine,
    DividendRun,
    FixedDeposit,
    InterestPosting,
    MemberExit,
    SavingsTarget,
    ShareTransfer,
    StandingOrder,
    StandingOrderRun,
)
from app.models.security import Collateral, Guarantee
from app.models.sms import PromiseToPay, SmsInbound, SmsMessage, SmsSuppression
from app.models.ussd import UssdEvent

__all__ = [
    "ApiClient",
    "ApiIdempotencyKey",
    "ApiTokenRevocation",
    "WebhookDelivery",
    "WebhookSubscription",
    "BooksState",
    "ChartAccount",
    "KpiSnapshot",
    "LoanProvision",
    "PeriodEvent",
    "ProvisionRun",
    "RegulatoryFiling",
    "WriteOffRequest",
    "RecoveryMilestone",
    "LegalCase",
    "Hearing",
    "Document",
    "DataQualityFinding",
    "ContactLog",
    "CollectionTarget",
    "AgreementInstallment",
    "Agreement",
    "ACCOUNT_KINDS",
    "Account",
    "AccountProduct",
    "DividendLine",
    "DividendRun",
    "FixedDeposit",
    "InterestPosting",
    "AuditLog",
    "BranchWithdrawal",
    "BatchPartition",
    "Collateral",
    "Guarantee",
    "GuaranteeRecovery",
    "Installment",
    "JobRun",
    "JournalEntry",
    "JournalLine",
    "Loan",
    "LoanBookPreview",
    "LoanBookPreviewRow",
    "LoanProduct",
    "Member",
    "MemberExit",
    "MpesaCallback",
    "MpesaRequest",
    "Payment",
    "PortfolioSnapshot",
    "PromiseToPay",
    "SmsInbound",
    "SmsMessage",
    "SavingsTarget",
    "ShareTransfer",
    "SmsSuppression",
    "StandingOrder",
    "StandingOrderRun",
    "StaffUser",
    "UssdEvent",
]
