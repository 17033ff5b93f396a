"""The browser tests' one prerequisite, a Chromium that Playwright can drive, found or obtained
before any test runs. `make test` runs `python -m tests.browser.chromium` ahead of pytest; the
`browser` fixture (tests/browser/conftest.py) asks `find_chromium` for the same answer.

Found means, in this order: Playwright's own build for the installed Playwright version (under
PLAYWRIGHT_BROWSERS_PATH, by default ~/.cache/ms-playwright), then `chromium` or
`chromium-browser` on PATH (Debian's package installs /usr/bin/chromium). When neither is there:

Playwright's driver (the Node.js it bundles) must start too: on a minimal Debian it lacks
libatomic.so.1, and then nothing of Playwright works, neither its download nor the tests.

1. Playwright's own download (`python -m playwright install --no-shell chromium`), bounded: a
   CDN that cannot be resolved or refuses fails within seconds, a silent one after Playwright's
   five tries of IDLE_TIMEOUT_MS each, a download still running after --download-timeout
   seconds is stopped (with everything it started);
2. else, as root with apt-get on PATH, Debian's package (`apt-get install chromium`, with
   libatomic1 when the driver lacks it; on failure `apt-get update` and once more, for a
   machine whose package lists are missing or stale);
3. else one line naming what to install (Chromium, or the library the driver lacks), exit
   status 2, so the suite stops before any test runs
   instead of ending in a page of browser-test errors.

It reads nothing but the environment it runs in (PATH, and Playwright's own
PLAYWRIGHT_BROWSERS_PATH, PLAYWRIGHT_DOWNLOAD_HOST, PLAYWRIGHT_NODEJS_PATH), which is how its
tests (test_chromium_setup.py) stand it on a machine with no Chromium, a fake apt-get, a local
CDN or a driver that does not start, while the machine running them has Chromium installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys

NAMES = ("chromium", "chromium-browser")
MISSING = (
    "no Chromium for the browser tests: install Debian's package as root "
    "(`apt-get install chromium`) or Playwright's own build "
    "(`.venv/bin/python -m playwright install chromium`)"
)
# Long enough for a slow but working link to fetch Chrome for Testing (about 170 MB).
DOWNLOAD_TIMEOUT = 300.0
# Playwright waits 30 s on a silent socket by default and tries five times: 2.5 minutes on a
# network that drops packets instead of refusing them. Ten seconds without a byte is a dead CDN.
IDLE_TIMEOUT_MS = "10000"
REASON_LENGTH = 160
# The one library Playwright's bundled Node.js links to that a minimal Debian can lack.
DRIVER_LIBRARY = ("libatomic", "libatomic1")
PROBE = """
from playwright.sync_api import sync_playwright
with sync_playwright() as playwright:
    print(playwright.chromium.executable_path)
"""


def find_chromium(playwright_build: str | None) -> str | None:
    """The Chromium the browser tests drive: Playwright's own build at `playwright_build` (its
    `chromium.executable_path`) when it is there, else the first of NAMES on PATH."""
    if playwright_build and os.access(playwright_build, os.X_OK):
        return playwright_build
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def playwright_build() -> tuple[str | None, str | None]:
    """Where the installed Playwright keeps (or would keep) its own Chromium, and None; or None
    and, in one line, why Playwright's driver does not start. Asked in a child process, whose
    output is kept: a driver that cannot load its libraries says so on stderr."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode == 0 and lines:
        return lines[-1], None
    errors = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    loader = [line for line in errors if "error while loading shared libraries" in line]
    reason = (loader or errors[-1:] or [f"exit status {result.returncode}"])[0]
    return None, reason[:REASON_LENGTH]


def _reason(output: str, marker: str, fallback: str) -> str:
    """The first line of `output` starting with `marker` (Playwright's "Error:", apt's "E:"),
    cut short: a failure is reported in one line, not as a stack trace."""
    for line in output.splitlines():
        if line.strip().startswith(marker):
            return line.strip()[:REASON_LENGTH]
    return fallback


def download(timeout: float) -> str | None:
    """Playwright's own download of its Chromium (without the headless shell, which the tests do
    not use). None when it worked, else why not, in one line."""
    env = dict(os.environ)
    env.setdefault("PLAYWRIGHT_DOWNLOAD_CONNECTION_TIMEOUT", IDLE_TIMEOUT_MS)
    command = [sys.executable, "-m", "playwright", "install", "--no-shell", "chromium"]
    # Its own session, so that a timeout stops the driver and the download process it forks.
    with subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as child:
        try:
            output, _ = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            return f"still downloading after {timeout:g} s, stopped"
    if child.returncode == 0:
        return None
    return _reason(output, "Error:", f"exit status {child.returncode}")


def apt_install(packages: list[str]) -> str | None:
    """Debian's `packages` through apt-get, as root. None when it worked, else why not."""
    apt = shutil.which("apt-get")
    if apt is None:
        return "no apt-get"
    if os.geteuid() != 0:
        return "not root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [apt, *args], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )

    install = ("install", "-y", "-qq", *packages)
    result = run(*install)
    if result.returncode != 0:
        update = run("update", "-qq")
        if update.returncode != 0:
            return "apt-get update: " + _reason(
                update.stdout + update.stderr, "E:", f"exit status {update.returncode}"
            )
        result = run(*install)
    if result.returncode != 0:
        return "apt-get install: " + _reason(
            result.stdout + result.stderr, "E:", f"exit status {result.returncode}"
        )
    return None


def version(executable: str) -> str | None:
    """What `executable --version` prints, or None when it does not start (a build missing the
    libraries it links to, a download cut short)."""
    try:
        result = subprocess.run(
            [executable, "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = result.stdout.strip().splitlines()
    return lines[-1] if result.returncode == 0 and lines else None


def say(line: str) -> None:
    print(f"chromium: {line}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.browser.chromium",
        description="Find, else fetch or install, the Chromium the browser tests drive.",
    )
    parser.add_argument(
        "--download-timeout",
        type=float,
        default=DOWNLOAD_TIMEOUT,
        metavar="SECONDS",
        help=f"stop Playwright's download after this long (default {DOWNLOAD_TIMEOUT:g})",
    )
    args = parser.parse_args(argv)

    build, driver_error = playwright_build()
    found = find_chromium(build)
    if found is None and driver_error is None:
        say("none found; trying Playwright's own download")
        failure = download(args.download_timeout)
        found = find_chromium(build)
        if found is None:
            say(f"Playwright's download did not work ({failure or 'nothing installed'})")
    elif driver_error is not None:
        say(f"Playwright's driver does not start: {driver_error}")
    library, package = DRIVER_LIBRARY
    packages = [] if found else ["chromium"]
    if driver_error is not None and library in driver_error:
        packages.append(package)
    if packages:
        failure = apt_install(packages)
        if failure not in ("no apt-get", "not root"):
            say(f"installed Debian's {' '.join(packages)}" if failure is None else failure)
        if driver_error is not None:
            build, driver_error = playwright_build()
        found = find_chromium(build)
    if driver_error is not None:
        hint = (
            f"as root, `apt-get install {package}`"
            if library in driver_error
            else "reinstall Playwright (`make clean test`)"
        )
        print(
            f"Playwright's driver does not start ({driver_error}): {hint}",
            file=sys.stderr,
        )
        return 2
    if found is None:
        print(MISSING, file=sys.stderr)
        return 2

    printed = version(found)
    if printed is None:
        print(
            f"the Chromium at {found} does not start ({found} --version); {MISSING}",
            file=sys.stderr,
        )
        return 2
    say(f"{found} ({printed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
