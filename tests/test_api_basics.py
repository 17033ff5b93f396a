"""The API layer itself: the generated OpenAPI document, the docs page, tokens."""

from __future__ import annotations

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
