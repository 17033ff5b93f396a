"""No Docker engine runs here, so the deployment files are checked by reading them: every service
command must be a real `regimen` command and every variable a setting Regimen knows."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from services.cli import build_parser
from shared.config import KNOWN_VARIABLES, load_settings

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def test_every_regimen_service_runs_a_real_command() -> None:
    services = _compose()["services"]
    regimen_services = {n: s for n, s in services.items() if "build" in s or "<<" in s}
    assert set(regimen_services) == {"migrate", "booking", "scheduler", "notifier"}
    parser = build_parser()
    for name, service in regimen_services.items():
        command = service["command"]
        args = parser.parse_args(command)  # exits (fails the test) on an unknown command
        if name == "migrate":
            assert args.command == "migrate"
        else:
            assert (args.command, args.service) == ("serve", name)
            assert service["depends_on"]["migrate"]["condition"] == (
                "service_completed_successfully"
            )
            assert "healthcheck" in service and "/readyz" in " ".join(
                service["healthcheck"]["test"]
            )
            assert service["restart"] == "unless-stopped"


def test_postgres_is_18_with_a_healthcheck() -> None:
    postgres = _compose()["services"]["postgres"]
    assert postgres["image"] == "postgres:18"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_env_example_names_only_known_settings_and_parses() -> None:
    values = _env_example()
    unknown = set(values) - set(KNOWN_VARIABLES)
    assert not unknown, f"unknown variables in .env.example: {unknown}"
    # Filled in with real-looking values it passes production validation.
    filled = {k: v for k, v in values.items() if v}
    filled.update(
        REGIMEN_SECRET_KEY="x" * 40,
        REGIMEN_TWILIO_ACCOUNT_SID="AC" + "1" * 32,
        REGIMEN_TWILIO_AUTH_TOKEN="t",
        REGIMEN_TWILIO_FROM="+15005550006",
    )
    settings = load_settings(filled, mode="production")
    assert settings.smtp_tls == "starttls"


@pytest.mark.parametrize("name", ["Dockerfile"])
def test_dockerfile_runs_the_regimen_command(name: str) -> None:
    text = (ROOT / "deploy" / name).read_text()
    assert 'ENTRYPOINT ["regimen"]' in text
    assert "USER regimen" in text


def test_only_the_migrate_service_logs_in_as_the_owner() -> None:
    services = _compose()["services"]
    owner = services["postgres"]["environment"]["POSTGRES_USER"]
    migration_url = services["migrate"]["environment"]["REGIMEN_MIGRATION_DATABASE_URL"]
    assert urlsplit(migration_url).username == owner
    services_user = urlsplit(_env_example()["DATABASE_URL"]).username
    assert services_user and services_user != owner
    assert "REGIMEN_MIGRATION_DATABASE_URL" not in _env_example()  # .env reaches every service
    for name in ("booking", "scheduler", "notifier"):
        assert "REGIMEN_MIGRATION_DATABASE_URL" not in (services[name].get("environment") or {})
    # The postgres container's first start makes the services' login role.
    assert (
        "./deploy/postgres-init:/docker-entrypoint-initdb.d:ro" in services["postgres"]["volumes"]
    )
    init = (ROOT / "deploy" / "postgres-init" / "10-regimen-services-role.sh").read_text()
    assert f"CREATE ROLE {services_user} LOGIN" in init and "IN ROLE regimen_app" in init
