"""The booking form's screening answers become real answers (screening_answer rows), and the
public JSON API's too, for a patient the booking created; the patient's record keeps them as
before."""

from __future__ import annotations

import aiohttp

from tests.booking.conftest import CONSENTS, form
from tests.browser.test_booking_http import VALID, held_details_page, hidden
from tests.conftest import BookingApi


async def _answers(api: BookingApi) -> dict[str, tuple[bool, str, str]]:
    rows = await api.pool.fetch(
        "SELECT question_code, answer, details, source, appointment_id FROM screening_answer"
    )
    booked = await api.pool.fetchval("SELECT min(id) FROM appointment WHERE status = 'booked'")
    assert {r["appointment_id"] for r in rows} == {booked}  # given for the session booked
    return {r["question_code"]: (r["answer"], r["details"], r["source"]) for r in rows}


async def test_the_forms_answers_are_stored_as_yes_no_answers(
    booking_api: BookingApi, http: aiohttp.ClientSession
) -> None:
    api = booking_api
    page = await held_details_page(api, http)
    data = {
        **VALID,
        "allergies": "lidocaine",
        "pregnant": "no",
        "scalp": "yes",
        "keloid": "no",
        "hold": hidden(page, "hold"),
        "csrf_token": hidden(page, "csrf_token"),
    }
    async with http.post(api.base + "/book/confirm", data=data, allow_redirects=False) as reply:
        assert reply.status == 303, await reply.text()
    assert await _answers(api) == {
        "allergy": (True, "lidocaine", "public_form"),
        "pregnant_or_breastfeeding": (False, "", "public_form"),
        "scalp_infection_or_fever": (True, "", "public_form"),
        "keloid_history": (False, "", "public_form"),
    }
    # The record's own answers are still there, as before.
    screening = await api.pool.fetchval("SELECT screening FROM patient")
    assert screening["scalp_infection_or_fever"] is True


async def test_the_public_apis_answers_by_question_code_are_stored_too(
    booking_api: BookingApi,
) -> None:
    api = booking_api
    consultation = await api.pool.fetchval("SELECT id FROM treatment WHERE code = 'consultation'")
    hold = await api.call(
        "POST",
        "/api/v1/public/holds",
        json={
            "treatment_id": consultation,
            "sessions": [{"practitioner_id": 1, "start": "2026-03-03T10:00:00Z"}],
        },
    )
    assert hold.status == 201, hold.body
    patient = form(
        allergies="none",
        screening={"isotretinoin": True, "bleeding_disorder": "no", "own_key": "kept in JSON"},
    )
    booked = await api.call(
        "POST",
        "/api/v1/public/bookings",
        json={"hold_token": hold.body["token"], "patient": patient, "consents": CONSENTS},
    )
    assert booked.status == 201, booked.body
    assert await _answers(api) == {
        "allergy": (False, "", "public_api"),
        "isotretinoin": (True, "", "public_api"),
        "bleeding_disorder": (False, "", "public_api"),
    }
