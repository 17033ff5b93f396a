"""One API style, seen from outside: every list pages the same way and has the same shape, every
create that can be read back says where, instants are ISO 8601 everywhere, and a validation
error names the request's own field.

The lists are found from the OpenAPI document (any answer with an `items` array), so a list added
later is checked too: it needs an entry in LISTS saying how to give it two items."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

import services.booking.api as api_package
from services.booking.api.docs import openapi_document
from shared.db.transactions import in_transaction
from shared.domain import alerts
from tests import factories
from tests.booking.conftest import CONSENTS, form
from tests.conftest import BookingApi, Reply
from tests.messages_api.conftest import Outbox
from tests.queues.conftest import Queues

for _module in pkgutil.iter_modules(api_package.__path__):
    importlib.import_module(f"{api_package.__name__}.{_module.name}")
DOCUMENT = openapi_document()
SCHEMAS: dict[str, Any] = DOCUMENT["components"]["schemas"]

SLOT = "2026-03-03T10:00:00Z"  # a Tuesday 10:00 in London, when both demo practitioners work
LATER = "2026-03-04T10:00:00Z"


def _refs(schema: dict[str, Any]) -> list[str]:
    """The component names a response schema points at (one, or one per role's view)."""
    choices = schema.get("anyOf", [schema])
    return [c["$ref"].rsplit("/", 1)[1] for c in choices if "$ref" in c]


def _success(operation: dict[str, Any]) -> dict[str, Any] | None:
    for code, response in operation["responses"].items():
        if code.startswith("2") and "application/json" in response.get("content", {}):
            return response["content"]["application/json"]["schema"]
    return None


def _is_list(name: str) -> bool:
    return SCHEMAS[name].get("properties", {}).get("items", {}).get("type") == "array"


def _list_operations() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path, methods in DOCUMENT["paths"].items():
        for method, operation in methods.items():
            schema = _success(operation)
            if method == "get" and schema is not None and any(map(_is_list, _refs(schema))):
                found.append((path, operation))
    return found


LIST_OPERATIONS = _list_operations()
LIST_PATHS = [path for path, _ in LIST_OPERATIONS]


def _role(operation: dict[str, Any]) -> str | None:
    """admin may call every staff endpoint; public ones take no token."""
    return "admin" if operation.get("x-roles") else None


# -- the shape -------------------------------------------------------------------------------------


def test_the_document_shows_one_page_shape_for_every_list() -> None:
    assert len(LIST_OPERATIONS) >= 15, LIST_PATHS  # the lists of today; more may come
    shapes = set()
    for path, operation in LIST_OPERATIONS:
        schema = _success(operation)
        assert schema is not None
        for name in _refs(schema):
            page = SCHEMAS[name]
            # A clean name (e.g. PatientSummaryPage), not pydantic's Page_PatientSummary_.
            assert name.endswith("Page") and name.isalnum() and page["title"] == name, path
            assert set(page["properties"]) == {"items", "next_cursor"}, (path, name)
            assert set(page["required"]) == {"items", "next_cursor"}, (path, name)
            shapes.add(json.dumps(page["properties"]["next_cursor"], sort_keys=True))
            parameters = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            assert {"limit", "cursor"} <= parameters, path
    assert len(shapes) == 1  # the same cursor field everywhere


def test_no_answer_is_a_bare_array() -> None:
    """A bare array cannot grow a cursor later without breaking its clients."""
    for path, methods in DOCUMENT["paths"].items():
        for method, operation in methods.items():
            schema = _success(operation)
            assert schema is None or schema.get("type") != "array", (method, path)


# -- unknown parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "operation"), LIST_OPERATIONS, ids=LIST_PATHS)
async def test_a_typo_in_a_list_parameter_is_a_422_naming_it(
    booking_api: BookingApi, path: str, operation: dict[str, Any]
) -> None:
    """`?limt=5` used to give 50 items on some lists, silently."""
    # The query is checked before the ids are looked up, so any id will do.
    concrete = re.sub(r"{\w+}", "1", path)
    reply = await booking_api.call("GET", concrete, role=_role(operation), params={"limt": "5"})
    assert reply.status == 422, reply.body
    assert [(e["in"], e["path"]) for e in reply.body["errors"]] == [("query", "limt")]


# -- full last pages -------------------------------------------------------------------------------

Builder = Callable[[BookingApi], Awaitable[str]]


async def _patient(api: BookingApi, first_name: str = "Ada") -> int:
    body = {"first_name": first_name, "last_name": "Lovelace"}
    reply = await api.call("POST", "/api/v1/patients", role="front_desk", json=body)
    assert reply.status == 201, reply.body
    return int(reply.body["id"])


async def _treatment(api: BookingApi, code: str) -> int:
    return int(await api.pool.fetchval("SELECT id FROM treatment WHERE code = $1", code))


async def _book(api: BookingApi, patient_id: int, code: str, start: str) -> Reply:
    await factories.courses_without_consultation(api.pool)  # lists, not the consultation gate
    body = {
        "patient_id": patient_id,
        "treatment_id": await _treatment(api, code),
        "practitioner_id": 1,
        "start": start,
    }
    reply = await api.call("POST", "/api/v1/bookings", role="front_desk", json=body)
    assert reply.status == 201, reply.body
    return reply


async def _appointments(api: BookingApi) -> str:
    patient_id = await _patient(api)
    await _book(api, patient_id, "consultation", SLOT)
    await _book(api, patient_id, "consultation", LATER)
    return "/api/v1/appointments"


async def _series(api: BookingApi) -> str:
    for name, start in (("Ada", SLOT), ("Grace", LATER)):
        await _book(api, await _patient(api, name), "hair-mesotherapy", start)
    return "/api/v1/series"


async def _patients(api: BookingApi) -> str:
    await _patient(api, "Ada")
    await _patient(api, "Grace")
    return "/api/v1/patients"


async def _audit(api: BookingApi) -> str:
    await _patients(api)  # each creation is audited
    return "/api/v1/audit"


async def _consents(api: BookingApi) -> str:
    patient_id = await _patient(api)
    for kind in ("care_sms", "care_email"):
        consent = {"kind": kind, "granted": True, "wording_version": "v1"}
        path = f"/api/v1/patients/{patient_id}/consents"
        assert (await api.call("POST", path, role="front_desk", json=consent)).status == 201
    return f"/api/v1/patients/{patient_id}/consents"


async def _outbox(api: BookingApi) -> Outbox:
    patient_id = await _patient(api)
    booked = await _book(api, patient_id, "consultation", SLOT)
    outbox = Outbox(api, patient_id, booked.body["appointments"][0]["id"])
    await outbox.add(kind="reminder_24h")
    await outbox.add(kind="reminder_2h")
    return outbox


async def _patient_messages(api: BookingApi) -> str:
    return f"/api/v1/patients/{(await _outbox(api)).patient_id}/messages"


async def _appointment_messages(api: BookingApi) -> str:
    return f"/api/v1/appointments/{(await _outbox(api)).appointment_id}/messages"


async def _clinics(api: BookingApi) -> str:
    clinic = {"name": "Second Clinic", "time_zone": "Europe/Paris", "phone": "+33142685300"}
    assert (await api.call("POST", "/api/v1/clinics", role="admin", json=clinic)).status == 201
    return "/api/v1/clinics"


async def _time_off(api: BookingApi) -> str:
    path = "/api/v1/practitioners/1/time-off"
    for start, end in ((SLOT, "2026-03-03T12:00:00Z"), (LATER, "2026-03-04T12:00:00Z")):
        body = {"starts_at": start, "ends_at": end}
        assert (await api.call("POST", path, role="front_desk", json=body)).status == 201
    return path


async def _overrides(api: BookingApi) -> str:
    path = "/api/v1/practitioners/1/overrides"
    for day in ("2026-03-10", "2026-03-11"):
        assert (await api.call("PUT", path, role="front_desk", json={"day": day})).status == 200
    return path


async def _form_differences(api: BookingApi) -> str:
    """Two public bookings for a patient on file whose form says something else."""
    await factories.patient(
        api.pool,
        clinic_id=api.clinic_id,
        first_name="Ada",
        last_name="Lovelace",
        mobile="+447911123456",
        email=None,
        date_of_birth=None,
        now=api.clock.now(),
    )
    consultation = await _treatment(api, "consultation")
    for start, allergies in ((SLOT, "lidocaine"), (LATER, "penicillin")):
        hold = await api.call(
            "POST",
            "/api/v1/public/holds",
            json={
                "treatment_id": consultation,
                "sessions": [{"practitioner_id": 1, "start": start}],
            },
        )
        assert hold.status == 201, hold.body
        booking = {
            "hold_token": hold.body["token"],
            "patient": form(allergies=allergies),
            "consents": CONSENTS,
        }
        assert (await api.call("POST", "/api/v1/public/bookings", json=booking)).status == 201
    return "/api/v1/form-differences"


async def _queues(api: BookingApi) -> Queues:
    patient_id = await factories.patient(
        api.pool,
        clinic_id=api.clinic_id,
        first_name="Ada",
        last_name="Lovelace",
        mobile="+447700900456",
        now=api.clock.now(),
    )
    return Queues(api, patient_id)


async def _inbox(api: BookingApi) -> str:
    queues = await _queues(api)
    await queues.inbox_item("one")
    await queues.inbox_item("two", danger_words=("fever",))
    return "/api/v1/inbox"


async def _call_list(api: BookingApi) -> str:
    queues = await _queues(api)
    for start in (SLOT, LATER):
        await queues.call_task(await queues.appointment(datetime.fromisoformat(start)))
    return "/api/v1/call-list"


async def _review_queue(api: BookingApi) -> str:
    queues = await _queues(api)
    await queues.course([datetime.fromisoformat(SLOT)], flagged=(1,))
    grace = await queues.new_patient("Grace")
    await queues.course([datetime.fromisoformat(LATER)], patient_id=grace, flagged=(1,))
    return "/api/v1/review-queue"


async def _conversation(api: BookingApi) -> str:
    queues = await _queues(api)
    await queues.sms("one", received_at=api.clock.now() - timedelta(hours=1))
    await queues.sms("two")
    return f"/api/v1/patients/{queues.patient_id}/conversation"


async def _adverse_events(api: BookingApi) -> str:
    patient_id = await _patient(api)
    for tier in ("routine", "urgent"):
        body = {
            "clinic_id": api.clinic_id,
            "patient_id": patient_id,
            "symptoms": "itch",
            "tier": tier,
        }
        opened = await api.call("POST", "/api/v1/adverse-events", role="front_desk", json=body)
        assert opened.status == 201, opened.body
    return "/api/v1/adverse-events"


def _seeded(path: str) -> Builder:
    """The demo data already holds at least two: practitioners, treatments, tokens."""

    async def build(api: BookingApi) -> str:
        return path.format(clinic_id=api.clinic_id)

    return build


async def _recall(api: BookingApi) -> str:
    """Two completed sessions whose records name the same lot."""
    prp = await _treatment(api, "prp-hair")
    for name, start in (("Ada", SLOT), ("Grace", LATER)):
        appointment_id = await factories.appointment(
            api.pool,
            clinic_id=api.clinic_id,
            practitioner_id=1,
            treatment_id=prp,
            patient_id=await _patient(api, name),
            starts_at=datetime.fromisoformat(start),
            now=api.clock.now(),
            status="completed",
        )
        record = {"product": "PRP kit", "lot_number": "LOT-1", "reason": "from paper"}
        path = f"/api/v1/appointments/{appointment_id}/session-record"
        assert (await api.call("PUT", path, role="clinician", json=record)).status == 200
    return "/api/v1/recall?lot_number=LOT-1"


async def _alerts(api: BookingApi) -> str:
    for _ in range(2):

        async def work(conn: asyncpg.Connection) -> object:
            return await alerts.raise_alert(
                conn,
                clinic_id=api.clinic_id,
                tier="urgent",
                patient_id=None,
                now=api.clock.now(),
                summary="reported by phone",
            )

        await in_transaction(api.pool, work)
    return "/api/v1/alerts"


async def _on_call(api: BookingApi) -> str:
    path = f"/api/v1/clinics/{api.clinic_id}/on-call"
    shift = {"member_id": 2, "starts_at": "2026-03-09T08:00:00Z", "ends_at": "2026-03-10T08:00:00Z"}
    assert (await api.call("POST", path, role="admin", json=shift)).status == 201
    return path


# How each list gets at least two items; a new list needs an entry here.
async def _screening_answers(api: BookingApi) -> str:
    patient_id = await _patient(api)
    answers = await factories.screening_all_no(api.pool, api.clinic_id)
    body = {
        "patient_id": patient_id,
        "treatment_id": await _treatment(api, "consultation"),
        "practitioner_id": 1,
        "start": SLOT,
        "screening": answers,
    }
    assert (await api.call("POST", "/api/v1/bookings", role="front_desk", json=body)).status == 201
    return f"/api/v1/patients/{patient_id}/screening-answers"


LISTS: dict[str, Builder] = {
    "/api/v1/adverse-events": _adverse_events,
    "/api/v1/alerts": _alerts,
    "/api/v1/clinics/{clinic_id}/care-team": _seeded("/api/v1/clinics/{clinic_id}/care-team"),
    "/api/v1/clinics/{clinic_id}/on-call": _on_call,
    "/api/v1/appointments": _appointments,
    "/api/v1/appointments/{appointment_id}/messages": _appointment_messages,
    "/api/v1/audit": _audit,
    "/api/v1/call-list": _call_list,
    "/api/v1/inbox": _inbox,
    "/api/v1/patients/{patient_id}/conversation": _conversation,
    "/api/v1/review-queue": _review_queue,
    "/api/v1/clinics": _clinics,
    "/api/v1/form-differences": _form_differences,
    "/api/v1/patients": _patients,
    "/api/v1/patients/{patient_id}/consents": _consents,
    "/api/v1/patients/{patient_id}/messages": _patient_messages,
    "/api/v1/practitioners": _seeded("/api/v1/practitioners"),
    "/api/v1/recall": _recall,
    "/api/v1/practitioners/{practitioner_id}/overrides": _overrides,
    "/api/v1/practitioners/{practitioner_id}/time-off": _time_off,
    "/api/v1/public/clinics/{clinic_id}/treatments": _seeded(
        "/api/v1/public/clinics/{clinic_id}/treatments"
    ),
    "/api/v1/series": _series,
    "/api/v1/clinics/{clinic_id}/screening-questions": _seeded(
        "/api/v1/clinics/{clinic_id}/screening-questions"
    ),
    "/api/v1/patients/{patient_id}/screening-answers": _screening_answers,
    "/api/v1/tokens": _seeded("/api/v1/tokens"),
    "/api/v1/treatments": _seeded("/api/v1/treatments"),
}


def test_every_list_has_a_way_to_fill_it() -> None:
    assert sorted(LISTS) == sorted(LIST_PATHS)


async def _walk(api: BookingApi, path: str, role: str | None, limit: int) -> list[Any]:
    """Every item of a list, page by page; each page but the last is full and has a cursor."""
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(100):
        params = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        reply = await api.call("GET", path, role=role, params=params)
        assert reply.status == 200, (path, reply.body)
        page = reply.body
        assert page["items"], (path, "an empty page", items)
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert len(page["items"]) == limit, (path, "a short page with a cursor")
    raise AssertionError(f"{path}: the cursor never ends")


@pytest.mark.parametrize(("path", "operation"), LIST_OPERATIONS, ids=LIST_PATHS)
async def test_a_full_last_page_has_no_cursor_and_pages_add_up_to_the_list(
    booking_api: BookingApi, path: str, operation: dict[str, Any]
) -> None:
    """A full last page used to be followed by an empty one on some lists; the same cursor
    walks every list from its first item to its last, without gaps or repeats."""
    concrete = await LISTS[path](booking_api)
    role = _role(operation)
    whole = await booking_api.call("GET", concrete, role=role, params={"limit": "200"})
    assert whole.status == 200, whole.body
    everything = whole.body["items"]
    assert len(everything) >= 2 and whole.body["next_cursor"] is None, whole.body
    # The whole list as one full page: nothing after it.
    exact = await booking_api.call(
        "GET", concrete, role=role, params={"limit": str(len(everything))}
    )
    assert exact.body["items"] == everything and exact.body["next_cursor"] is None
    # One item per page: every page is full, the last one too, and it has no cursor.
    assert await _walk(booking_api, concrete, role, 1) == everything


async def test_a_cursor_from_elsewhere_is_a_422(booking_api: BookingApi) -> None:
    tokens = await booking_api.call("GET", "/api/v1/tokens", role="admin", params={"limit": "1"})
    cursor = tokens.body["next_cursor"]
    assert cursor
    # An id cursor means nothing to the time-off list, whose keyset is a start and an id.
    reply = await booking_api.call(
        "GET", "/api/v1/practitioners/1/time-off", role="admin", params={"cursor": cursor}
    )
    assert reply.status == 422
    assert [(e["in"], e["path"]) for e in reply.body["errors"]] == [("query", "cursor")]


# -- Location --------------------------------------------------------------------------------------

# Creates whose answer has no address of its own to read it back at, and why.
NOT_LOCATED = {
    "/api/v1/patients/{patient_id}/consents": "an entry of the consent history (a list)",
    "/api/v1/practitioners/{practitioner_id}/time-off": "time off is listed, not read one by one",
    "/api/v1/tokens": "a token is shown once and never read again",
    "/api/v1/clinics/{clinic_id}/on-call": "a shift is listed with the rota, not read alone",
    "/api/v1/public/holds": "a hold is read with its token, which never travels in a URL",
    "/api/v1/public/bookings": "the public API shows no booking after it is made",
}


def test_every_create_says_where_to_read_it_or_why_not() -> None:
    for path, methods in DOCUMENT["paths"].items():
        created = methods.get("post", {}).get("responses", {}).get("201")
        if created is None:
            continue
        located = "Location" in created.get("headers", {})
        assert located != (path in NOT_LOCATED), path


async def _located(api: BookingApi, reply: Reply, role: str) -> dict[str, Any]:
    """What GET Location answers, after checking that the 201 named it."""
    assert reply.status == 201, reply.body
    location = reply.headers["Location"]
    assert location.startswith("/api/v1/")
    read = await api.call("GET", location, role=role)
    assert read.status == 200, (location, read.body)
    return dict(read.body)


async def test_a_new_patient_is_at_its_location(booking_api: BookingApi) -> None:
    body = {"first_name": "Ada", "last_name": "Lovelace"}
    created = await booking_api.call("POST", "/api/v1/patients", role="front_desk", json=body)
    assert created.headers["Location"] == f"/api/v1/patients/{created.body['id']}"
    read = await _located(booking_api, created, "front_desk")
    assert read["id"] == created.body["id"] and read["first_name"] == "Ada"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/api/v1/clinics",
            {"name": "Paris", "time_zone": "Europe/Paris", "phone": "+33142685300"},
        ),
        ("/api/v1/practitioners", {"clinic_id": 1, "name": "Dr Ines Moreau"}),
        (
            "/api/v1/treatments",
            {"clinic_id": 1, "code": "scalp-check", "name": "Scalp check", "duration_minutes": 20},
        ),
    ],
)
async def test_new_setup_records_are_at_their_location(
    booking_api: BookingApi, path: str, body: dict[str, Any]
) -> None:
    created = await booking_api.call("POST", path, role="admin", json=body)
    assert created.headers["Location"] == f"{path}/{created.body['id']}"
    assert await _located(booking_api, created, "admin") == created.body


async def test_a_staff_booking_points_at_the_visit_or_the_course(booking_api: BookingApi) -> None:
    patient_id = await _patient(booking_api)
    visit = await _book(booking_api, patient_id, "consultation", SLOT)
    [appointment] = visit.body["appointments"]
    assert visit.headers["Location"] == f"/api/v1/appointments/{appointment['id']}"
    assert (await _located(booking_api, visit, "front_desk"))["id"] == appointment["id"]
    course = await _book(booking_api, patient_id, "hair-mesotherapy", LATER)
    assert course.headers["Location"] == f"/api/v1/series/{course.body['series_id']}"
    read = await _located(booking_api, course, "front_desk")
    assert [s["id"] for s in read["sessions"]] == [a["id"] for a in course.body["appointments"]]


async def test_a_resent_message_is_at_its_location_also_when_the_answer_is_replayed(
    booking_api: BookingApi,
) -> None:
    outbox = await _outbox(booking_api)
    original = await outbox.add(status="failed")
    path = f"/api/v1/messages/{original}/resend"
    headers = {"Idempotency-Key": "resend-1"}
    why = {"reason": "the patient deleted it"}
    first = await booking_api.call("POST", path, role="front_desk", json=why, headers=headers)
    assert first.headers["Location"] == f"/api/v1/messages/{first.body['id']}"
    assert (await _located(booking_api, first, "front_desk"))["resend_of"] == original
    again = await booking_api.call("POST", path, role="front_desk", json=why, headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.status == 201 and again.headers["Location"] == first.headers["Location"]


async def test_a_refused_create_has_no_location(booking_api: BookingApi) -> None:
    body = {"first_name": "Ada", "last_name": "Lovelace", "clinic_id": 999}
    refused = await booking_api.call("POST", "/api/v1/patients", role="front_desk", json=body)
    assert refused.status == 422 and "Location" not in refused.headers


# -- field types and paths -------------------------------------------------------------------------


def _booking(patient: dict[str, Any]) -> dict[str, Any]:
    return {"hold_token": "h" * 20, "patient": patient, "consents": CONSENTS}


async def test_a_bad_screening_answer_names_its_own_path(booking_api: BookingApi) -> None:
    """It used to read `patient.screening.pregnant.function-after[storable(), constrained-str]`:
    a path naming pydantic's validators rather than anything the form sent."""
    screening = {"pregnant": 5, "bool": 7, "Bad Key": True}
    reply = await booking_api.call(
        "POST", "/api/v1/public/bookings", json=_booking(form(screening=screening))
    )
    assert reply.status == 422, reply.body
    paths = [e["path"] for e in reply.body["errors"]]
    # Each answer is true/false or a text: one error per alternative, each at the answer's path
    # (a key that happens to be called "bool" is the client's and stays in the path).
    assert sorted(set(paths)) == [
        "patient.screening.Bad Key",
        "patient.screening.bool",
        "patient.screening.pregnant",
    ]
    assert all(e["in"] == "body" for e in reply.body["errors"])


async def test_paths_name_list_positions_and_nested_fields(booking_api: BookingApi) -> None:
    consultation = await _treatment(booking_api, "consultation")
    sessions = [{"practitioner_id": 1, "start": SLOT}, {"practitioner_id": "1", "start": "soon"}]
    reply = await booking_api.call(
        "POST", "/api/v1/public/holds", json={"treatment_id": consultation, "sessions": sessions}
    )
    assert reply.status == 422
    assert sorted(e["path"] for e in reply.body["errors"]) == [
        "sessions.1.practitioner_id",
        "sessions.1.start",
    ]


# Every place an instant is taken, in a body or a query string.
INSTANTS = [
    ("GET", "/api/v1/public/course-proposal", "query", "first_start", None),
    ("GET", "/api/v1/audit", "query", "since", "admin"),
    ("POST", "/api/v1/practitioners/1/time-off", "body", "starts_at", "front_desk"),
    ("POST", "/api/v1/appointments/1/reschedule", "body", "starts_at", "front_desk"),
    ("POST", "/api/v1/public/holds", "body", "sessions.0.start", None),
    ("POST", "/api/v1/bookings", "body", "start", "front_desk"),
]


def _request_with(where: str, field: str, value: Any) -> dict[str, Any]:
    bodies: dict[str, dict[str, Any]] = {
        "first_start": {"treatment_id": 1, "practitioner_id": 1},
        "since": {},
        "starts_at": {"ends_at": LATER},
        "sessions.0.start": {"treatment_id": 1},
        "start": {"patient_id": 1, "treatment_id": 1, "practitioner_id": 1},
    }
    request = dict(bodies[field])
    if field == "sessions.0.start":
        request["sessions"] = [{"practitioner_id": 1, "start": value}]
    else:
        request[field] = value
    return {"params": request} if where == "query" else {"json": request}


# A query string holds only text; a JSON body may hold the number or the text of one.
UNIX_TIMES = [
    (*case, unix_time)
    for case in INSTANTS
    for unix_time in ((1772442000, "1772442000") if case[2] == "body" else ("1772442000",))
]


@pytest.mark.parametrize(("method", "path", "where", "field", "role", "unix_time"), UNIX_TIMES)
async def test_an_instant_is_iso_8601_and_never_a_unix_timestamp(
    booking_api: BookingApi,
    method: str,
    path: str,
    where: str,
    field: str,
    role: str | None,
    unix_time: int | str,
) -> None:
    """The public API used to read 1772442000 as 2026-03-02T09:00Z while the admin API refused
    it: a client could not tell which rule applied where."""
    reply = await booking_api.call(
        method, path, role=role, **_request_with(where, field, unix_time)
    )
    assert reply.status == 422, reply.body
    [error] = [e for e in reply.body["errors"] if e["path"] == field]
    assert error["in"] == where
    assert "ISO 8601" in error["message"] and "Unix" in error["message"]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("2026-03-03T10:00:00", "offset"),
        ("2026-03-03", "ISO 8601"),
        ("1999-12-31T10:00:00Z", "2000"),
        ("0001-01-01T00:00:00+01:00", "2000"),
    ],
)
async def test_an_instant_without_offset_or_far_off_is_refused_with_a_reason(
    booking_api: BookingApi, value: str, says: str
) -> None:
    reply = await booking_api.call("GET", "/api/v1/audit", role="admin", params={"since": value})
    assert reply.status == 422, reply.body
    [error] = reply.body["errors"]
    assert error["path"] == "since" and says in error["message"]
