"""CSRF protection for the patient pages: a random value in a SameSite cookie, and in each form
an HMAC of it under the secret key. A page on another site can neither read the cookie nor
compute the form value, so its forged POST fails."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from aiohttp import web

from shared.web import SETTINGS

COOKIE = "regimen_csrf"
FIELD = "csrf_token"


def _expected(secret: str, cookie_value: str) -> str:
    key = hmac.new(secret.encode(), b"regimen:csrf", hashlib.sha256).digest()
    return hmac.new(key, cookie_value.encode(), hashlib.sha256).hexdigest()


def token_for(request: web.Request, secret: str) -> tuple[str, str | None]:
    """(token, new cookie value or None) for pages rendered before the response exists."""
    value = request.cookies.get(COOKIE, "")
    if len(value) == 43:
        return _expected(secret, value), None
    value = secrets.token_urlsafe(32)
    return _expected(secret, value), value


def set_cookie(request: web.Request, response: web.StreamResponse, value: str | None) -> None:
    if value is not None:
        response.set_cookie(
            COOKIE, value, httponly=True, samesite="Lax", secure=_secure(request), path="/"
        )


def _secure(request: web.Request) -> bool:
    # Behind a proxy that ends TLS the request itself is plain http; the public URL says whether
    # patients reach us over https, and then the cookie must never travel without it.
    return request.secure or request.app[SETTINGS].public_url.startswith("https://")


def session_key(request: web.Request, secret: str, purpose: str) -> bytes | None:
    """The browser session, as a keyed hash of its CSRF cookie (random, made on the first page,
    kept while the browser runs) for one `purpose`: what a hold, or a link handed over after a
    contact change, remembers to know a repeated submit from the same browser. The cookie itself
    is never stored, and the hash is useless without the secret key; None without a cookie (a
    POST that got past `valid` always has one)."""
    value = request.cookies.get(COOKIE, "")
    if len(value) != 43:
        return None
    return hmac.new(
        secret.encode(), f"regimen-session:{purpose}:{value}".encode(), hashlib.sha256
    ).digest()


def valid(request: web.Request, form_value: str | None, secret: str) -> bool:
    value = request.cookies.get(COOKIE, "")
    if not value or not form_value:
        return False
    return hmac.compare_digest(_expected(secret, value), form_value)
