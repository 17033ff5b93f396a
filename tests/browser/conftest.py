"""Headless Chromium (Playwright's own build, or Debian's package on PATH: chromium.py finds it,
and `make test` runs it first to fetch or install one) driven by Playwright, a place for
screenshots: test-artifacts/screenshots/ (named in the README), and a plain HTTP client with a
browser's cookie jar for the tests that post forms by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.browser.chromium import MISSING, find_chromium
from tests.conftest import BookingApi

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # This machine's network is closed: background fetches would only fail, many at a time.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 360, "height": 780}
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        executable = find_chromium(playwright.chromium.executable_path)
        if executable is None:
            raise RuntimeError(MISSING)
        launched = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def browser_jar(api: BookingApi) -> aiohttp.CookieJar:
    """A cookie jar that behaves like a browser's behind the clinic's TLS proxy: unsafe=True
    because the service listens on 127.0.0.1 (cookies for IP hosts are otherwise dropped), and
    the service's plain http origin counted as secure, since the public URL is https and the
    CSRF cookie is Secure."""
    return aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[api.base])


@pytest.fixture
async def http(booking_api: BookingApi) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=browser_jar(booking_api)) as session:
        yield session
