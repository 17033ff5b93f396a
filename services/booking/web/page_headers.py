"""The security headers of every HTML page the booking service serves (the booking form, the
self-service pages behind a patient's link, error pages, the API docs) and of their redirects.

One `on_response_prepare` hook adds them, so a page cannot forget them: no other site may frame
a page (clickjacking a "cancel session" button), the browser runs only our own scripts and sends
forms only to us, and no address (which may hold a patient's link token) leaves in a Referer.
Headers a page set itself are kept.
"""

from __future__ import annotations

from aiohttp import web

PAGE_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _is_page(response: web.StreamResponse) -> bool:
    return response.content_type == "text/html" or 300 <= response.status < 400


async def add_page_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if _is_page(response):
        for name, value in PAGE_SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)


def install_page_security_headers(app: web.Application) -> None:
    app.on_response_prepare.append(add_page_security_headers)
