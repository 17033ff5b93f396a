"""Staff tokens in the admin API: admin only, the token shown once, revocation at once (and
harmless twice), last use shown, and tokens older than the maximum age refused as expired."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from shared.config import ConfigError, load_settings
from shared.store import staff_tokens
from tests.conftest import BookingApi, Reply


def paths(reply: Reply) -> set[str]:
    return {error["path"] for error in reply.body["errors"]}


def by_name(reply: Reply) -> dict[str, dict[str, Any]]:
    assert reply.status == 200, reply.body
    return {item["name"]: item for item in reply.body["items"]}


async def me(api: BookingApi, token: str) -> Reply:
    return await api.call("GET", "/api/v1/me", headers={"Authorization": f"Bearer {token}"})


async def create(api: BookingApi, name: str, role: str = "front_desk") -> Reply:
    reply = await api.call(
        "POST", "/api/v1/tokens", role="admin", json={"name": name, "role": role}
    )
    assert reply.status == 201, reply.body
    return reply


async def audit_rows(api: BookingApi) -> list[dict[str, Any]]:
    rows = await api.pool.fetch(
        "SELECT action, entity_id, actor_name, details::text AS details FROM audit_log "
        "WHERE entity = 'staff_token' ORDER BY id"
    )
    return [dict(row) for row in rows]


async def test_only_admins_see_or_manage_tokens(booking_api: BookingApi) -> None:
    api = booking_api
    for role in ("front_desk", "clinician"):
        for method, path, body in (
            ("GET", "/api/v1/tokens", None),
            ("POST", "/api/v1/tokens", {"name": "mine now", "role": "admin"}),
            ("POST", "/api/v1/tokens/1/revoke", None),
        ):
            reply = await api.call(method, path, role=role, json=body)
            assert reply.status == 403, (role, path)
    assert (await api.call("GET", "/api/v1/tokens")).status == 401
    # Nothing was created or revoked by the refused calls.
    assert len(by_name(await api.call("GET", "/api/v1/tokens", role="admin"))) == 3
    assert (
        await api.pool.fetchval("SELECT count(*) FROM staff_token WHERE revoked_at IS NOT NULL")
        == 0
    )


async def test_the_list_shows_last_use_and_state_but_never_a_token_or_its_hash(
    booking_api: BookingApi,
) -> None:
    api = booking_api
    api.clock.advance(timedelta(minutes=7, seconds=30))
    assert (await api.call("GET", "/api/v1/me", role="front_desk")).status == 200
    reply = await api.call("GET", "/api/v1/tokens", role="admin")
    tokens = by_name(reply)
    desk, clinician = tokens["test front_desk"], tokens["test clinician"]
    assert desk["last_used_at"] == "2026-03-02T09:07:30Z"
    assert clinician["last_used_at"] is None  # never used
    assert tokens["test admin"]["last_used_at"] == "2026-03-02T09:07:30Z"  # this very call
    assert desk == {
        "id": desk["id"],
        "name": "test front_desk",
        "role": "front_desk",
        "created_at": "2026-03-02T09:00:00Z",
        "last_used_at": "2026-03-02T09:07:30Z",
        "revoked_at": None,
        "expires_at": "2027-03-02T09:00:00Z",  # the default maximum age, 365 days
        "state": "active",
    }
    raw = str(reply.body)
    hashes = await api.pool.fetch("SELECT encode(token_hash, 'hex') AS h FROM staff_token")
    for secret in api.tokens.values():
        assert secret not in raw
    assert not any(row["h"] in raw for row in hashes)


async def test_a_created_token_is_shown_once_works_and_is_audited_without_it(
    booking_api: BookingApi,
) -> None:
    api = booking_api
    reply = await create(api, "Reception iPad")
    secret = reply.body["token"]
    assert secret.startswith("rgm_")
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.body["state"] == "active" and reply.body["role"] == "front_desk"
    assert (await me(api, secret)).body["name"] == "Reception iPad"

    listed = by_name(await api.call("GET", "/api/v1/tokens", role="admin"))["Reception iPad"]
    assert "token" not in listed and listed["id"] == reply.body["id"]
    (row,) = await audit_rows(api)
    assert row["action"] == "create" and row["entity_id"] == reply.body["id"]
    assert row["actor_name"] == "test admin (admin)"
    assert "Reception iPad" in row["details"] and secret not in row["details"]
    # The token is nowhere in the database, only its hash.
    stored = await api.pool.fetchval(
        "SELECT count(*) FROM idempotent_request WHERE response::text LIKE '%' || $1 || '%'",
        secret,
    )
    assert stored == 0


async def test_create_names_each_bad_field(booking_api: BookingApi) -> None:
    reply = await booking_api.call(
        "POST", "/api/v1/tokens", role="admin", json={"name": "  ", "role": "owner"}
    )
    assert reply.status == 422
    assert paths(reply) == {"name", "role"}
    assert await booking_api.pool.fetchval("SELECT count(*) FROM staff_token") == 3


async def test_a_revoked_token_stops_at_once_and_revoking_again_changes_nothing(
    booking_api: BookingApi,
) -> None:
    api = booking_api
    created = await create(api, "Old laptop", role="clinician")
    token_id, secret = created.body["id"], created.body["token"]
    assert (await me(api, secret)).status == 200

    api.clock.advance(timedelta(minutes=5))
    first = await api.call("POST", f"/api/v1/tokens/{token_id}/revoke", role="admin")
    assert first.status == 200
    assert first.body["already_revoked"] is False and first.body["own_token"] is False
    assert first.body["token"]["state"] == "revoked"
    assert first.body["token"]["revoked_at"] == "2026-03-02T09:05:00Z"
    assert "revoked" in first.body["message"]
    refused = await me(api, secret)
    assert refused.status == 401
    assert refused.body["detail"] == "the token is unknown or revoked"

    api.clock.advance(timedelta(hours=1))
    again = await api.call("POST", f"/api/v1/tokens/{token_id}/revoke", role="admin")
    assert again.status == 200
    assert again.body["already_revoked"] is True
    assert again.body["token"]["revoked_at"] == "2026-03-02T09:05:00Z"  # the first one kept
    assert "already revoked" in again.body["message"]
    assert [row["action"] for row in await audit_rows(api)] == ["create", "revoke"]


async def test_an_admin_may_revoke_their_own_token_and_is_told_so(booking_api: BookingApi) -> None:
    api = booking_api
    own_id = (await api.call("GET", "/api/v1/me", role="admin")).body["id"]
    reply = await api.call("POST", f"/api/v1/tokens/{own_id}/revoke", role="admin")
    assert reply.status == 200
    assert reply.body["own_token"] is True
    assert "the token of this request" in reply.body["message"]
    assert (await api.call("GET", "/api/v1/tokens", role="admin")).status == 401


async def test_revoking_a_token_that_does_not_exist_is_404(booking_api: BookingApi) -> None:
    reply = await booking_api.call("POST", "/api/v1/tokens/999999/revoke", role="admin")
    assert reply.status == 404
    assert reply.body["detail"] == "no token with id 999999"


async def test_a_token_older_than_the_maximum_age_is_refused_as_expired(
    booking_api: BookingApi,
) -> None:
    api = booking_api
    api.clock.advance(timedelta(days=200))
    successor = (await create(api, "new admin", role="admin")).body["token"]
    assert (await api.call("GET", "/api/v1/me", role="front_desk")).status == 200
    used_at = "2026-09-18T09:00:00Z"

    api.clock.advance(timedelta(days=165))  # the fixture's tokens are now 365 days old
    refused = await api.call("GET", "/api/v1/me", role="front_desk")
    assert refused.status == 401
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert refused.body["type"].endswith("/token-expired")
    assert refused.body["detail"].startswith("the token expired on 2027-03-02 09:00 UTC")
    assert refused.body["expired_at"] == "2027-03-02T09:00:00Z"
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]

    tokens = by_name(
        await api.call("GET", "/api/v1/tokens", headers={"Authorization": f"Bearer {successor}"})
    )
    assert tokens["test front_desk"]["state"] == "expired"
    assert tokens["test front_desk"]["last_used_at"] == used_at  # a refused use is no use
    assert tokens["new admin"]["state"] == "active"
    assert tokens["new admin"]["expires_at"] == "2027-09-18T09:00:00Z"


async def test_a_maximum_age_of_zero_means_no_limit(booking_api: BookingApi) -> None:
    api = booking_api
    later = api.clock.now() + timedelta(days=3650)
    found = await staff_tokens.authenticate(
        api.pool, api.tokens["clinician"], now=later, age_limit=staff_tokens.max_age(0)
    )
    assert found is not None and found.role == "clinician"
    rows = await staff_tokens.list_page(api.pool)
    assert {staff_tokens.state(row, now=later, age_limit=None) for row in rows} == {"active"}


def test_the_maximum_age_setting_defaults_to_a_year_and_names_itself_when_wrong() -> None:
    assert load_settings({}).staff_token_max_age_days == 365
    assert load_settings({"REGIMEN_STAFF_TOKEN_MAX_AGE_DAYS": "0"}).staff_token_max_age_days == 0
    for wrong in ("-1", "a year", "36501", "1.5"):
        with pytest.raises(ConfigError) as caught:
            load_settings({"REGIMEN_STAFF_TOKEN_MAX_AGE_DAYS": wrong})
        assert str(caught.value) == (
            f"REGIMEN_STAFF_TOKEN_MAX_AGE_DAYS: {wrong!r} is not a whole number from 0 to 36500"
        )
