"""Every setting, read from the environment in one place, typed and checked at start-up."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

ENVIRONMENTS = ("development", "test", "production")
DEV_SECRET = "dev-only-secret-change-me"  # noqa: S105 - refused in production
DEV_CALLBACK_TOKEN = "dev-callback-token"  # noqa: S105 - refused in production
MPESA_SANDBOX_URL = "https://sandbox.safaricom.co.ke"
# What the local Daraja stand-in expects when no credentials are set (never production).
# The passkey is Safaricom's published sandbox passkey for shortcode 174379.
SIMULATED_MPESA = {
    "consumer_key": "simulator-consumer-key",
    "consumer_secret": "simulator-consumer-secret",  # noqa: S105 - the stand-in's only
    "passkey": "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919",
    "initiator_name": "testapi",
    "security_credential": "simulator-security-credential",
}
# Safaricom refuses callback URLs containing any of these (any case).
FORBIDDEN_CALLBACK_WORDS = ("mpesa", "m-pesa", "safaricom", "exec", "exe", "cmd", "sql", "query")
# AT_ALLOWED_IPS=any: production knowingly takes Africa's Talking callbacks from anywhere
# (say, when a gateway of its own in front filters them); never the silent default.
ANY_SOURCE = "any"


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the process must not start."""


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    APP_ENV: str = "development"
    DATABASE_URL: str = ""
    REDIS_URL: str | None = None
    SECRET_KEY: str = DEV_SECRET
    TIMEZONE: str = "Africa/Nairobi"
    PORT: int = 5000
    LOG_LEVEL: str = "INFO"
    USSD_SERVICE_CODE: str = "*384*96#"
    AT_USERNAME: str = "sandbox"
    AT_API_KEY: str | None = None
    AT_SENDER_ID: str | None = None
    AT_API_BASE_URL: str | None = None
    MPESA_BASE_URL: str | None = None
    MPESA_CONSUMER_KEY: str | None = None
    MPESA_CONSUMER_SECRET: str | None = None
    MPESA_SHORTCODE: str = "174379"
    MPESA_PASSKEY: str | None = None
    MPESA_B2C_SHORTCODE: str = "600996"
    MPESA_INITIATOR_NAME: str | None = None
    MPESA_SECURITY_CREDENTIAL: str | None = None
    CALLBACK_BASE_URL: str | None = None
    CALLBACK_TOKEN: str = DEV_CALLBACK_TOKEN
    MPESA_ALLOWED_IPS: tuple[str, ...] = field(default_factory=tuple)
    # The addresses Africa's Talking posts USSD hops and SMS callbacks from (addresses or
    # CIDR ranges); empty outside production means anyone, `any` says so in production.
    AT_ALLOWED_IPS: tuple[str, ...] = field(default_factory=tuple)
    # Optional secret in the callback URLs given to Africa's Talking (`/ussd?token=...`):
    # when set, every AT route refuses a request without it.
    AT_CALLBACK_TOKEN: str | None = None
    # Paybill validation refuses an account that matches no member or loan (C2B00012),
    # so a typo returns the money to the payer instead of parking it in suspense.
    MPESA_C2B_VALIDATION: bool = True
    # How many reverse proxies we run in front of the app: their X-Forwarded-For hop is
    # trusted for the caller's address (the allowlist), no more.
    TRUSTED_PROXIES: int = 0
    DEMO_DATA: bool = True
    # A staff email: who follows up a loan nobody was assigned to (auto-approved, or
    # imported without one); unset leaves such loans to the approver or the importer.
    DEFAULT_LOAN_OFFICER: str | None = None
    # Close of business (`app.batch`): 0 runs a nightly job's chunks in the job's own
    # process; N splits its loans into partitions on the `cob` queue for N workers.
    COB_WORKERS: int = 0
    COB_CHUNK_SIZE: int = 500  # rows locked, decided and committed together
    # A partition whose worker has not committed a chunk for this long is taken over.
    COB_LEASE_SECONDS: int = 120
    # Withholding tax, percent of the gross, that the SACCO deducts and remits to KRA:
    # qualifying dividends 5%, qualifying interest 15% (Income Tax Act, Cap. 470, Third
    # Schedule, Head B, para. 3 and 5; SPEC "Savings, shares and dividends").
    WHT_DIVIDEND_PERCENT: str = "5"
    WHT_INTEREST_PERCENT: str = "15"
    # A member's notice to leave, in days, before their deposits are refunded: a by-law
    # figure (each SACCO's own; 60 days is the common one in Kenyan SACCO by-laws).
    EXIT_NOTICE_DAYS: int = 60
    # A withdrawal paid at the branch (cash or bank) above this many shillings waits for a
    # branch manager's approval, its money held meanwhile (maker-checker).
    BRANCH_WITHDRAWAL_APPROVAL_LIMIT: int = 50000
    # SASRA's prudential minimums (Sacco Societies (Deposit-Taking Sacco Business)
    # Regulations, 2010, r. 9 capital and r. 13 liquidity, as SASRA quotes them; sources in
    # app/services/books/returns.py). The Authority may set a higher ratio (r. 10).
    SASRA_MIN_CORE_CAPITAL: str = "10000000"  # KES
    SASRA_CORE_CAPITAL_TO_ASSETS_PERCENT: str = "10"
    SASRA_CORE_CAPITAL_TO_DEPOSITS_PERCENT: str = "8"
    SASRA_INSTITUTIONAL_CAPITAL_TO_ASSETS_PERCENT: str = "8"
    SASRA_LIQUIDITY_PERCENT: str = "15"  # of savings deposits and short-term liabilities
    # The day of the following month a monthly return is due: NOT confirmed from the
    # Regulations' text (see returns.py); 15 is an assumption to check with SASRA.
    SASRA_RETURNS_DUE_DAY: int = 15
    # The integration API (issue 22): how long a client-credentials token lives, how long
    # an Idempotency-Key's first response is kept for retries, and the rate limits per
    # client (Flask-Limiter's notation).
    API_TOKEN_MINUTES: int = 15
    API_IDEMPOTENCY_HOURS: int = 24
    API_RATE_LIMIT: str = "300/minute"
    API_WRITE_RATE_LIMIT: str = "60/minute"
    # Webhooks: the waits between a failed delivery's retries (seconds, comma-separated;
    # one retry each), the deliveries failed in a row (retries spent) that disable a
    # subscription, and how long a receiver has to answer.
    WEBHOOK_RETRY_SECONDS: str = "10,60,300,900,3600"
    WEBHOOK_DISABLE_AFTER: int = 5
    WEBHOOK_TIMEOUT_SECONDS: int = 10
    # Loan-loss provisioning (app.services.books.provisioning): the risk classes of the Sacco
    # Societies (Deposit-Taking Sacco Business) Regulations, 2010, Part VII (regs. 40-44,
    # SASRA Form 4), each from its first day in arrears, with its minimum provision, percent
    # of the principal outstanding. Rates: the regulation's 1/5/25/50/100. Day bands: the
    # regulation's own text was not reachable; these are FSD Kenya's "Automation of SACCOs"
    # Table 2 (watch 1-30, substandard 31-90, doubtful 91-180, loss over 180 days).
    PROVISION_WATCH_DAYS: int = 1
    PROVISION_SUBSTANDARD_DAYS: int = 31
    PROVISION_DOUBTFUL_DAYS: int = 91
    PROVISION_LOSS_DAYS: int = 181
    PROVISION_PERFORMING_PERCENT: str = "1"
    PROVISION_WATCH_PERCENT: str = "5"
    PROVISION_SUBSTANDARD_PERCENT: str = "25"
    PROVISION_DOUBTFUL_PERCENT: str = "50"
    PROVISION_LOSS_PERCENT: str = "100"
    # A restructured loan is classed no better than this (nor than its class before).
    PROVISION_RESTRUCTURED_MIN_CLASS: str = "substandard"

    @property
    def wht_dividend_rate(self) -> Decimal:
        return Decimal(self.WHT_DIVIDEND_PERCENT)

    @property
    def wht_interest_rate(self) -> Decimal:
        return Decimal(self.WHT_INTEREST_PERCENT)

    @property
    def webhook_retry_seconds(self) -> tuple[int, ...]:
        return tuple(int(part) for part in _csv(self.WEBHOOK_RETRY_SECONDS))

    @property
    def is_production(self) -> bool:
        return self.APP_ENV == "production"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.TIMEZONE)

    @property
    def local_base_url(self) -> str:
        return f"http://127.0.0.1:{self.PORT}"

    @property
    def at_allowlist(self) -> tuple[str, ...]:
        """AT_ALLOWED_IPS as the allowlist check reads it: empty (or `any`) is everyone."""
        lowered = tuple(entry.lower() for entry in self.AT_ALLOWED_IPS)
        return () if lowered == (ANY_SOURCE,) else self.AT_ALLOWED_IPS

    @property
    def at_simulated(self) -> bool:
        """No Africa's Talking key: SMS go to our own stand-in (never in production)."""
        return not self.is_production and not self.AT_API_KEY

    @property
    def mpesa_simulated(self) -> bool:
        """No Daraja credentials: M-PESA goes to our own stand-in (never in production)."""
        return not self.is_production and not self.MPESA_CONSUMER_KEY

    @property
    def mpesa_base_url(self) -> str:
        """Where Daraja calls go: the setting, else the local stand-in when there are no
        credentials, else Safaricom's sandbox."""
        if self.MPESA_BASE_URL:
            return self.MPESA_BASE_URL.rstrip("/")
        if self.mpesa_simulated:
            return f"{self.local_base_url}/simulator/daraja"
        return MPESA_SANDBOX_URL

    def mpesa_credential(self, name: str) -> str:
        """consumer_key, consumer_secret, passkey, initiator_name or security_credential:
        the setting, or the stand-in's value when M-PESA is simulated."""
        value = getattr(self, f"MPESA_{name.upper()}")
        if value:
            return str(value)
        return SIMULATED_MPESA[name] if self.mpesa_simulated else ""

    @property
    def callback_base_url(self) -> str:
        """The base Safaricom calls back: the setting, else this server (local runs)."""
        return (self.CALLBACK_BASE_URL or self.local_base_url).rstrip("/")

    def callback_url(self, path: str) -> str:
        """`path` like "stk/callback" under /payments/<token>/."""
        return f"{self.callback_base_url}/payments/{self.CALLBACK_TOKEN}/{path}"

    @property
    def at_base_url(self) -> str | None:
        """Where SMS go: the setting, else the local stand-in, else the SDK's own choice."""
        if self.AT_API_BASE_URL:
            return self.AT_API_BASE_URL.rstrip("/")
        if self.at_simulated:
            return f"{self.local_base_url}/simulator/at"
        return None

    def as_flask_config(self) -> dict[str, object]:
        return asdict(self)


def _parse(name: str, raw: str, annotation: str) -> object:
    if annotation == "int":
        try:
            return int(raw)
        except ValueError as exc:
            raise ConfigError(f"{name} must be a whole number, got {raw!r}") from exc
    if annotation == "bool":
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{name} must be 0/1 or true/false, got {raw!r}")
    if annotation.startswith("tuple"):
        return _csv(raw)
    return raw.strip() or None if "None" in annotation else raw.strip()


def load_settings(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    instance_path: str | os.PathLike[str] = "instance",
) -> Settings:
    """Build Settings from the environment, then `overrides` (tests), then check them."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    types = {f.name: f.type for f in fields(Settings)}
    for f in fields(Settings):
        if f.name in environ and environ[f.name] != "":
            values[f.name] = _parse(f.name, environ[f.name], str(f.type))
    for name, value in (overrides or {}).items():
        # A list setting given as text (as the environment gives it) is split the same way.
        if isinstance(value, str) and str(types.get(name, "")).startswith("tuple"):
            value = _csv(value)
        values[name] = value
    if values.get("DATABASE_URL"):
        values["DATABASE_URL"] = database_url(str(values["DATABASE_URL"]))
    else:
        values["DATABASE_URL"] = f"sqlite:///{Path(instance_path).resolve() / 'sacco.db'}"
    settings = Settings(**values)  # type: ignore[arg-type]  # each parsed to its field's type
    _validate(settings)
    return settings


def database_url(raw: str) -> str:
    """Hosts hand out `postgres://` and `postgresql://`; SQLAlchemy reads both as psycopg2,
    which we do not install. Either becomes `postgresql+psycopg://` (psycopg 3)."""
    try:
        url = make_url(raw.strip())
    except ArgumentError as exc:
        raise ConfigError(f"DATABASE_URL is not a database URL: {exc}") from exc
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def instance_folder(environ: Mapping[str, str] | None = None) -> str | None:
    """INSTANCE_PATH: the folder for the SQLite file, the embedded Redis and the metrics
    files (Flask's default, `instance/` beside the code, when unset). Tests and a second
    local copy point it elsewhere so they never share a dev server's files."""
    raw = (os.environ if environ is None else environ).get("INSTANCE_PATH", "").strip()
    return str(Path(raw).resolve()) if raw else None


def _validate(s: Settings) -> None:
    if s.APP_ENV not in ENVIRONMENTS:
        raise ConfigError(f"APP_ENV must be one of {', '.join(ENVIRONMENTS)}, got {s.APP_ENV!r}")
    try:
        ZoneInfo(s.TIMEZONE)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"TIMEZONE {s.TIMEZONE!r} is not a known time zone") from exc
    if not (1 <= s.PORT <= 65535):
        raise ConfigError(f"PORT must be 1-65535, got {s.PORT}")
    percents = ("WHT_DIVIDEND_PERCENT", "WHT_INTEREST_PERCENT")
    classes = ("PERFORMING", "WATCH", "SUBSTANDARD", "DOUBTFUL", "LOSS")
    for name in (*percents, *(f"PROVISION_{c}_PERCENT" for c in classes)):
        try:
            rate = Decimal(getattr(s, name))
        except InvalidOperation:
            raise ConfigError(f"{name} must be a percent, got {getattr(s, name)!r}") from None
        if not (0 <= rate <= 100):
            raise ConfigError(f"{name} must be between 0 and 100, got {rate}")
    bands = [getattr(s, f"PROVISION_{c}_DAYS") for c in classes[1:]]
    if not (0 < bands[0] < bands[1] < bands[2] < bands[3]):
        raise ConfigError(f"PROVISION_*_DAYS must rise from 1 or more, got {bands}")
    if s.PROVISION_RESTRUCTURED_MIN_CLASS.upper() not in classes:
        raise ConfigError(f"PROVISION_RESTRUCTURED_MIN_CLASS must be one of {classes}")
    try:
        if any(wait < 0 for wait in s.webhook_retry_seconds) or s.WEBHOOK_DISABLE_AFTER < 1:
            raise ValueError
    except ValueError:
        raise ConfigError(
            "WEBHOOK_RETRY_SECONDS must be seconds like 10,60,300 and WEBHOOK_DISABLE_AFTER 1+"
        ) from None
    if not s.MPESA_SHORTCODE.isdigit():
        raise ConfigError("MPESA_SHORTCODE must be digits")
    if (
        len(s.CALLBACK_TOKEN) < 8
        or not s.CALLBACK_TOKEN.replace("-", "").replace("_", "").isalnum()
    ):
        raise ConfigError("CALLBACK_TOKEN must be at least 8 letters, digits, - or _")
    if s.AT_CALLBACK_TOKEN is not None and (
        len(s.AT_CALLBACK_TOKEN) < 8
        or not s.AT_CALLBACK_TOKEN.replace("-", "").replace("_", "").isalnum()
    ):
        raise ConfigError("AT_CALLBACK_TOKEN must be at least 8 letters, digits, - or _")
    _check_allowlist("MPESA_ALLOWED_IPS", s.MPESA_ALLOWED_IPS, any_allowed=False)
    _check_allowlist("AT_ALLOWED_IPS", s.AT_ALLOWED_IPS, any_allowed=True)
    lowered = s.CALLBACK_TOKEN.lower() + (s.CALLBACK_BASE_URL or "").lower()
    bad = [w for w in FORBIDDEN_CALLBACK_WORDS if w in lowered]
    if bad:
        raise ConfigError(
            f"CALLBACK_BASE_URL/CALLBACK_TOKEN contain {bad[0]!r}, Safaricom refuses it"
        )
    for name in (
        "SASRA_MIN_CORE_CAPITAL",
        "SASRA_CORE_CAPITAL_TO_ASSETS_PERCENT",
        "SASRA_CORE_CAPITAL_TO_DEPOSITS_PERCENT",
        "SASRA_INSTITUTIONAL_CAPITAL_TO_ASSETS_PERCENT",
        "SASRA_LIQUIDITY_PERCENT",
    ):
        try:
            minimum = Decimal(getattr(s, name))
        except InvalidOperation:
            raise ConfigError(f"{name} must be a number, got {getattr(s, name)!r}") from None
        if minimum < 0 or (name.endswith("PERCENT") and minimum > 100):
            raise ConfigError(f"{name} must be 0 or more (a percent at most 100), got {minimum}")
    if not (1 <= s.SASRA_RETURNS_DUE_DAY <= 28):
        raise ConfigError(f"SASRA_RETURNS_DUE_DAY must be 1-28, got {s.SASRA_RETURNS_DUE_DAY}")
    if s.is_production:
        required = {
            "SECRET_KEY": s.SECRET_KEY != DEV_SECRET and s.SECRET_KEY,
            "CALLBACK_TOKEN": s.CALLBACK_TOKEN != DEV_CALLBACK_TOKEN,
            "CALLBACK_BASE_URL": s.CALLBACK_BASE_URL,
            "REDIS_URL": s.REDIS_URL,
            "AT_API_KEY": s.AT_API_KEY,
            # Without it anyone could post /ussd as any member (AT_ALLOWED_IPS=any waives it).
            "AT_ALLOWED_IPS": s.AT_ALLOWED_IPS,
            "MPESA_CONSUMER_KEY": s.MPESA_CONSUMER_KEY,
            "MPESA_CONSUMER_SECRET": s.MPESA_CONSUMER_SECRET,
            "MPESA_PASSKEY": s.MPESA_PASSKEY,
            "MPESA_INITIATOR_NAME": s.MPESA_INITIATOR_NAME,
            "MPESA_SECURITY_CREDENTIAL": s.MPESA_SECURITY_CREDENTIAL,
        }
        missing = [name for name, ok in required.items() if not ok]
        if missing:
            raise ConfigError("production needs these settings: " + ", ".join(missing))
        if s.DATABASE_URL.startswith("sqlite"):
            raise ConfigError("production needs DATABASE_URL pointing at PostgreSQL")
        if not (s.CALLBACK_BASE_URL or "").startswith("https://"):
            raise ConfigError("CALLBACK_BASE_URL must be https in production")


def _check_allowlist(name: str, entries: tuple[str, ...], *, any_allowed: bool) -> None:
    """Each entry an address or a network, so a typo fails the start instead of silently
    refusing (or admitting) a provider; `any` only alone, and only where it means something."""
    lowered = tuple(entry.lower() for entry in entries)
    if ANY_SOURCE in lowered:
        if not any_allowed:
            raise ConfigError(f"{name} takes addresses or CIDR ranges; leave it empty for any")
        if len(entries) > 1:
            raise ConfigError(f"{name}: `any` stands alone, not beside addresses")
        return
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError as exc:
            raise ConfigError(f"{name}: {entry!r} is not an address or CIDR range") from exc
