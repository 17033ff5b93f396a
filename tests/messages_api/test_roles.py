"""Who may do what: every endpoint needs a token; clinicians read but neither resend nor
cancel; the OpenAPI document declares every answer."""

from __future__ import annotations

import pytest

from tests.messages_api.conftest import Outbox

WHY = {"reason": "r"}


def endpoints(outbox: Outbox, message: int) -> list[tuple[str, str, dict[str, str] | None]]:
    return [
        ("GET", f"/api/v1/patients/{outbox.patient_id}/messages", None),
        ("GET", f"/api/v1/appointments/{outbox.appointment_id}/messages", None),
        ("GET", f"/api/v1/messages/{message}", None),
        ("POST", f"/api/v1/messages/{message}/resend", WHY),
        ("POST", f"/api/v1/messages/{message}/cancel", WHY),
    ]


async def test_every_endpoint_needs_a_valid_token(outbox: Outbox) -> None:
    message = await outbox.add()
    for method, path, body in endpoints(outbox, message):
        missing = await outbox.call(method, path, role=None, json=body)
        assert missing.status == 401, path
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = await outbox.call(
            method, path, role=None, json=body, headers={"Authorization": "Bearer rgm_nope"}
        )
        assert wrong.status == 401, path
    assert (await outbox.row(message))["status"] == "scheduled"
    assert await outbox.audit("messages.read") == []


async def test_clinicians_read_but_may_not_resend_or_cancel(outbox: Outbox) -> None:
    message = await outbox.add()
    for method, path, body in endpoints(outbox, message):
        reply = await outbox.call(method, path, role="clinician", json=body)
        expected = 403 if method == "POST" else 200
        assert reply.status == expected, (path, reply.body)
    assert (await outbox.row(message))["status"] == "scheduled"
    assert await outbox.pool.fetchval("SELECT count(*) FROM notification") == 1


@pytest.mark.parametrize("role", ["admin", "front_desk"])
async def test_desk_roles_may_do_everything(outbox: Outbox, role: str) -> None:
    message = await outbox.add()
    settled = await outbox.add(status="sent")
    for method, path, body in endpoints(outbox, message):
        if path.endswith("/resend"):
            path = path.replace(f"/{message}/", f"/{settled}/")
        reply = await outbox.call(method, path, role=role, json=body)
        assert reply.status in (200, 201), (path, reply.body)


async def test_the_openapi_document_declares_every_answer(outbox: Outbox) -> None:
    reply = await outbox.call("GET", "/api/openapi.json", role=None)
    paths = reply.body["paths"]
    expected = {
        # 400: any request may be malformed HTTP the server refuses before Regimen reads it.
        ("/api/v1/patients/{patient_id}/messages", "get"): {
            "200",
            "400",
            "401",
            "403",
            "404",
            "422",
        },
        ("/api/v1/appointments/{appointment_id}/messages", "get"): {
            "200",
            "400",
            "401",
            "403",
            "404",
            "422",
        },
        ("/api/v1/messages/{notification_id}", "get"): {"200", "400", "401", "403", "404"},
        ("/api/v1/messages/{notification_id}/resend", "post"): {
            "201",
            "400",
            "401",
            "403",
            "404",
            "409",
            "415",
            "422",
        },
        ("/api/v1/messages/{notification_id}/cancel", "post"): {
            "200",
            "400",
            "401",
            "403",
            "404",
            "409",
            "415",
            "422",
        },
    }
    for (path, method), statuses in expected.items():
        assert set(paths[path][method]["responses"]) == statuses, path
    resend_headers = {
        p["name"] for p in paths["/api/v1/messages/{notification_id}/resend"]["post"]["parameters"]
    }
    assert "Idempotency-Key" in resend_headers
