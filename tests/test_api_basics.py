"""The API layer itself: the generated OpenAPI document, the docs page, tokens."""

from __future__ import annotations

import asyncio

from openapi_spec_validator import validate

from tests.conftest import BookingApi


async def test_openapi_document_is_valid_3_1(booking_api: BookingApi) -> None:
    reply = await booking_api.call("GET", "/api/openapi.json")
    assert reply.status == 200
    assert reply.body["openapi"] == "3.1.0"
    validate(reply.body)
    assert "/api/v1/me" in reply.body["paths"]


async def test_docs_page_lists_every_operation(booking_api: BookingApi) -> None:
    document = (await booking_api.call("GET", "/api/openapi.json")).body
    page = await booking_api.call("GET", "/api/docs")
    assert page.status == 200
    for path in document["paths"]:
        assert path in page.body


async def test_me_needs_a_token(booking_api: BookingApi) -> None:
    assert (await booking_api.call("GET", "/api/v1/me")).status == 401
    reply = await booking_api.call("GET", "/api/v1/me", role="clinician")
    assert reply.status == 200 and reply.body["role"] == "clinician"


async def test_a_token_that_is_not_text_is_refused_not_a_server_error(
    booking_api: BookingApi,
) -> None:
    # Found by schemathesis (no-token run): raw bytes in the Authorization header reached the
    # token hash as lone surrogates and answered 500 on every staff endpoint.
    port = int(booking_api.base.rsplit(":", 1)[1])
    for header in (b"Bearer \xff\xfe", b"Bearer \xed\xa0\x80", b"Bearer caf\xc3\xa9"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /api/v1/me HTTP/1.1\r\nHost: regimen\r\nAuthorization: "
            + header
            + b"\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
        assert answer.startswith(b"HTTP/1.1 401 "), (header, answer[:200])
