"""Every message carries the patient's own private link, patients booked by staff included, and
staff can revoke every link and send a new one."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from services.notifier.app import create_app as create_notifier
from shared.config import Settings
from shared.links import LinkRevoked, open_patient_link
from shared.store import patients
from tests import factories
from tests.conftest import BookingApi, SmtpSink, StandIn, serve_app
from tests.notifier.conftest import eventually

MOBILE = "+447911123456"
EMAIL = "ada@example.com"
LINK = re.compile(r"https://clinic\.example\.test/s/([A-Za-z0-9_-]+)")


@pytest.fixture
async def notifier(booking_api: BookingApi, settings: Settings, db_url: str) -> AsyncIterator[None]:
    """A notifier sending to the stand-ins with no pacing, stopped at the end."""
    app = create_notifier(
        settings.with_overrides(sms_segments_per_second=0), booking_api.clock, db_url
    )
    runner, _ = await serve_app(app)
    yield
    await runner.cleanup()


async def staff_patient(api: BookingApi) -> int:
    """Ada, created by the front desk with care SMS consent, and booked by staff."""
    created = await api.call(
        "POST",
        "/api/v1/patients",
        role="front_desk",
        json={
            "first_name": "Ada",
            "last_name": "Lovelace",
            "mobile": MOBILE,
            "email": EMAIL,
            "date_of_birth": "1985-12-10",
        },
    )
    assert created.status == 201, created.body
    patient_id = int(created.body["id"])
    consent = await api.call(
        "POST",
        f"/api/v1/patients/{patient_id}/consents",
        role="front_desk",
        json={"kind": "care_sms", "granted": True, "wording_version": "phone-2026"},
    )
    assert consent.status in (200, 201), consent.body
    consultation = await api.pool.fetchval("SELECT id FROM treatment WHERE code = 'consultation'")
    booked = await api.call(
        "POST",
        "/api/v1/bookings",
        role="front_desk",
        json={
            "patient_id": patient_id,
            "treatment_id": consultation,
            "practitioner_id": 1,
            "start": "2026-03-10T10:00:00Z",
        },
    )
    assert booked.status == 201, booked.body
    return patient_id


def token_in(text: str) -> str:
    found = LINK.search(text)
    assert found, text
    return found.group(1)


async def messages(twilio: StandIn, smtp: SmtpSink, count: int) -> tuple[list[Any], list[Any]]:
    async def arrived() -> bool:
        return len(twilio.twilio.sent_to(MOBILE)) + len(smtp.recorder.emails_to(EMAIL)) >= count

    await eventually(arrived, what=f"{count} messages to Ada")
    return twilio.twilio.sent_to(MOBILE), smtp.recorder.emails_to(EMAIL)


async def test_a_staff_booked_patient_gets_their_own_link_in_every_message(
    booking_api: BookingApi,
    settings: Settings,
    twilio: StandIn,
    smtp: SmtpSink,
    notifier: None,
) -> None:
    api = booking_api
    patient_id = await staff_patient(api)
    sms, emails = await messages(twilio, smtp, 2)
    assert settings.secret_key is not None
    for text in [sms[0].body, emails[0].body]:
        link = open_patient_link(settings.secret_key, token_in(text), now=api.clock.now())
        assert link.patient_id == patient_id
    # It opens her page (not the site's home page, where she might book a second course).
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{api.base}/s/{token_in(sms[0].body)}") as page:
            assert page.status == 200
            assert "Ada" in await page.text()


async def test_staff_send_a_new_link_and_every_older_link_stops_working(
    booking_api: BookingApi,
    settings: Settings,
    twilio: StandIn,
    smtp: SmtpSink,
    notifier: None,
) -> None:
    api = booking_api
    patient_id = await staff_patient(api)
    sms, _ = await messages(twilio, smtp, 2)
    old = token_in(sms[0].body)

    assert (
        await api.call("POST", f"/api/v1/patients/{patient_id}/new-link", role="clinician")
    ).status == 403
    renewed = await api.call("POST", f"/api/v1/patients/{patient_id}/new-link", role="front_desk")
    assert renewed.status == 200, renewed.body
    assert renewed.body == {"link_version": 2, "sent_by": ["email", "sms"]}
    assert "/s/" not in str(renewed.body)  # staff never see the patient's credential
    sms, emails = await messages(twilio, smtp, 4)
    [new_sms] = [m for m in sms if "Earlier links no longer work" in m.body]
    [new_email] = [m for m in emails if "no longer work" in m.body]
    new = token_in(new_sms.body)
    assert settings.secret_key is not None
    for token in (new, token_in(new_email.body)):
        link = open_patient_link(settings.secret_key, token, now=api.clock.now(), current_version=2)
        assert link.patient_id == patient_id
    assert settings.secret_key is not None
    with pytest.raises(LinkRevoked):
        open_patient_link(settings.secret_key, old, now=api.clock.now(), current_version=2)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{api.base}/s/{old}") as refused:
            assert refused.status == 410
            assert "Ada" not in await refused.text()
        async with http.get(f"{api.base}/s/{new}") as works:
            assert works.status == 200
    audited = await api.pool.fetchrow("SELECT * FROM audit_log WHERE action = 'patient.link_renew'")
    assert audited["patient_id"] == patient_id and audited["actor_kind"] == "staff"


async def test_no_new_link_for_an_erased_patient(booking_api: BookingApi) -> None:
    api = booking_api
    patient_id = await factories.patient(
        api.pool,
        clinic_id=api.clinic_id,
        first_name="Gone",
        last_name="Patient",
        mobile=MOBILE,
        email=None,
        date_of_birth=None,
        now=api.clock.now(),
    )
    await patients.erase(api.pool, patient_id, now=api.clock.now())
    reply = await api.call("POST", f"/api/v1/patients/{patient_id}/new-link", role="admin")
    assert reply.status == 409 and reply.body["type"].endswith("patient-erased")
    assert (await api.call("POST", "/api/v1/patients/999999/new-link", role="admin")).status == 404
    assert await api.pool.fetchval("SELECT count(*) FROM notification") == 0
