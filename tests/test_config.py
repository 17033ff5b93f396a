"""Settings: bad values stop the process with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.clock import SystemClock
from shared.config import ConfigError, Settings, load_settings

PRODUCTION_ENV = {
    "DATABASE_URL": "postgresql://regimen@db/regimen",
    "REGIMEN_PUBLIC_URL": "https://book.example-clinic.com",
    "REGIMEN_SECRET_KEY": "k" * 40,
    "REGIMEN_TWILIO_ACCOUNT_SID": "AC" + "a" * 32,
    "REGIMEN_TWILIO_AUTH_TOKEN": "token",
    "REGIMEN_TWILIO_FROM": "+15005550006",
    "REGIMEN_SMTP_HOST": "smtp.example.com",
    "REGIMEN_SMTP_TLS": "starttls",
    "REGIMEN_EMAIL_FROM": "clinic@example.com",
}


def test_defaults_match_the_contract() -> None:
    settings = load_settings({})
    assert settings.public_url == "http://127.0.0.1:8080"
    assert (settings.booking_port, settings.scheduler_port, settings.notifier_port) == (
        8080,
        8081,
        8082,
    )
    assert settings.dev_inbox_port == 8025
    assert settings.twilio_api_url == "https://api.twilio.com"
    assert settings.database_url is None
    assert settings.smtp_tls == "none"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("REGIMEN_SMTP_TLS", "ssl3", "not one of none, starttls, tls"),
        ("REGIMEN_BOOKING_PORT", "eighty", "not a port number"),
        ("REGIMEN_NOTIFIER_PORT", "70000", "not a port number"),
        ("DATABASE_URL", "mysql://db/regimen", "scheme must be postgresql://"),
        ("DATABASE_URL", "postgresql://db:port/x", "port is not a number"),
        ("REGIMEN_PUBLIC_URL", "clinic.example.com", "not an http(s) URL"),
        ("REGIMEN_TWILIO_API_URL", "ftp://x", "not an http(s) URL"),
        ("REGIMEN_SECRET_KEY", "short", "at least 32 characters"),
        ("REGIMEN_TWILIO_FROM", "07700900123", "not an E.164 number"),
        ("REGIMEN_TWILIO_ACCOUNT_SID", "XY123", "starting with AC"),
        ("REGIMEN_EMAIL_FROM", "clinic", "not an email address"),
        ("REGIMEN_TWILIO_TIMEOUT", "-1", "greater than 0"),
        ("REGIMEN_SMTP_TIMEOUT", "nan", "finite number greater than 0"),
        ("REGIMEN_NOTIFIER_POLL_SECONDS", "inf", "finite number greater than 0"),
        ("REGIMEN_DB_POOL_SIZE", "1", "from 2 to 500"),
        ("REGIMEN_DB_POOL_SIZE", "²", "from 2 to 500"),
        ("REGIMEN_NOTIFIER_CONCURRENCY", "0", "from 1 to 500"),
        ("REGIMEN_NOTIFIER_LEASE_SECONDS", "many", "whole number"),
        ("REGIMEN_NOTIFY_MAX_ATTEMPTS", "101", "from 1 to 100"),
        ("REGIMEN_NOTIFY_RETRY_SECONDS", "-5", "whole number"),
        ("REGIMEN_NOTIFY_RECONCILE_GRACE_SECONDS", "1.5", "whole number"),
        ("REGIMEN_MAX_SCHEDULED_PER_DAY", "two", "whole number of 0 or more"),
        ("REGIMEN_SMS_SEGMENTS_PER_SECOND", "٣", "whole number of 0 or more"),
        ("REGIMEN_LOG_LEVEL", "verbose", "not one of debug, info, warning, error"),
        ("REGIMEN_TWILIO_MESSAGING_SERVICE_SID", "MG12", "starting with MG"),
        ("REGIMEN_DEV_INBOX_PORT", "0", "not a port number"),
        ("REGIMEN_TWILIO_CALLBACK_URL", "notify.example.com", "not an http(s) URL"),
        ("REGIMEN_TWILIO_CALLBACK_URL", "https://notify.example.com:https", "port is not"),
        # Paths are appended to it: a query would end up in the middle of every URL.
        ("REGIMEN_TWILIO_CALLBACK_URL", "https://notify.example.com/?key=1", "without '?'"),
        ("REGIMEN_TWILIO_CALLBACK_URL", "https://notify.example.com/#rc=3", "without '?'"),
        ("REGIMEN_TWILIO_CALLBACK_URL", "https://u:p@notify.example.com", "user name or"),
        ("REGIMEN_NOTIFIER_URL", "notifier:8082", "not an http(s) URL"),
        ("REGIMEN_NOTIFIER_URL", "http://notifier:80820", "port is not"),
    ],
)
def test_malformed_value_names_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}: ")
    assert says in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "missing",
    [
        "REGIMEN_SECRET_KEY",
        "REGIMEN_TWILIO_ACCOUNT_SID",
        "REGIMEN_TWILIO_AUTH_TOKEN",
        "REGIMEN_TWILIO_FROM",
        "REGIMEN_SMTP_HOST",
        "REGIMEN_EMAIL_FROM",
    ],
)
def test_production_refuses_to_start_without_real_providers(missing: str) -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != missing}
    with pytest.raises(ConfigError, match=f"^{missing}: required by 'regimen serve'"):
        load_settings(env, mode="production")


def test_production_accepts_a_messaging_service_instead_of_a_number() -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "REGIMEN_TWILIO_FROM"}
    env["REGIMEN_TWILIO_MESSAGING_SERVICE_SID"] = "MG" + "b" * 32
    settings = load_settings(env, mode="production")
    assert settings.twilio_from is None
    assert settings.smtp_port == 587  # the starttls default


def test_production_with_everything_set_keeps_the_real_twilio_api() -> None:
    settings = load_settings(PRODUCTION_ENV, mode="production")
    assert settings.twilio_api_url == "https://api.twilio.com"
    assert settings.smtp_host == "smtp.example.com"


def _regimen(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("REGIMEN_")}
    full_env.pop("DATABASE_URL", None)
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unreachable_database_is_one_line_naming_database_url() -> None:
    result = _regimen(["migrate"], {"DATABASE_URL": "postgresql://nope"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("regimen: DATABASE_URL: host name not found")


def test_unknown_smtp_tls_is_one_line_naming_the_variable() -> None:
    result = _regimen(["serve", "notifier"], {"REGIMEN_SMTP_TLS": "sometimes"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "regimen: REGIMEN_SMTP_TLS: 'sometimes' is not one of none, starttls, tls"
    )


def test_serve_without_secret_key_refuses_and_names_it() -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "REGIMEN_SECRET_KEY"}
    result = _regimen(["serve", "booking"], env)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("regimen: REGIMEN_SECRET_KEY: required")


def test_rate_limits_are_settings_and_zero_turns_them_off() -> None:
    settings = load_settings(
        {
            "REGIMEN_PUBLIC_READS_PER_MINUTE": "0",
            "REGIMEN_TRUSTED_PROXY_HOPS": "2",
            "REGIMEN_HOLDS_PER_ADDRESS": "0",
        }
    )
    assert settings.public_reads_per_minute == 0
    assert settings.public_writes_per_minute == 30
    assert settings.trusted_proxy_hops == 2
    assert settings.holds_per_address == 0
    defaults = load_settings({})
    assert (defaults.trusted_proxy_hops, defaults.holds_per_address) == (0, 3)
    with pytest.raises(ConfigError, match="^REGIMEN_PUBLIC_WRITES_PER_MINUTE: '-3' is not"):
        load_settings({"REGIMEN_PUBLIC_WRITES_PER_MINUTE": "-3"})
    with pytest.raises(ConfigError, match="^REGIMEN_TRUSTED_PROXY_HOPS: 'yes' is not"):
        load_settings({"REGIMEN_TRUSTED_PROXY_HOPS": "yes"})
    with pytest.raises(ConfigError, match="^REGIMEN_TRUSTED_PROXY_HOPS: '11' is not"):
        load_settings({"REGIMEN_TRUSTED_PROXY_HOPS": "11"})


@pytest.mark.parametrize("value", ["true", "false", ""])
def test_the_removed_forwarded_for_switch_stops_the_start_instead_of_being_ignored(
    value: str,
) -> None:
    # An operator upgrading with REGIMEN_TRUST_FORWARDED_FOR=true still in their .env believes
    # their limits count real clients; starting anyway would silently count the proxy instead.
    result = _regimen(
        ["serve", "booking"], {**PRODUCTION_ENV, "REGIMEN_TRUST_FORWARDED_FOR": value}
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("regimen: REGIMEN_TRUST_FORWARDED_FOR: no longer read")
    assert "REGIMEN_TRUSTED_PROXY_HOPS" in lines[0]


def test_token_create_refuses_an_empty_name_and_an_unknown_role() -> None:
    empty = _regimen(["token", "create", "--role", "admin", "--name", "  "], {})
    assert empty.returncode == 2
    assert empty.stderr.strip() == "regimen: --name: must be 1 to 200 characters"
    unknown = _regimen(["token", "create", "--role", "owner", "--name", "x"], {})
    assert unknown.returncode == 2
    assert "invalid choice: 'owner'" in unknown.stderr


def test_the_booking_app_will_not_build_without_a_secret_key(settings: Settings) -> None:
    # It signs hold tokens and patients' links: a made-up key would break every link on restart.
    from services.booking.app import create_app

    with pytest.raises(ConfigError, match="^REGIMEN_SECRET_KEY: required by the booking service"):
        create_app(settings.with_overrides(secret_key=None), SystemClock(), "postgresql://x/y")


@pytest.mark.parametrize(
    ("accident", "changes", "says"),
    [
        (
            "no DATABASE_URL: an embedded database inside each container",
            {"DATABASE_URL": None},
            "DATABASE_URL: required by 'regimen serve'",
        ),
        (
            "the public URL left at its dev default",
            {"REGIMEN_PUBLIC_URL": None},
            "REGIMEN_PUBLIC_URL: 'http://127.0.0.1:8080' is this machine",
        ),
        (
            "a public URL on localhost, even with https",
            {"REGIMEN_PUBLIC_URL": "https://localhost:8443"},
            "REGIMEN_PUBLIC_URL: 'https://localhost:8443' is this machine",
        ),
        (
            "a plain-http public URL: links and CSRF cookies in clear text",
            {"REGIMEN_PUBLIC_URL": "http://book.example-clinic.com"},
            "REGIMEN_PUBLIC_URL: must be https://",
        ),
        (
            "Twilio's callbacks pointed at this machine, which Twilio cannot reach",
            {"REGIMEN_TWILIO_CALLBACK_URL": "http://127.0.0.1:8082"},
            "REGIMEN_TWILIO_CALLBACK_URL: 'http://127.0.0.1:8082' is this machine",
        ),
        (
            "Twilio's callbacks (patients' numbers) over plain http",
            {"REGIMEN_TWILIO_CALLBACK_URL": "http://notify.example-clinic.com"},
            "REGIMEN_TWILIO_CALLBACK_URL: must be https://",
        ),
        (
            "mail in clear text to a server across the network",
            {"REGIMEN_SMTP_TLS": "none"},
            "REGIMEN_SMTP_TLS: 'none' would send patients' email unencrypted to smtp.example.com",
        ),
        (
            "the Twilio API over plain http to another host",
            {"REGIMEN_TWILIO_API_URL": "http://api.twilio.com"},
            "REGIMEN_TWILIO_API_URL: must be https://",
        ),
    ],
)
def test_production_refuses_an_unsafe_setting(
    accident: str, changes: dict[str, str | None], says: str
) -> None:
    env = {**PRODUCTION_ENV, **changes}
    env = {k: v for k, v in env.items() if v is not None}
    with pytest.raises(ConfigError) as caught:
        load_settings(env, mode="production")
    message = str(caught.value)
    assert message.startswith(says), accident
    assert "\n" not in message
    load_settings(env, mode="dev")  # dev allows each of them: its stand-ins are local


@pytest.mark.parametrize(
    "local",
    [
        {"REGIMEN_SMTP_TLS": "none", "REGIMEN_SMTP_HOST": "127.0.0.1"},
        {"REGIMEN_SMTP_TLS": "none", "REGIMEN_SMTP_HOST": "localhost"},
        {"REGIMEN_SMTP_TLS": "none", "REGIMEN_SMTP_HOST": "::1"},
        {"REGIMEN_TWILIO_API_URL": "http://127.0.0.1:9"},
        {"REGIMEN_TWILIO_API_URL": "http://localhost:8026"},
        {"REGIMEN_TWILIO_API_URL": "http://[::1]:8026"},
    ],
)
def test_production_allows_plain_text_to_a_stand_in_on_this_machine(local: dict[str, str]) -> None:
    # Operators and the tests run `regimen serve` against local Twilio and SMTP stand-ins.
    settings = load_settings({**PRODUCTION_ENV, **local}, mode="production")
    assert settings.public_url == "https://book.example-clinic.com"


def test_serve_booking_without_database_url_exits_2_naming_it(tmp_path: Path) -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "DATABASE_URL"}
    env["REGIMEN_STATE_DIR"] = str(tmp_path / "state")
    result = _regimen(["serve", "booking"], env)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "regimen: DATABASE_URL: required by 'regimen serve' (production); the embedded "
        "database is for 'regimen dev' only"
    )
    assert not (tmp_path / "state" / "pgdata").exists()  # no embedded database was started


def test_dev_knows_its_own_embedded_database_from_a_foreign_one(tmp_path: Path) -> None:
    from services.devkit.dev import refuse_foreign_database

    state = tmp_path / "state"
    own = load_settings(
        {
            "REGIMEN_STATE_DIR": str(state),
            "DATABASE_URL": f"postgresql://postgres@/regimen?host={state / 'pgdata'}",
        }
    )
    refuse_foreign_database(own, use_database_url=False)  # the embedded one, spelt out
    refuse_foreign_database(
        load_settings({"REGIMEN_STATE_DIR": str(state)}), use_database_url=False
    )
    foreign = load_settings(
        {"REGIMEN_STATE_DIR": str(state), "DATABASE_URL": "postgresql://regimen@db.clinic/regimen"}
    )
    with pytest.raises(ConfigError, match=r"^DATABASE_URL: .* pass --use-database-url$"):
        refuse_foreign_database(foreign, use_database_url=False)
    refuse_foreign_database(foreign, use_database_url=True)


def test_twilio_callbacks_follow_the_public_url_unless_set_apart() -> None:
    single = load_settings(PRODUCTION_ENV, mode="production")
    assert single.twilio_callback_base == "https://book.example-clinic.com"
    # Unset, it keeps following the public URL (tests and dev override that one).
    moved = single.with_overrides(public_url="https://other.example-clinic.com")
    assert moved.twilio_callback_base == "https://other.example-clinic.com"
    apart = load_settings(
        {**PRODUCTION_ENV, "REGIMEN_TWILIO_CALLBACK_URL": "https://notify.example-clinic.com/"},
        mode="production",
    )
    assert apart.twilio_callback_base == "https://notify.example-clinic.com"
    assert apart.public_url == "https://book.example-clinic.com"


def test_booking_forwards_to_the_local_notifier_port_unless_told_otherwise() -> None:
    assert load_settings({}).notifier_base == "http://127.0.0.1:8082"
    assert load_settings({"REGIMEN_NOTIFIER_PORT": "9182"}).notifier_base == (
        "http://127.0.0.1:9182"
    )
    # An internal address: plain http to another host is allowed in production.
    told = load_settings(
        {**PRODUCTION_ENV, "REGIMEN_NOTIFIER_URL": "http://notifier:8082"}, mode="production"
    )
    assert told.notifier_base == "http://notifier:8082"


@pytest.mark.parametrize(
    ("service", "name", "value", "says"),
    [
        ("booking", "REGIMEN_TWILIO_CALLBACK_URL", "http://notify.example-clinic.com", "must be"),
        ("notifier", "REGIMEN_TWILIO_CALLBACK_URL", "https://localhost:8443", "is this machine"),
        ("booking", "REGIMEN_NOTIFIER_URL", "notifier:8082", "is not an http(s) URL"),
    ],
)
def test_serve_with_a_bad_webhook_url_exits_2_naming_it(
    service: str, name: str, value: str, says: str
) -> None:
    result = _regimen(["serve", service], {**PRODUCTION_ENV, name: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"regimen: {name}: ")
    assert says in lines[0]


@pytest.mark.parametrize("value", ["3", "169", "two days", "-48", "4.5"])
def test_a_proposal_hold_outside_4_to_168_hours_stops_the_start_naming_it(value: str) -> None:
    with pytest.raises(ConfigError, match="^REGIMEN_PROPOSAL_HOLD_HOURS: .* from 4 to 168$"):
        load_settings({"REGIMEN_PROPOSAL_HOLD_HOURS": value})


def test_a_proposal_hold_in_range_is_taken_in_hours() -> None:
    from datetime import timedelta

    assert load_settings({"REGIMEN_PROPOSAL_HOLD_HOURS": "24"}).proposal_hold == timedelta(hours=24)
    assert load_settings({}).proposal_hold == timedelta(hours=48)
