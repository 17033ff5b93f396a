"""Abuse limits on the public API, written as the attacks: a forged X-Forwarded-For to escape the
per-address limits.

The test client stands where a reverse proxy would: the service sees its socket address
(127.0.0.1), and X-Forwarded-For is what the proxy would have written."""

from __future__ import annotations

import pytest

from services.booking import ratelimit
from tests.booking.conftest import Demo


async def _clinic_path(demo: Demo) -> str:
    return f"/api/v1/public/clinics/{demo.clinic_id}"


# -- client addresses ---------------------------------------------------------------------------


async def test_a_forged_x_forwarded_for_does_not_escape_the_limit_behind_one_proxy(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit.LIMITS, "trusted_proxy_hops", 1)
    monkeypatch.setattr(ratelimit.LIMITS, "reads", 3)
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
    assert ratelimit.LIMITS.trusted_proxy_hops == 0  # the default
    monkeypatch.setattr(ratelimit.LIMITS, "reads", 3)
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
    monkeypatch.setattr(ratelimit.LIMITS, "trusted_proxy_hops", 2)
    monkeypatch.setattr(ratelimit.LIMITS, "reads", 2)
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
    monkeypatch.setattr(ratelimit.LIMITS, "trusted_proxy_hops", 1)
    monkeypatch.setattr(ratelimit.LIMITS, "reads", 2)
    path = await _clinic_path(demo)
    for address in ("2001:db8:1:2::1", "[2001:db8:1:2:ffff::9]:443"):
        reply = await demo.call("GET", path, headers={"X-Forwarded-For": address})
        assert reply.status == 200
    limited = await demo.call("GET", path, headers={"X-Forwarded-For": "2001:db8:1:2::abcd"})
    assert limited.status == 429
    neighbour = await demo.call("GET", path, headers={"X-Forwarded-For": "2001:db8:1:3::1"})
    assert neighbour.status == 200
