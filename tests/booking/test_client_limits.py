"""Abuse limits on the public API, written as the attacks: a forged X-Forwarded-For to escape the
per-address limits, one address sitting on every free time with holds, and a form filled with a
far-away mobile number to run up the clinic's SMS bill (SMS pumping).

The test client stands where a reverse proxy would: the service sees its socket address
(127.0.0.1), and X-Forwarded-For is what the proxy would have written."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from services.booking.domain import limits
from tests.booking.conftest import Demo, form
from tests.conftest import Reply

US_MOBILE = "+1 415 555 2671"  # a real-format San Francisco mobile, no one's in particular


def _slot(hour: int, practitioner_id: int = 1) -> list[dict[str, Any]]:
    return [{"practitioner_id": practitioner_id, "start": f"2026-03-03T{hour:02d}:00:00Z"}]


async def _clinic_path(demo: Demo) -> str:
    return f"/api/v1/public/clinics/{demo.clinic_id}"


async def _set_clinic(demo: Demo, **changes: Any) -> Reply:
    path = f"/api/v1/clinics/{demo.clinic_id}"
    current = await demo.call("GET", path, role="admin")
    return await demo.call(
        "PATCH", path, role="admin", json=changes, headers={"If-Match": current.headers["ETag"]}
    )


# -- client addresses ---------------------------------------------------------------------------


async def test_a_forged_x_forwarded_for_does_not_escape_the_limit_behind_one_proxy(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits.LIMITS, "trusted_proxy_hops", 1)
    monkeypatch.setattr(limits.LIMITS, "reads", 3)
    path = await _clinic_path(demo)
    # The client 203.0.113.9 sends a new made-up address each time; the proxy appends the
    # address it really came from.
    for n in range(3):
        forged = {"X-Forwarded-For": f"1.2.3.{n}, 203.0.113.9"}
        assert (await demo.call("GET", path, headers=forged)).status == 200
    limited = await demo.call("GET", path, headers={"X-Forwarded-For": "1.2.3.4, 203.0.113.9"})
    assert limited.status == 429, limited.body
    # Sending the forgery in a header of its own changes nothing: the headers are one list.
    async with demo.api.http.get(
        demo.api.base + path,
        headers=[("X-Forwarded-For", "1.2.3.5"), ("X-Forwarded-For", "203.0.113.9")],
    ) as response:
        assert response.status == 429
    # Another patient behind the same proxy is counted apart: the limit is not the proxy's.
    other = await demo.call("GET", path, headers={"X-Forwarded-For": "1.2.3.4, 203.0.113.10"})
    assert other.status == 200
    # The same client over IPv6 mapped to IPv4 is still the same client.
    mapped = await demo.call("GET", path, headers={"X-Forwarded-For": "::ffff:203.0.113.9"})
    assert mapped.status == 429


async def test_without_trusted_proxies_x_forwarded_for_is_ignored(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert limits.LIMITS.trusted_proxy_hops == 0  # the default
    monkeypatch.setattr(limits.LIMITS, "reads", 3)
    path = await _clinic_path(demo)
    for n in range(3):
        forged = {"X-Forwarded-For": f"198.51.100.{n}"}
        assert (await demo.call("GET", path, headers=forged)).status == 200
    limited = await demo.call("GET", path, headers={"X-Forwarded-For": "198.51.100.77"})
    assert limited.status == 429


async def test_a_request_that_skipped_a_proxy_counts_as_the_connecting_address(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two proxies are configured; a request with only one entry did not come through both, so
    # its entry could be the client's own: the socket's address is counted instead.
    monkeypatch.setattr(limits.LIMITS, "trusted_proxy_hops", 2)
    monkeypatch.setattr(limits.LIMITS, "reads", 2)
    path = await _clinic_path(demo)
    for forged in ("192.0.2.1", "192.0.2.2"):
        reply = await demo.call("GET", path, headers={"X-Forwarded-For": forged})
        assert reply.status == 200
    assert (await demo.call("GET", path)).status == 429  # no header: the same socket address
    # Through both proxies: the address the outer one saw (second from the right) counts.
    through = {"X-Forwarded-For": "6.6.6.6, 192.0.2.50, 10.0.0.2"}
    assert (await demo.call("GET", path, headers=through)).status == 200


async def test_ipv6_clients_are_counted_per_64_block(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One subscriber gets a /64: stepping through its addresses must not buy fresh limits.
    monkeypatch.setattr(limits.LIMITS, "trusted_proxy_hops", 1)
    monkeypatch.setattr(limits.LIMITS, "reads", 2)
    path = await _clinic_path(demo)
    for address in ("2001:db8:1:2::1", "[2001:db8:1:2:ffff::9]:443"):
        reply = await demo.call("GET", path, headers={"X-Forwarded-For": address})
        assert reply.status == 200
    limited = await demo.call("GET", path, headers={"X-Forwarded-For": "2001:db8:1:2::abcd"})
    assert limited.status == 429
    neighbour = await demo.call("GET", path, headers={"X-Forwarded-For": "2001:db8:1:3::1"})
    assert neighbour.status == 200


# -- holds per address --------------------------------------------------------------------------


async def test_a_fourth_hold_from_one_address_is_refused_until_one_ends(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert limits.LIMITS.holds_per_address == 3  # the default
    holds = [await demo.hold(demo.consultation, _slot(hour)) for hour in (10, 11, 12)]
    assert [h.status for h in holds] == [201, 201, 201]

    fourth = await demo.hold(demo.consultation, _slot(14))
    assert fourth.status == 429, fourth.body
    assert fourth.body["type"].endswith("/too-many-holds")
    assert "3 holds" in fourth.body["detail"]
    # Until the first hold runs out (the clinic's 10 minutes).
    assert fourth.headers["Retry-After"] == "600" and fourth.body["retry_after"] == 600
    assert await demo.pool.fetchval("SELECT count(*) FROM booking_hold") == 3
    # Retrying with an Idempotency-Key is refused the same way, and nothing is remembered.
    keyed = await demo.hold(demo.consultation, _slot(14), headers={"Idempotency-Key": "k-14"})
    assert keyed.status == 429

    # What is stored is a keyed hash, never the address.
    stored = await demo.pool.fetch("SELECT client_hash FROM booking_hold ORDER BY id")
    hashes = {bytes(r["client_hash"]) for r in stored}
    assert len(hashes) == 1 and len(next(iter(hashes))) == 32
    assert b"127.0.0.1" not in next(iter(hashes))

    # Another patient (another address, behind a proxy) is not held back by this one.
    monkeypatch.setattr(limits.LIMITS, "trusted_proxy_hops", 1)
    elsewhere = await demo.hold(
        demo.consultation, _slot(15), headers={"X-Forwarded-For": "203.0.113.20"}
    )
    assert elsewhere.status == 201, elsewhere.body
    monkeypatch.setattr(limits.LIMITS, "trusted_proxy_hops", 0)

    # Giving a hold back makes room, and its hash goes with it.
    released = await demo.call(
        "DELETE", "/api/v1/public/hold", headers={"Hold-Token": holds[0].body["token"]}
    )
    assert released.status == 204
    again = await demo.hold(demo.consultation, _slot(14), headers={"Idempotency-Key": "k-14"})
    assert again.status == 201, again.body
    assert (
        await demo.pool.fetchval(
            "SELECT client_hash FROM booking_hold WHERE id = $1", holds[0].body["hold_id"]
        )
        is None
    )
    # So does booking one.
    assert (await demo.book(holds[1].body["token"])).status == 201
    assert (await demo.hold(demo.consultation, _slot(16))).status == 201
    assert (await demo.hold(demo.consultation, _slot(17))).status == 429

    # Once the holds run out, the address may hold again.
    demo.api.clock.advance(timedelta(minutes=10, seconds=1))
    assert (await demo.hold(demo.consultation, _slot(17))).status == 201


async def test_concurrent_holds_from_one_address_cannot_squeeze_past_the_cap(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    monkeypatch.setattr(limits.LIMITS, "writes", 1000)
    replies = await asyncio.gather(
        *(
            demo.hold(demo.consultation, _slot(hour, pid))
            for hour in (10, 11, 14, 15)
            for pid in (1, 2)
        )
    )
    assert sorted(r.status for r in replies) == [201, 201, 201, 429, 429, 429, 429, 429]
    assert await demo.pool.fetchval("SELECT count(*) FROM booking_hold") == 3


async def test_the_hold_sweep_forgets_the_address_of_expired_holds(demo: Demo) -> None:
    from services.scheduler.holds import expire_holds
    from shared.clock import FrozenClock

    assert (await demo.hold(demo.consultation, _slot(10))).status == 201
    later = FrozenClock(demo.api.clock.now() + timedelta(minutes=11))
    await expire_holds(demo.pool, later)
    assert await demo.pool.fetchval("SELECT count(client_hash) FROM booking_hold") == 0


# -- SMS countries ------------------------------------------------------------------------------


async def test_a_us_mobile_at_a_uk_clinic_is_refused_until_the_clinic_texts_the_us(
    demo: Demo,
) -> None:
    # The clinic on its default: it texts its own region only.
    reset = await _set_clinic(demo, sms_countries=None)
    assert reset.status == 200 and reset.body["sms_countries"] == ["GB"]
    public = await demo.call("GET", await _clinic_path(demo))
    assert public.body["sms_countries"] == ["GB"]  # a form can say so before anyone types
    hold = await demo.hold(demo.consultation, _slot(10))
    token = hold.body["token"]

    refused = await demo.book(token, form(mobile=US_MOBILE, email="pump@example.com"))
    assert refused.status == 422, refused.body
    [error] = refused.body["errors"]
    assert error["path"] == "patient.mobile"
    assert "United Kingdom (+44)" in error["message"] and "United States" in error["message"]
    assert await demo.pool.fetchval("SELECT count(*) FROM patient") == 0
    state = await demo.call("GET", "/api/v1/public/hold", headers={"Hold-Token": token})
    assert state.body["state"] == "active"  # nothing booked, the hold still there
    # Nothing was queued for the far-away number either.
    assert await demo.pool.fetchval("SELECT count(*) FROM notification") == 0

    added = await _set_clinic(demo, sms_countries=["GB", "US"])
    assert added.status == 200 and added.body["sms_countries"] == ["GB", "US"]
    booked = await demo.book(token, form(mobile=US_MOBILE, email="ok@example.com"))
    assert booked.status == 201, booked.body
    assert await demo.pool.fetchval("SELECT mobile FROM patient") == "+14155552671"


async def test_the_clinics_sms_countries_are_checked_and_follow_its_region_by_default(
    demo: Demo,
) -> None:
    for bad, path in (
        (["XX"], "sms_countries.0"),
        (["GB", "gb"], "sms_countries.1"),
        (["GB", "GB"], "sms_countries"),
        ([], "sms_countries"),
        ("GB", "sms_countries"),
    ):
        reply = await _set_clinic(demo, sms_countries=bad)
        assert reply.status == 422, (bad, reply.body)
        assert reply.body["errors"][0]["path"] == path, (bad, reply.body)
    # The demo clinic texts the UK and the Crown Dependencies (they share +44).
    shown = await demo.call("GET", f"/api/v1/clinics/{demo.clinic_id}", role="front_desk")
    assert shown.body["sms_countries"] == ["GB", "GG", "JE", "IM"]
    assert (await _set_clinic(demo, sms_countries=None)).body["sms_countries"] == ["GB"]
    # Left to the default, the list is the region's, whatever the region becomes.
    moved = await _set_clinic(demo, region="IE")
    assert moved.status == 200 and moved.body["sms_countries"] == ["IE"]
    audited = await demo.pool.fetchval(
        "SELECT details FROM audit_log WHERE entity = 'clinic' ORDER BY id DESC LIMIT 1"
    )
    assert "sms_countries" in str(audited)
    created = await demo.call(
        "POST",
        "/api/v1/clinics",
        role="admin",
        json={
            "name": "Dublin",
            "time_zone": "Europe/Dublin",
            "phone": "+35312345678",
            "region": "IE",
        },
    )
    assert created.status == 201 and created.body["sms_countries"] == ["IE"]


async def test_staff_cannot_register_a_mobile_from_a_country_the_clinic_does_not_text(
    demo: Demo,
) -> None:
    await _set_clinic(demo, sms_countries=None)
    body = {"first_name": "Pat", "last_name": "Pumped", "mobile": US_MOBILE}
    refused = await demo.call("POST", "/api/v1/patients", role="front_desk", json=body)
    assert refused.status == 422, refused.body
    [error] = refused.body["errors"]
    assert error["path"] == "mobile" and "sms_countries" in error["message"]
    assert await demo.pool.fetchval("SELECT count(*) FROM patient") == 0

    created = await demo.call(
        "POST", "/api/v1/patients", role="front_desk", json={**body, "mobile": "07400 123456"}
    )
    assert created.status == 201, created.body
    path = f"/api/v1/patients/{created.body['id']}"
    changed = await demo.call(
        "PATCH",
        path,
        role="front_desk",
        json={"mobile": US_MOBILE},
        headers={"If-Match": created.headers["ETag"]},
    )
    assert changed.status == 422 and changed.body["errors"][0]["path"] == "mobile"
    assert await demo.pool.fetchval("SELECT mobile FROM patient") == "+447400123456"

    await _set_clinic(demo, sms_countries=["GB", "US"])
    again = await demo.call(
        "PATCH",
        path,
        role="front_desk",
        json={"mobile": US_MOBILE},
        headers={"If-Match": created.headers["ETag"]},
    )
    assert again.status == 200, again.body
    assert again.body["mobile"] == "+14155552671"
