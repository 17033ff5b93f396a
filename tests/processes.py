"""Helpers for tests that run `regimen` as a real process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent


# What `regimen serve` in production mode needs, pointing at nothing real: tests add the
# database and ports. Production refuses a local or plain-http public URL; TLS ends at a proxy.
PRODUCTION = {
    "REGIMEN_PUBLIC_URL": "https://clinic.example.test",
    "REGIMEN_SECRET_KEY": "s" * 40,
    "REGIMEN_TWILIO_ACCOUNT_SID": "AC" + "a" * 32,
    "REGIMEN_TWILIO_AUTH_TOKEN": "token",
    "REGIMEN_TWILIO_FROM": "+15005550006",
    "REGIMEN_TWILIO_API_URL": "http://127.0.0.1:9",
    "REGIMEN_SMTP_HOST": "127.0.0.1",
    "REGIMEN_EMAIL_FROM": "clinic@regimen.test",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without any Regimen setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIMEN_")}
    env.pop("DATABASE_URL", None)
    env.update(extra)
    return env


def start_regimen(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args],
            env=env,
            cwd=REPO_ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


def wait_for_text(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace") if log.exists() else ""
        if text in content:
            return content
        if process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode}:\n{content}")
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not seen within {timeout}s:\n{log.read_text(errors='replace')}")


def postgres_processes_for(pgdata: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info.get("name") == "postgres" and str(pgdata) in " ".join(cmdline):
            found.append(proc)
    return found
