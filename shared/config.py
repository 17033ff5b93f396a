"""Settings from environment variables, validated once at start.

Every problem is reported as a `ConfigError` whose message is one line naming the variable, so an
operator reading a crash-looping container's log sees at once what to fix. (pydantic-settings
would do the parsing, but its multi-line error reports are exactly what we want to avoid here.)
"""

from __future__ import annotations

import ipaddress
import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

Mode = Literal["dev", "production"]
SmtpTls = Literal["none", "starttls", "tls"]

DEFAULT_TWILIO_API_URL = "https://api.twilio.com"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8080"

# Every variable Regimen reads; deployment files are checked against this list.
KNOWN_VARIABLES: dict[str, str] = {
    "DATABASE_URL": "PostgreSQL URL; unset: embedded PostgreSQL under REGIMEN_STATE_DIR/pgdata",
    "REGIMEN_MIGRATION_DATABASE_URL": "URL 'regimen migrate' uses (the schema owner); DATABASE_URL",
    "REGIMEN_PUBLIC_URL": "URL patients and Twilio reach booking/notifier at",
    "REGIMEN_TWILIO_CALLBACK_URL": (
        "base URL Twilio calls for status callbacks and signs (the notifier's public address)"
    ),
    "REGIMEN_NOTIFIER_URL": "notifier's internal URL booking forwards /twilio/* to",
    "REGIMEN_SECRET_KEY": "signs patient links and CSRF tokens (production: required)",
    "REGIMEN_BOOKING_PORT": "booking listen port",
    "REGIMEN_SCHEDULER_PORT": "scheduler listen port",
    "REGIMEN_NOTIFIER_PORT": "notifier listen port",
    "REGIMEN_BOOKING_METRICS_PORT": "booking's /metrics port (internal; not the public port)",
    "REGIMEN_TWILIO_ACCOUNT_SID": "Twilio account SID",
    "REGIMEN_TWILIO_AUTH_TOKEN": "Twilio auth token (also validates webhook signatures)",
    "REGIMEN_TWILIO_FROM": "sender phone number (E.164)",
    "REGIMEN_TWILIO_MESSAGING_SERVICE_SID": "sender Messaging Service SID",
    "REGIMEN_TWILIO_API_URL": "base URL of the Twilio REST API",
    "REGIMEN_TWILIO_TIMEOUT": "seconds before a Twilio API call is abandoned",
    "REGIMEN_SMTP_HOST": "outgoing mail server",
    "REGIMEN_SMTP_PORT": "outgoing mail port",
    "REGIMEN_SMTP_USERNAME": "SMTP user",
    "REGIMEN_SMTP_PASSWORD": "SMTP password",
    "REGIMEN_SMTP_TLS": "none, starttls or tls",
    "REGIMEN_SMTP_TIMEOUT": "seconds before an SMTP exchange is abandoned",
    "REGIMEN_EMAIL_FROM": "From address of patient email",
    "REGIMEN_DEV_INBOX_PORT": "dev inbox page port",
    "REGIMEN_DEV_TWILIO_PORT": "dev Twilio API stand-in port",
    "REGIMEN_DEV_SMTP_PORT": "dev SMTP server port",
    "REGIMEN_STATE_DIR": "folder for embedded PostgreSQL data and dev state",
    "REGIMEN_LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR",
    "REGIMEN_DB_POOL_SIZE": "maximum connections per service process",
    "REGIMEN_PUBLIC_READS_PER_MINUTE": "public API reads per client address a minute (0: off)",
    "REGIMEN_PUBLIC_WRITES_PER_MINUTE": "public API writes per client address a minute (0: off)",
    "REGIMEN_BOOKINGS_PER_MOBILE_PER_HOUR": "public bookings per mobile number an hour (0: off)",
    "REGIMEN_TRUSTED_PROXY_HOPS": "proxies in front of booking that append X-Forwarded-For (0-10)",
    "REGIMEN_HOLDS_PER_ADDRESS": "unexpired public holds one client address may have (0: off)",
    "REGIMEN_LINK_LIFETIME_DAYS": "days a patient's private link stays valid after it is sent",
    "REGIMEN_PROPOSAL_HOLD_HOURS": "hours a proposed next session of a course is held (4-168)",
    "REGIMEN_NOTIFIER_CONCURRENCY": "messages one notifier process sends at once",
    "REGIMEN_NOTIFIER_POLL_SECONDS": "how often notifier workers look for due messages unprompted",
    "REGIMEN_NOTIFIER_LEASE_SECONDS": "how long a claimed message is a worker's before rescue",
    "REGIMEN_SMS_SEGMENTS_PER_SECOND": "SMS segments a sender may send a second (0: no limit)",
    "REGIMEN_NOTIFY_MAX_ATTEMPTS": "provider calls for one message before it fails for good",
    "REGIMEN_NOTIFY_RETRY_SECONDS": "first retry delay after a temporary failure (then doubling)",
    "REGIMEN_MAX_SCHEDULED_PER_DAY": "scheduled messages a patient gets a day per channel (0: off)",
    "REGIMEN_NOTIFY_MERGE_MINUTES": "reminders due this close together merge into one (0: off)",
    "REGIMEN_NOTIFY_RECONCILE_GRACE_SECONDS": "wait before an unconfirmed SMS is sent again",
    "REGIMEN_STAFF_TOKEN_MAX_AGE_DAYS": "days a staff API token works once created (0: no limit)",
    "REGIMEN_DEV_CLOCK_FILE": (
        "tests and demos only: `regimen serve` runs its clock ahead by the seconds in this file "
        "and follows changes to it"
    ),
}


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line naming the variable."""


@dataclass(frozen=True)
class Settings:
    mode: Mode
    database_url: str | None
    public_url: str
    secret_key: str | None
    booking_port: int
    scheduler_port: int
    notifier_port: int
    booking_metrics_port: int
    twilio_account_sid: str | None
    twilio_auth_token: str | None
    twilio_from: str | None
    twilio_messaging_service_sid: str | None
    twilio_api_url: str
    twilio_timeout: float
    smtp_host: str | None
    smtp_port: int
    smtp_username: str | None
    smtp_password: str | None
    smtp_tls: SmtpTls
    smtp_timeout: float
    email_from: str | None
    dev_inbox_port: int
    dev_twilio_port: int
    dev_smtp_port: int
    state_dir: Path
    log_level: str
    # A file moving the clock of `regimen serve` (tests and demos; see shared/clock.py).
    dev_clock_file: Path | None
    db_pool_size: int
    public_reads_per_minute: int = 120
    public_writes_per_minute: int = 30
    bookings_per_mobile_per_hour: int = 5
    trusted_proxy_hops: int = 0
    holds_per_address: int = 3
    notifier_concurrency: int = 16
    notifier_poll_seconds: float = 1.0
    notifier_lease_seconds: int = 120
    sms_segments_per_second: int = 1
    notify_max_attempts: int = 8
    notify_retry_seconds: int = 30
    max_scheduled_per_day: int = 2
    notify_merge_minutes: int = 720
    notify_reconcile_grace_seconds: int = 120
    link_lifetime: timedelta = timedelta(days=30)
    # How long the next session proposed after a completed one is held for the patient's answer.
    proposal_hold: timedelta = timedelta(hours=48)
    migration_database_url: str | None = None
    staff_token_max_age_days: int = 365
    # Unset (None) follows public_url / notifier_port, also through with_overrides.
    twilio_callback_url: str | None = None
    notifier_url: str | None = None

    @property
    def twilio_callback_base(self) -> str:
        """The base URL Twilio calls for status callbacks and inbound SMS, and signs: every
        webhook signature is checked against it plus the path and query Twilio called."""
        return self.twilio_callback_url or self.public_url

    @property
    def notifier_base(self) -> str:
        """Where the booking service forwards the /twilio/* requests it receives."""
        return self.notifier_url or f"http://127.0.0.1:{self.notifier_port}"

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _digits(raw: str) -> bool:
    # Not str.isdigit(): that accepts "²" and other digits int() refuses.
    return raw.isascii() and raw.isdigit()


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _optional_path(env: Mapping[str, str], name: str) -> Path | None:
    raw = _text(env, name)
    return None if raw is None else Path(raw).resolve()


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = _text(env, name)
    if raw is None:
        return default
    if not _digits(raw) or not 1 <= int(raw) <= 65535:
        raise ConfigError(f"{name}: {raw!r} is not a port number (1-65535)")
    return int(raw)


def _positive_number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}: must be a finite number greater than 0, got {raw!r}")
    return value


def _http_url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = _text(env, name) or default
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}: {raw!r} is not an http(s) URL with a host")
    return raw.rstrip("/")


def _base_url(env: Mapping[str, str], name: str) -> str | None:
    """A base URL that paths are appended to, or None when unset."""
    raw = _text(env, name)
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}: {raw!r} is not an http(s) URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ConfigError(f"{name}: the port is not a number (1-65535)") from None
    if parts.query or parts.fragment or raw.endswith(("?", "#")):
        raise ConfigError(f"{name}: must be a base URL without '?' or '#' (paths are appended)")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{name}: must not carry a user name or password")
    return raw.rstrip("/")


def _database_url(env: Mapping[str, str], name: str = "DATABASE_URL") -> str | None:
    raw = _text(env, name)
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ConfigError(f"{name}: scheme must be postgresql:// (got {parts.scheme or 'none'!r})")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ConfigError(f"{name}: the port is not a number") from None
    return raw


def _migration_database_url(env: Mapping[str, str], database_url: str | None) -> str | None:
    """The schema owner's URL for `regimen migrate`, when it differs from the services' URL."""
    url = _database_url(env, "REGIMEN_MIGRATION_DATABASE_URL")
    if url is not None and database_url is None:
        # Without DATABASE_URL every command uses the embedded database; migrating another one
        # would leave the services on an unmigrated database.
        raise ConfigError(
            "REGIMEN_MIGRATION_DATABASE_URL: set DATABASE_URL too (the services' URL to the "
            "same database)"
        )
    return url


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = _text(env, name)
    if raw is None:
        return default
    if not _digits(raw) or int(raw) > 1_000_000_000:
        raise ConfigError(f"{name}: {raw!r} is not a whole number of 0 or more")
    return int(raw)


def _count_between(
    env: Mapping[str, str], name: str, default: int, lowest: int, highest: int
) -> int:
    raw = _text(env, name)
    if raw is None:
        return default
    if not _digits(raw) or not lowest <= int(raw) <= highest:
        raise ConfigError(f"{name}: {raw!r} is not a whole number from {lowest} to {highest}")
    return int(raw)


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (_text(env, name) or "false").lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"{name}: {raw!r} is not true or false")
    return raw in ("true", "1", "yes")


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    raw = (_text(env, name) or default).lower()
    if raw not in allowed:
        raise ConfigError(f"{name}: {raw!r} is not one of {', '.join(allowed)}")
    return raw


# Settings that no longer exist, with what replaces them. Each is a security setting: ignoring it
# silently would leave an operator believing it still protects them.
REMOVED_VARIABLES: dict[str, str] = {
    "REGIMEN_TRUST_FORWARDED_FOR": (
        "no longer read (it trusted the left-most X-Forwarded-For address, which the client "
        "chooses); remove it and set REGIMEN_TRUSTED_PROXY_HOPS to the number of proxies in "
        "front of the booking service"
    ),
}


def _refuse_removed(env: Mapping[str, str]) -> None:
    for name, replacement in REMOVED_VARIABLES.items():
        if name in env:
            raise ConfigError(f"{name}: {replacement}")


def load_settings(env: Mapping[str, str] | None = None, mode: Mode = "dev") -> Settings:
    """Read and validate every setting; raise ConfigError on the first bad one."""
    env = os.environ if env is None else env
    _refuse_removed(env)
    smtp_tls = _choice(env, "REGIMEN_SMTP_TLS", ("none", "starttls", "tls"), "none")
    default_smtp_port = {"none": 25, "starttls": 587, "tls": 465}[smtp_tls]
    email_from = _text(env, "REGIMEN_EMAIL_FROM")
    if email_from is not None and "@" not in email_from:
        raise ConfigError(f"REGIMEN_EMAIL_FROM: {email_from!r} is not an email address")
    secret_key = _text(env, "REGIMEN_SECRET_KEY")
    if secret_key is not None and len(secret_key) < 32:
        raise ConfigError("REGIMEN_SECRET_KEY: must be at least 32 characters long")
    twilio_from = _text(env, "REGIMEN_TWILIO_FROM")
    if twilio_from is not None and not (twilio_from.startswith("+") and twilio_from[1:].isdigit()):
        raise ConfigError(f"REGIMEN_TWILIO_FROM: {twilio_from!r} is not an E.164 number")
    sid = _text(env, "REGIMEN_TWILIO_ACCOUNT_SID")
    if sid is not None and not (sid.startswith("AC") and len(sid) == 34):
        raise ConfigError("REGIMEN_TWILIO_ACCOUNT_SID: must be 34 characters starting with AC")
    service_sid = _text(env, "REGIMEN_TWILIO_MESSAGING_SERVICE_SID")
    if service_sid is not None and not (service_sid.startswith("MG") and len(service_sid) == 34):
        raise ConfigError(
            "REGIMEN_TWILIO_MESSAGING_SERVICE_SID: must be 34 characters starting with MG"
        )
    log_level = _choice(env, "REGIMEN_LOG_LEVEL", ("debug", "info", "warning", "error"), "info")
    database_url = _database_url(env)
    settings = Settings(
        mode=mode,
        database_url=database_url,
        public_url=_http_url(env, "REGIMEN_PUBLIC_URL", DEFAULT_PUBLIC_URL),
        secret_key=secret_key,
        booking_port=_port(env, "REGIMEN_BOOKING_PORT", 8080),
        scheduler_port=_port(env, "REGIMEN_SCHEDULER_PORT", 8081),
        notifier_port=_port(env, "REGIMEN_NOTIFIER_PORT", 8082),
        booking_metrics_port=_port(env, "REGIMEN_BOOKING_METRICS_PORT", 9080),
        twilio_account_sid=sid,
        twilio_auth_token=_text(env, "REGIMEN_TWILIO_AUTH_TOKEN"),
        twilio_from=twilio_from,
        twilio_messaging_service_sid=service_sid,
        twilio_api_url=_http_url(env, "REGIMEN_TWILIO_API_URL", DEFAULT_TWILIO_API_URL),
        twilio_timeout=_positive_number(env, "REGIMEN_TWILIO_TIMEOUT", 10.0),
        smtp_host=_text(env, "REGIMEN_SMTP_HOST"),
        smtp_port=_port(env, "REGIMEN_SMTP_PORT", default_smtp_port),
        smtp_username=_text(env, "REGIMEN_SMTP_USERNAME"),
        smtp_password=_text(env, "REGIMEN_SMTP_PASSWORD"),
        smtp_tls=smtp_tls,  # type: ignore[arg-type]
        smtp_timeout=_positive_number(env, "REGIMEN_SMTP_TIMEOUT", 30.0),
        email_from=email_from,
        dev_inbox_port=_port(env, "REGIMEN_DEV_INBOX_PORT", 8025),
        dev_twilio_port=_port(env, "REGIMEN_DEV_TWILIO_PORT", 8026),
        dev_smtp_port=_port(env, "REGIMEN_DEV_SMTP_PORT", 1025),
        state_dir=Path(_text(env, "REGIMEN_STATE_DIR") or ".regimen").resolve(),
        log_level=log_level.upper(),
        dev_clock_file=_optional_path(env, "REGIMEN_DEV_CLOCK_FILE"),
        # At least 2: an exclusive sweep keeps one connection for its advisory lock while it
        # works on another.
        db_pool_size=_count_between(env, "REGIMEN_DB_POOL_SIZE", 10, 2, 500),
        public_reads_per_minute=_count(env, "REGIMEN_PUBLIC_READS_PER_MINUTE", 120),
        public_writes_per_minute=_count(env, "REGIMEN_PUBLIC_WRITES_PER_MINUTE", 30),
        bookings_per_mobile_per_hour=_count(env, "REGIMEN_BOOKINGS_PER_MOBILE_PER_HOUR", 5),
        trusted_proxy_hops=_count_between(env, "REGIMEN_TRUSTED_PROXY_HOPS", 0, 0, 10),
        holds_per_address=_count(env, "REGIMEN_HOLDS_PER_ADDRESS", 3),
        notifier_concurrency=_count_between(env, "REGIMEN_NOTIFIER_CONCURRENCY", 16, 1, 500),
        notifier_poll_seconds=_positive_number(env, "REGIMEN_NOTIFIER_POLL_SECONDS", 1.0),
        notifier_lease_seconds=_count_between(
            env, "REGIMEN_NOTIFIER_LEASE_SECONDS", 120, 10, 86400
        ),
        sms_segments_per_second=_count(env, "REGIMEN_SMS_SEGMENTS_PER_SECOND", 1),
        notify_max_attempts=_count_between(env, "REGIMEN_NOTIFY_MAX_ATTEMPTS", 8, 1, 100),
        notify_retry_seconds=_count_between(env, "REGIMEN_NOTIFY_RETRY_SECONDS", 30, 1, 86400),
        max_scheduled_per_day=_count(env, "REGIMEN_MAX_SCHEDULED_PER_DAY", 2),
        notify_merge_minutes=_count(env, "REGIMEN_NOTIFY_MERGE_MINUTES", 720),
        notify_reconcile_grace_seconds=_count_between(
            env, "REGIMEN_NOTIFY_RECONCILE_GRACE_SECONDS", 120, 1, 86400
        ),
        # Every message mints a fresh link, so a month covers the gap between a course's
        # sessions; a long-lived link is a long-lived credential in old messages.
        link_lifetime=timedelta(days=_count_between(env, "REGIMEN_LINK_LIFETIME_DAYS", 30, 1, 180)),
        proposal_hold=timedelta(
            hours=_count_between(env, "REGIMEN_PROPOSAL_HOLD_HOURS", 48, 4, 168)
        ),
        migration_database_url=_migration_database_url(env, database_url),
        staff_token_max_age_days=_count_between(
            env, "REGIMEN_STAFF_TOKEN_MAX_AGE_DAYS", 365, 0, 36500
        ),
        twilio_callback_url=_base_url(env, "REGIMEN_TWILIO_CALLBACK_URL"),
        notifier_url=_base_url(env, "REGIMEN_NOTIFIER_URL"),
    )
    if mode == "production":
        require_production_settings(settings)
    return settings


def is_local_host(host: str | None) -> bool:
    """This machine: `localhost` (and *.localhost) or a loopback address. Traffic to it never
    crosses a network, so plain text to a local stand-in or relay exposes nothing."""
    if not host:
        return False
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def require_production_settings(settings: Settings) -> None:
    """Production never falls back to dev stand-ins: every provider setting must be explicit,
    and nothing patients' data travels over may be plain text beyond this machine."""
    if settings.database_url is None:
        # Unset means an embedded PostgreSQL inside each container: every replica would keep
        # its own data, and lose it with the container.
        raise ConfigError(
            "DATABASE_URL: required by 'regimen serve' (production); the embedded database "
            "is for 'regimen dev' only"
        )
    required = {
        "REGIMEN_SECRET_KEY": settings.secret_key,
        "REGIMEN_TWILIO_ACCOUNT_SID": settings.twilio_account_sid,
        "REGIMEN_TWILIO_AUTH_TOKEN": settings.twilio_auth_token,
        "REGIMEN_SMTP_HOST": settings.smtp_host,
        "REGIMEN_EMAIL_FROM": settings.email_from,
    }
    for name, value in required.items():
        if value is None:
            raise ConfigError(f"{name}: required by 'regimen serve' (production) but not set")
    if settings.twilio_from is None and settings.twilio_messaging_service_sid is None:
        raise ConfigError(
            "REGIMEN_TWILIO_FROM: required by 'regimen serve' (or set "
            "REGIMEN_TWILIO_MESSAGING_SERVICE_SID)"
        )
    public = urlsplit(settings.public_url)
    if is_local_host(public.hostname):  # the default (http://127.0.0.1:8080) among them
        raise ConfigError(
            f"REGIMEN_PUBLIC_URL: {settings.public_url!r} is this machine; set the https:// "
            "address patients and Twilio reach (it is in every link and signature check)"
        )
    if public.scheme != "https":
        raise ConfigError(
            f"REGIMEN_PUBLIC_URL: must be https:// (patients' links are credentials), "
            f"got {settings.public_url!r}"
        )
    callback = settings.twilio_callback_url
    if callback is not None:  # unset, it is the public URL checked above
        if is_local_host(urlsplit(callback).hostname):
            raise ConfigError(
                f"REGIMEN_TWILIO_CALLBACK_URL: {callback!r} is this machine; set the https:// "
                "address Twilio reaches the notifier at (or unset it to use REGIMEN_PUBLIC_URL)"
            )
        if urlsplit(callback).scheme != "https":
            raise ConfigError(
                f"REGIMEN_TWILIO_CALLBACK_URL: must be https:// (Twilio posts patients' numbers "
                f"and messages to it), got {callback!r}"
            )
    if settings.smtp_tls == "none" and not is_local_host(settings.smtp_host):
        raise ConfigError(
            f"REGIMEN_SMTP_TLS: 'none' would send patients' email unencrypted to "
            f"{settings.smtp_host}; use starttls or tls ('none' only for a relay on this machine)"
        )
    twilio = urlsplit(settings.twilio_api_url)
    if twilio.scheme != "https" and not is_local_host(twilio.hostname):
        raise ConfigError(
            f"REGIMEN_TWILIO_API_URL: must be https:// (it carries the auth token and "
            f"patients' numbers), got {settings.twilio_api_url!r}; http only for a stand-in on "
            "this machine"
        )


# The dev stand-ins' credentials: fixed so that the dev inbox and the notifier agree on them.
DEV_TWILIO_ACCOUNT_SID = "AC" + "0" * 31 + "1"
DEV_TWILIO_FROM = "+15005550006"


def dev_secret(state_dir: Path, name: str) -> str:
    """A random secret generated once and kept under the state folder, so restarts keep it."""
    path = state_dir / name
    if path.exists():
        return path.read_text().strip()
    state_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


def with_dev_stand_ins(settings: Settings) -> Settings:
    """Fill every unset provider setting with the local stand-ins `regimen dev` starts."""
    return settings.with_overrides(
        secret_key=settings.secret_key or dev_secret(settings.state_dir, "secret-key"),
        twilio_account_sid=settings.twilio_account_sid or DEV_TWILIO_ACCOUNT_SID,
        twilio_auth_token=settings.twilio_auth_token
        or dev_secret(settings.state_dir, "twilio-auth-token"),
        twilio_from=settings.twilio_from
        or (None if settings.twilio_messaging_service_sid else DEV_TWILIO_FROM),
        twilio_api_url=settings.twilio_api_url
        if settings.twilio_api_url != DEFAULT_TWILIO_API_URL
        else f"http://127.0.0.1:{settings.dev_twilio_port}",
        smtp_host=settings.smtp_host or "127.0.0.1",
        smtp_port=settings.smtp_port if settings.smtp_host else settings.dev_smtp_port,
        email_from=settings.email_from or "clinic@regimen.localhost",
    )
