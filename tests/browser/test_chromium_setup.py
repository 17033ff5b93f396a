"""`make test` on a machine without Chromium: what `python -m tests.browser.chromium` does before
any test runs. Each test runs the real script, with the real Playwright installer, on a machine
made to look empty: PATH is a folder of the test's own (a fake apt-get that records its
arguments, sometimes a fake chromium), PLAYWRIGHT_BROWSERS_PATH an empty folder, and
PLAYWRIGHT_DOWNLOAD_HOST a local stand-in for Playwright's CDN that serves a build, answers 404,
or accepts and never answers, and PLAYWRIGHT_NODEJS_PATH, in one test, a Node.js that cannot load
libatomic.so.1 (as on a minimal Debian) until apt-get has installed libatomic1. The machine's own
Chromium is never touched."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import playwright
import psutil
import pytest

from tests.browser.chromium import MISSING
from tests.processes import REPO_ROOT

pytestmark = pytest.mark.slow
FAKE_VERSION = "Chromium 1.0 (fake)"
CHROMIUM_SCRIPT = f"#!/bin/sh\necho '{FAKE_VERSION}'\n"


@dataclass
class Cdn:
    """A stand-in for Playwright's download host. `mode` is "serve" (a zip holding `payload`
    at every path Playwright asks for), "missing" (404) or "silent" (never answers)."""

    url: str
    mode: str = "missing"
    payload: bytes = b""
    requests: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def cdn() -> Iterator[Cdn]:
    state = Cdn(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            if state.mode == "silent":
                state.release.wait(60)
                return
            if state.mode == "serve":
                self.send_response(200)
                self.send_header("Content-Length", str(len(state.payload)))
                self.end_headers()
                self.wfile.write(state.payload)
                return
            self.send_error(404)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


@dataclass
class Machine:
    root: Path
    bin: Path
    browsers: Path
    apt_log: Path
    env: dict[str, str]

    def apt_calls(self) -> list[dict[str, object]]:
        if not self.apt_log.exists():
            return []
        return [json.loads(line) for line in self.apt_log.read_text().splitlines()]

    def add_chromium(self) -> Path:
        chromium = self.bin / "chromium"
        chromium.write_text(CHROMIUM_SCRIPT)
        chromium.chmod(0o755)
        return chromium

    def add_apt_get(self) -> None:
        """A fake apt-get like a fresh Debian image's: `install` fails for want of package lists
        until `update` has run, then puts a chromium on PATH (and leaves a mark for libatomic1).
        Every call is recorded."""
        apt = self.bin / "apt-get"
        apt.write_text(
            f"#!{sys.executable}\n"
            "import json, os, sys\n"
            "from pathlib import Path\n"
            f"log, bin, lists = Path({str(self.apt_log)!r}), Path({str(self.bin)!r}), "
            f"Path({str(self.root / 'lists')!r})\n"
            "with log.open('a') as f:\n"
            "    f.write(json.dumps({'args': sys.argv[1:], "
            "'frontend': os.environ.get('DEBIAN_FRONTEND')}) + '\\n')\n"
            "if sys.argv[1] == 'update':\n"
            "    lists.touch()\n"
            "    sys.exit(0)\n"
            "if not lists.exists():\n"
            "    print('E: Unable to locate package chromium', file=sys.stderr)\n"
            "    sys.exit(100)\n"
            "if 'chromium' in sys.argv:\n"
            "    (bin / 'chromium').write_text(" + repr(CHROMIUM_SCRIPT) + ")\n"
            "    (bin / 'chromium').chmod(0o755)\n"
            "if 'libatomic1' in sys.argv:\n"
            f"    Path({str(self.root / 'libatomic1')!r}).touch()\n"
        )
        apt.chmod(0o755)

    def break_driver(self) -> None:
        """Playwright's Node.js as on a minimal Debian: it cannot start until libatomic1 is
        installed (the fake apt-get's mark), then it is the real one."""
        real = Path(playwright.__file__).parent / "driver" / "node"
        node = self.root / "node"
        node.write_text(
            "#!/bin/sh\n"
            f'[ -e {self.root / "libatomic1"} ] && exec {real} "$@"\n'
            f"echo '{node}: error while loading shared libraries: libatomic.so.1: "
            "cannot open shared object file: No such file or directory' >&2\n"
            "exit 127\n"
        )
        node.chmod(0o755)
        self.env["PLAYWRIGHT_NODEJS_PATH"] = str(node)

    def playwright_build(self) -> Path:
        """Where Playwright, in this machine's environment, would put its Chromium."""
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "from tests.browser.chromium import playwright_build as p; print(p()[0])",
            ],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return Path(result.stdout.strip())

    def ensure(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tests.browser.chromium", *args],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture
def machine(tmp_path: Path, cdn: Cdn) -> Machine:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    browsers = tmp_path / "ms-playwright"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYWRIGHT_")}
    env.update(
        PATH=str(bin_dir),
        HOME=str(tmp_path),
        PLAYWRIGHT_BROWSERS_PATH=str(browsers),
        PLAYWRIGHT_DOWNLOAD_HOST=cdn.url,
    )
    return Machine(tmp_path, bin_dir, browsers, tmp_path / "apt.log", env)


def zip_holding(*executables: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in executables:
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o755 << 16
            archive.writestr(info, CHROMIUM_SCRIPT)
    return buffer.getvalue()


def downloaders(browsers: Path) -> list[psutil.Process]:
    """Processes still running with this machine's browser folder in their environment."""
    left = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("PLAYWRIGHT_BROWSERS_PATH") == str(browsers):
                left.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return left


def test_a_chromium_already_on_path_is_used_without_downloading_or_installing(
    machine: Machine, cdn: Cdn
) -> None:
    machine.add_apt_get()
    chromium = machine.add_chromium()

    result = machine.ensure()

    assert result.returncode == 0, result.stderr
    assert f"{chromium} ({FAKE_VERSION})" in result.stdout
    assert cdn.requests == []
    assert machine.apt_calls() == []


def test_without_chromium_playwrights_own_build_is_fetched_when_its_cdn_answers(
    machine: Machine, cdn: Cdn
) -> None:
    machine.add_apt_get()
    build = machine.playwright_build()
    browser_dir = next(p for p in build.parents if p.parent == machine.browsers)
    cdn.mode = "serve"
    # One archive for every file Playwright fetches (its Chromium, and ffmpeg beside it).
    cdn.payload = zip_holding(str(build.relative_to(browser_dir)), "ffmpeg-linux")

    result = machine.ensure()

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{build} ({FAKE_VERSION})" in result.stdout
    assert any("chrome" in path for path in cdn.requests)
    assert machine.apt_calls() == [], "apt-get is not needed once Playwright's build is there"
    fetched = len(cdn.requests)
    again = machine.ensure()
    assert again.returncode == 0 and f"{build} ({FAKE_VERSION})" in again.stdout
    assert len(cdn.requests) == fetched, "a second run finds the build and downloads nothing"


@pytest.mark.skipif(os.geteuid() != 0, reason="apt-get installs only as root")
def test_without_a_download_root_installs_debians_chromium_updating_missing_package_lists(
    machine: Machine, cdn: Cdn
) -> None:
    machine.add_apt_get()

    result = machine.ensure()

    assert result.returncode == 0, result.stdout + result.stderr
    assert cdn.requests, "Playwright's download is tried first"
    install = ["install", "-y", "-qq", "chromium"]
    assert machine.apt_calls() == [
        {"args": install, "frontend": "noninteractive"},
        {"args": ["update", "-qq"], "frontend": "noninteractive"},
        {"args": install, "frontend": "noninteractive"},
    ]
    assert f"{machine.bin / 'chromium'} ({FAKE_VERSION})" in result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="apt-get installs only as root")
def test_a_cdn_that_never_answers_costs_only_the_download_timeout(
    machine: Machine, cdn: Cdn
) -> None:
    machine.add_apt_get()
    cdn.mode = "silent"

    started = time.monotonic()
    result = machine.ensure("--download-timeout", "3")
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stdout + result.stderr
    assert "still downloading after 3 s, stopped" in result.stdout
    # Left to itself, Playwright would wait 10 s on each of its five tries.
    assert elapsed < 25, f"took {elapsed:.1f} s"
    assert machine.apt_calls(), "apt-get came next"
    assert downloaders(machine.browsers) == [], "the stopped download left processes running"


def test_with_no_chromium_and_nothing_to_install_it_with_it_stops_with_one_line(
    machine: Machine, cdn: Cdn
) -> None:
    result = machine.ensure()

    assert result.returncode == 2
    assert result.stderr.splitlines() == [MISSING]
    assert cdn.requests, "Playwright's download was tried first"
    assert "Playwright's download did not work" in result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="apt-get installs only as root")
def test_a_driver_missing_libatomic_gets_it_with_chromium_instead_of_a_download_that_cannot_run(
    machine: Machine, cdn: Cdn
) -> None:
    machine.add_apt_get()
    machine.break_driver()

    result = machine.ensure()

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Playwright's driver does not start: " in result.stdout
    assert "libatomic.so.1" in result.stdout
    assert cdn.requests == [], "no download is tried with a driver that cannot start"
    assert machine.apt_calls()[-1] == {
        "args": ["install", "-y", "-qq", "chromium", "libatomic1"],
        "frontend": "noninteractive",
    }
    assert f"{machine.bin / 'chromium'} ({FAKE_VERSION})" in result.stdout


def test_a_driver_that_cannot_start_and_no_apt_get_stop_with_one_line_naming_the_library(
    machine: Machine, cdn: Cdn
) -> None:
    machine.add_chromium()
    machine.break_driver()

    result = machine.ensure()

    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("Playwright's driver does not start (")
    assert "libatomic.so.1" in line and line.endswith("as root, `apt-get install libatomic1`")
