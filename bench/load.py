"""Issue 14's load run: the three services as real `regimen serve` processes in production mode
(the notifier sending to the local Twilio stand-in and an SMTP sink), and on loopback

* `patients` patients at once going through the booking pages as a browser does (start page,
  practitioner, week of free times, hold, details, review, confirm, the booked page), each visit
  a new browser from its own address (X-Forwarded-For behind one trusted proxy hop, so every
  per-address limit stays at its production default and counts each patient apart);
* the admin API at `admin_rate` requests a second, open loop: a front-desk token reading the day
  list, searching patients, reading appointments and schedules, and now and then moving an
  appointment.

It stops by itself after `seconds` (visits in progress finish; every request has a timeout).
A time someone else took first (409) is an expected answer; an error is a 5xx, a connection
error, a timeout or any status the step does not answer with in normal use.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as wall_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import psutil

from bench.bench_notify import AUTH_TOKEN, StandIns, _ready
from bench.support import percentile
from services.devkit.demo_data import lunch_break_week, seed_demo_data
from shared.config import DEV_TWILIO_ACCOUNT_SID, DEV_TWILIO_FROM
from shared.db.pool import connect
from shared.store import clinics, practitioners, staff_tokens, treatments, working_hours
from shared.store.practitioners import PractitionerFields

SERVICES = ("booking", "scheduler", "notifier")
EXTRA_PRACTITIONERS = 8  # beside the demo clinic's two
SEEDED_PATIENTS = 1000
CLIENT_TIMEOUT = 30.0  # seconds; a request slower than this counts as an error
ADMIN_IN_FLIGHT = 50  # the admin loop's bound; a tick finding it full is counted as skipped
ZONE = ZoneInfo("Europe/London")
# Shorter than the default 10 so that the holds patients walk away from run out, and the
# scheduler's sweep releases them, within a run.
HOLD_MINUTES = 2
FINAL = ("sent", "delivered", "failed", "undelivered", "cancelled", "suppressed", "expired")
# Whoever books: mostly consultations, some the first session of a course or a whole course.
TREATMENT_MIX = (["consultation"] * 8) + ["prp-hair", "hair-mesotherapy"]


# -- results ---------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    seconds: float
    patients: int
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    rss_mb: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    messages_sent: int = 0
    messages_pending: int = 0
    stored_sessions: int = 0
    overlaps: int = 0
    drain_seconds: float = 0.0
    log_problems: dict[str, int] = field(default_factory=dict)  # error lines by service
    visitor_appointments: dict[str, int] = field(default_factory=dict)  # by status
    samples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def report_lines(self) -> list[tuple[str, float, str]]:
        """(name, value, unit) of every figure, in the order printed."""
        lines: list[tuple[str, float, str]] = [
            ("load_patients", float(self.patients), "patients"),
            ("load_seconds", round(self.seconds, 1), "s"),
        ]
        admin: list[float] = []
        for name in sorted(self.latencies):
            samples = self.latencies[name]
            if name.startswith("admin_"):
                admin.extend(samples)
            lines.append((f"load_{name}_p50_ms", percentile(samples, 0.5), "ms"))
            lines.append((f"load_{name}_p99_ms", percentile(samples, 0.99), "ms"))
        if admin:
            lines.append(("load_admin_p50_ms", percentile(admin, 0.5), "ms"))
            lines.append(("load_admin_p99_ms", percentile(admin, 0.99), "ms"))
            lines.append(("load_admin_per_s", len(admin) / self.seconds, "requests/s"))
        lines += [
            ("load_requests_per_s", self.requests() / self.seconds, "requests/s"),
            ("load_errors", float(self.error_count), "count"),
            ("load_bookings", float(self.outcomes["booked"]), "bookings"),
            ("load_taken", float(self.outcomes["taken"]), "count"),
            ("load_admin_moves", float(self.outcomes["moved"]), "count"),
            ("load_overlaps", float(self.overlaps), "pairs"),
            # Sessions the pages confirmed that are not booked in the diary at the end.
            (
                "load_lost_sessions",
                float(self.outcomes["sessions_booked"] - self.stored_sessions),
                "sessions",
            ),
            ("load_log_errors", float(sum(self.log_problems.values())), "lines"),
            ("load_messages_sent", float(self.messages_sent), "messages"),
            ("load_messages_pending", float(self.messages_pending), "messages"),
        ]
        for service in SERVICES:
            samples = self.rss_mb.get(service) or [0.0]
            lines.append((f"load_rss_{service}_start_mb", samples[0], "MB"))
            lines.append((f"load_rss_{service}_end_mb", samples[-1], "MB"))
        return lines

    def comments(self) -> list[str]:
        out = [f"outcomes: {dict(sorted(self.outcomes.items()))}"]
        out.append(
            f"sessions booked {self.outcomes['sessions_booked']}, "
            f"in the diary {self.stored_sessions}"
        )
        out.append(f"the visits' appointments by status: {self.visitor_appointments}")
        if self.errors:
            out.append(f"errors: {dict(self.errors.most_common(20))}")
            for key, said in self.samples.items():
                out.extend(f"{key}: {text}" for text in said)
        for service in SERVICES:
            samples = ", ".join(f"{mb:.0f}" for mb in self.rss_mb.get(service, []))
            out.append(f"rss {service} MB every sample: {samples}")
        out.append(f"outbox drained {self.drain_seconds:.1f} s after the clients stopped")
        out.append(f"error lines in the services' logs: {self.log_problems}")
        return out


# -- the services ------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def service_env(url: str, stand_ins: StandIns, ports: Mapping[str, int]) -> dict[str, str]:
    """Production mode with every limit at its default, except what would make the figures
    meaningless: one trusted proxy hop (each patient's own X-Forwarded-For address is counted,
    not loopback's) and no SMS pacing (one segment a second would leave the notifier idle)."""
    return {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": url,
        "REGIMEN_PUBLIC_URL": "https://clinic.example.test",
        "REGIMEN_SECRET_KEY": "l" * 40,
        "REGIMEN_TWILIO_ACCOUNT_SID": DEV_TWILIO_ACCOUNT_SID,
        "REGIMEN_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "REGIMEN_TWILIO_FROM": DEV_TWILIO_FROM,
        "REGIMEN_TWILIO_API_URL": stand_ins.twilio_url,
        "REGIMEN_SMTP_HOST": "127.0.0.1",
        "REGIMEN_SMTP_PORT": str(stand_ins.smtp_port),
        "REGIMEN_EMAIL_FROM": "clinic@regimen.test",
        "REGIMEN_LOG_LEVEL": "WARNING",
        "REGIMEN_TRUSTED_PROXY_HOPS": "1",
        "REGIMEN_SMS_SEGMENTS_PER_SECOND": "0",
        "REGIMEN_BOOKING_PORT": str(ports["booking"]),
        "REGIMEN_BOOKING_METRICS_PORT": str(ports["metrics"]),
        "REGIMEN_SCHEDULER_PORT": str(ports["scheduler"]),
        "REGIMEN_NOTIFIER_PORT": str(ports["notifier"]),
    }


@dataclass
class Services:
    processes: dict[str, subprocess.Popen[bytes]]
    ports: dict[str, int]
    logs: dict[str, Path]

    def rss_mb(self) -> dict[str, float]:
        out = {}
        for name, child in self.processes.items():
            try:
                process = psutil.Process(child.pid)
                tree = [process, *process.children(recursive=True)]
                out[name] = sum(p.memory_info().rss for p in tree) / 2**20
            except psutil.NoSuchProcess:
                out[name] = 0.0
        return out

    def exited(self) -> list[str]:
        return [name for name, child in self.processes.items() if child.poll() is not None]


def _spawn(service: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", service, "--host", "127.0.0.1"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


@contextlib.asynccontextmanager
async def running_services(url: str, stand_ins: StandIns, folder: Path) -> AsyncIterator[Services]:
    ports = {name: _free_port() for name in (*SERVICES, "metrics")}
    env = service_env(url, stand_ins, ports)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    logs = {name: folder / f"{name}.log" for name in SERVICES}
    try:
        for name in SERVICES:
            processes[name] = _spawn(name, env, logs[name])
        for name in SERVICES:
            await _ready(ports[name], name, logs[name])
        yield Services(processes, ports, logs)
    finally:
        for child in processes.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in processes.values():
            # In a thread: the stand-ins live on this loop and must answer the notifier's QUIT.
            try:
                await asyncio.to_thread(child.wait, 20)
            except subprocess.TimeoutExpired:
                child.kill()


# -- the clinic --------------------------------------------------------------------------------


@dataclass
class Clinic:
    treatment_ids: dict[str, int]
    practitioner_ids: list[int]
    token: str
    patient_names: list[str]
    movable: list[int]  # seeded consultations the front desk may move


async def seed(url: str, *, today: date) -> Clinic:
    """The demo clinic with ten practitioners working weekdays, quiet hours opened to the whole
    day (the run may be at night), holds of HOLD_MINUTES, a thousand patients and the next two
    weeks about a third booked: the front desk's reads have something to show, and patients
    months of free times (ten practitioners x 16 half hours x about 125 weekdays)."""
    conn = await connect(url)
    try:
        await seed_demo_data(conn)
        clinic = await clinics.get(conn, 1)
        assert clinic is not None
        whole_day = replace(
            clinics.settings_of(clinic),
            quiet_start=wall_time(0),
            quiet_end=wall_time(23, 59, 59),
            hold_minutes=HOLD_MINUTES,
        )
        await clinics.update(conn, 1, expected_version=clinic.version, settings=whole_day)
        for n in range(3, 3 + EXTRA_PRACTITIONERS):
            fields = PractitionerFields(name=f"Practitioner {n}", email=f"p{n}@regimen.localhost")
            practitioner = await practitioners.insert(conn, clinic_id=1, fields=fields)
            await working_hours.replace(conn, practitioner.id, lunch_break_week((1, 2, 3, 4, 5)))
        await conn.execute(
            """
            INSERT INTO patient (clinic_id, first_name, last_name, mobile, email, created_at,
                                 updated_at)
            SELECT 1, 'Seeded', 'Patient' || n, '+447911' || lpad(n::text, 6, '0'),
                   'seeded' || n || '@example.com', now(), now()
            FROM generate_series(1, $1) AS n
            """,
            SEEDED_PATIENTS,
        )
        consultation = await treatments.by_code(conn, 1, "consultation")
        assert consultation is not None
        await conn.execute(
            """
            WITH candidate AS (
                SELECT p.id AS practitioner_id,
                       ((d::date + time '09:00' + (k * interval '30 minutes')
                         + CASE WHEN k >= 8 THEN interval '1 hour' ELSE interval '0' END)
                        AT TIME ZONE 'Europe/London') AS starts_at
                FROM practitioner p
                CROSS JOIN generate_series($1::date, $1::date + 13, interval '1 day') AS d
                CROSS JOIN generate_series(0, 15) AS k
                WHERE extract(isodow FROM d) <= 5 AND random() < 0.35
            )
            INSERT INTO appointment (clinic_id, practitioner_id, treatment_id, patient_id, status,
                                     during, blocked, source, status_changed_at, created_at)
            SELECT 1, practitioner_id, $2, 1 + (random() * ($3 - 1))::int, 'booked',
                   tstzrange(starts_at, starts_at + interval '30 minutes'),
                   tstzrange(starts_at, starts_at + interval '30 minutes'),
                   'seed', now(), now()
            FROM candidate WHERE starts_at > now() + interval '1 day'
            """,
            today,
            consultation.id,
            SEEDED_PATIENTS,
        )
        token, _ = await staff_tokens.insert(
            conn, name="load front desk", role="front_desk", now=datetime.now(UTC)
        )
        ids = {}
        for code in set(TREATMENT_MIX):
            treatment = await treatments.by_code(conn, 1, code)
            assert treatment is not None, code
            ids[code] = treatment.id
        practitioner_ids = [r["id"] for r in await conn.fetch("SELECT id FROM practitioner")]
        movable = [
            r["id"]
            for r in await conn.fetch("SELECT id FROM appointment WHERE source = 'seed' LIMIT 500")
        ]
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    names = [f"Patient{n}" for n in range(1, SEEDED_PATIENTS + 1)]
    return Clinic(ids, practitioner_ids, token, names, movable)


# -- an HTTP client that records every answer --------------------------------------------------


class Failed(Exception):
    """The step was counted as an error; the visit stops."""


class Recorder:
    def __init__(self, result: LoadResult, http: aiohttp.ClientSession, base: str) -> None:
        self.result = result
        self.http = http
        self.base = base

    async def call(
        self,
        name: str,
        method: str,
        path: str,
        *,
        expect: Iterable[int],
        **kwargs: Any,
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        started = time.perf_counter()
        try:
            async with self.http.request(
                method, self.base + path, allow_redirects=False, **kwargs
            ) as response:
                body = await response.text()
        except (aiohttp.ClientError, TimeoutError) as error:
            self.result.errors[f"{name}: {type(error).__name__}"] += 1
            raise Failed from None
        self.result.latencies[name].append((time.perf_counter() - started) * 1000)
        if response.status not in expect:
            key = f"{name}: HTTP {response.status}"
            self.result.errors[key] += 1
            if len(self.result.samples[key]) < 3:  # what the answer said, to find out why
                heading = re.search(r"<h1>(.*?)</h1>", body, re.DOTALL)
                said = heading.group(1) if heading else body[:300]
                sent = kwargs.get("data") or kwargs.get("params") or ""
                self.result.samples[key].append(f"{said.strip()} <- {path} {sent}")
            raise Failed
        return response.status, body, response


# -- one patient's visit -------------------------------------------------------------------------

FORM = re.compile(r"<form\b([^>]*)>(.*?)</form>", re.DOTALL)
INPUT = re.compile(r"<input\b([^>]*)>")
ATTRIBUTE = re.compile(r'([a-z-]+)(?:="([^"]*)")?')


def forms(page: str) -> dict[str, list[dict[str, str]]]:
    """The page's forms by action, each as the attributes of its inputs."""
    out: dict[str, list[dict[str, str]]] = {}
    for head, body in FORM.findall(page):
        action = dict((k, html.unescape(v)) for k, v in ATTRIBUTE.findall(head)).get("action", "")
        inputs = [
            {k: html.unescape(v) for k, v in ATTRIBUTE.findall(attrs)}
            for attrs in INPUT.findall(body)
        ]
        out.setdefault(action, inputs)
    return out


def hidden(inputs: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(i["name"], i.get("value", "")) for i in inputs if i.get("type") == "hidden"]


def radios(inputs: list[dict[str, str]], name: str) -> list[str]:
    return [i["value"] for i in inputs if i.get("type") == "radio" and i.get("name") == name]


class Browser:
    """One patient's browser: its own address and its own CSRF cookie. The cookie is Secure
    (the public URL is https, TLS ending at the proxy), so it is kept here by hand: a cookie jar
    would not send it over loopback's plain http."""

    def __init__(self, recorder: Recorder, address: str, think: float, rng: random.Random) -> None:
        self.recorder = recorder
        self.address = address
        self.cookies: dict[str, str] = {}
        self.think = think
        self.rng = rng

    async def go(
        self, name: str, method: str, path: str, *, expect: Iterable[int], **kwargs: Any
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        headers = {"X-Forwarded-For": self.address}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        status, body, response = await self.recorder.call(
            name, method, path, expect=expect, headers=headers, **kwargs
        )
        for key, morsel in response.cookies.items():
            self.cookies[key] = morsel.value
        if self.think:
            await asyncio.sleep(self.think * self.rng.uniform(0.5, 1.5))  # reading the page
        return status, body, response


@dataclass
class Patients:
    """Who books next: a new person most times; now and then someone already booked, whom the
    clinic matches by mobile (the form then says the details went to the contacts on file)."""

    rng: random.Random
    count: int = 0
    booked_mobiles: list[str] = field(default_factory=list)

    def next(self) -> tuple[int, str, bool]:
        self.count += 1
        n = self.count
        if self.booked_mobiles and self.rng.random() < 0.1:
            return n, self.booked_mobiles.pop(self.rng.randrange(len(self.booked_mobiles))), True
        return n, f"+447922{n:06d}", False


def _details(n: int, mobile: str, rng: random.Random) -> list[tuple[str, str]]:
    sms, email = rng.random() < 0.9, rng.random() < 0.7
    fields = [
        ("first_name", "Load"),
        ("last_name", f"Visitor{n}"),
        ("mobile", mobile),
        ("email", f"visitor{n}@example.com"),
        ("dob_day", str(1 + n % 28)),
        ("dob_month", str(1 + n % 12)),
        ("dob_year", str(1950 + n % 50)),
        ("allergies", ""),
        ("medications", ""),
        ("notes", ""),
        ("pregnant", "no"),
        ("scalp", "no"),
        ("keloid", "no"),
        ("website", ""),
    ]
    if sms:
        fields.append(("care_sms", "yes"))
    if email:
        fields.append(("care_email", "yes"))
    return fields


async def visit(
    recorder: Recorder, clinic: Clinic, people: Patients, rng: random.Random, think: float
) -> None:
    """One patient books (or gives up, or is beaten to every time), as the pages lead them."""
    result = recorder.result
    n, mobile, returning = people.next()
    browser = Browser(recorder, f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}", think, rng)
    await browser.go("page_start", "GET", "/", expect={200})
    code = rng.choice(TREATMENT_MIX)
    treatment_id = clinic.treatment_ids[code]
    practitioner = "any" if rng.random() < 0.6 else str(rng.choice(clinic.practitioner_ids))
    choice = {"treatment": str(treatment_id), "practitioner": practitioner}
    if code == "prp-hair" and rng.random() < 0.5:
        choice["sessions"] = "1"  # a course's first session alone
    if code != "consultation":
        # A course that needs a consultation offers one first; this patient says they had it.
        _, page, _ = await browser.go(
            "page_practitioner", "GET", "/book/practitioner", params=choice, expect={200}
        )
        choice["consulted"] = "1"
    _, page, _ = await browser.go(
        "page_practitioner", "GET", "/book/practitioner", params=choice, expect={200}
    )
    practitioner_form = forms(page).get("/book/times", [])
    choice["sessions"] = choice.get("sessions") or next(
        (v for k, v in hidden(practitioner_form) if k == "sessions"),
        "8" if code == "hair-mesotherapy" else "4" if code == "prp-hair" else "1",
    )
    # Most patients look at the first week with a free time; some browse weeks ahead.
    params = dict(choice)
    if rng.random() < 0.5:
        day = datetime.now(ZONE).date() + timedelta(days=rng.randrange(2, 120))
        params["from"] = day.isoformat()
    _, page, _ = await browser.go("page_times", "GET", "/book/times", params=params, expect={200})
    sessions = 0  # in the hold the details form is under
    for _step in range(8):
        page_forms = forms(page)
        if "/book/review" in page_forms:
            break  # held: the details form
        picker = page_forms.get("/book/hold") or page_forms.get("/book/schedule")
        times = radios(picker or [], "first")
        if "/book/hold" in page_forms and any(k == "s" for k, _ in hidden(picker or [])):
            # A course's proposed schedule: hold every session it shows.
            fields = hidden(page_forms["/book/hold"])
            sessions = sum(k == "s" for k, _ in fields)
            _, page, _ = await browser.go(
                "page_hold", "POST", "/book/hold", data=fields, expect={200, 409}
            )
            if "/book/review" not in forms(page):
                result.outcomes["taken"] += 1
            continue
        if not page_forms:
            # "We cannot fit the whole course from that start" (a later session past the
            # horizon, or the first time taken meanwhile): choose another first session.
            again = re.search(r'<a class="button" href="(/book/times\?[^"]+)"', page)
            if again is None:
                result.errors["page_schedule: no way on"] += 1
                return
            result.outcomes["course_not_placeable"] += 1
            _, page, _ = await browser.go(
                "page_times", "GET", html.unescape(again.group(1)), expect={200}
            )
            continue
        if not times:
            later = re.search(r'href="(/book/times\?[^"]+)" rel="next"', page)
            if later is None:
                result.outcomes["no_free_time"] += 1
                return
            _, page, _ = await browser.go(
                "page_times", "GET", html.unescape(later.group(1)), expect={200}
            )
            continue
        picked = rng.choice(times[: rng.choice((3, 10, len(times)))])
        fields = [*hidden(picker or []), ("first", picked)]
        if "/book/schedule" in page_forms:
            _, page, _ = await browser.go(
                "page_schedule", "GET", "/book/schedule", params=fields, expect={200}
            )
            continue
        sessions = 1
        status, page, _ = await browser.go(
            "page_hold", "POST", "/book/hold", data=fields, expect={200, 409}
        )
        if status == 409:
            result.outcomes["taken"] += 1  # the picker again, with a notice
    else:
        result.outcomes["gave_up"] += 1
        return
    details = forms(page)["/book/review"]
    roll = rng.random()
    if roll < 0.05:
        release = hidden(forms(page).get("/book/release", []))
        await browser.go("page_release", "POST", "/book/release", data=release, expect={303})
        result.outcomes["released"] += 1
        return
    if roll < 0.10:
        result.outcomes["abandoned_hold"] += 1  # closes the tab; the hold runs out by itself
        return
    typed = _details(n, mobile, rng)
    _, page, _ = await browser.go(
        "page_review", "POST", "/book/review", data=[*hidden(details), *typed], expect={200, 409}
    )
    confirm = forms(page).get("/book/confirm")
    if confirm is None:
        result.outcomes["taken"] += 1
        return
    status, page, response = await browser.go(
        "page_confirm", "POST", "/book/confirm", data=hidden(confirm), expect={303, 409}
    )
    if status == 409:
        result.outcomes["taken"] += 1
        return
    location = response.headers.get("Location", "")
    if location.startswith("/book/booked?"):
        await browser.go("page_booked", "GET", location, expect={200})
        if not returning:
            people.booked_mobiles.append(mobile)
    elif location.startswith("/book/sent?"):
        await browser.go("page_sent", "GET", location, expect={200})
    else:
        result.errors[f"page_confirm: redirect to {location[:20]!r}"] += 1
        return
    result.outcomes["booked"] += 1
    result.outcomes["sessions_booked"] += sessions
    if returning:
        result.outcomes["booked_returning"] += 1


async def patient(
    recorder: Recorder, clinic: Clinic, people: Patients, deadline: float, seed: int, think: float
) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        try:
            await visit(recorder, clinic, people, rng, think)
        except Failed:
            await asyncio.sleep(0.1)  # counted already; a new visit


# -- the front desk --------------------------------------------------------------------------------


async def desk_request(recorder: Recorder, clinic: Clinic, rng: random.Random) -> None:
    headers = {"Authorization": f"Bearer {clinic.token}"}
    today = datetime.now(ZONE).date()
    day = (today + timedelta(days=rng.randrange(0, 14))).isoformat()
    roll = rng.random()
    try:
        if roll < 0.30:
            await recorder.call(
                "admin_day",
                "GET",
                "/api/v1/clinics/1/day",
                params={"date": day},
                headers=headers,
                expect={200},
            )
        elif roll < 0.55:
            if rng.random() < 0.7:
                query = {"name": rng.choice(clinic.patient_names)}
            else:
                query = {"mobile": f"07911{rng.randrange(1, SEEDED_PATIENTS):06d}"}
            await recorder.call(
                "admin_search", "GET", "/api/v1/patients", params=query, headers=headers,
                expect={200},
            )  # fmt: skip
        elif roll < 0.80:
            appointment = rng.choice(clinic.movable)
            await recorder.call(
                "admin_appointment", "GET", f"/api/v1/appointments/{appointment}",
                headers=headers, expect={200},
            )  # fmt: skip
        elif roll < 0.92:
            practitioner = rng.choice(clinic.practitioner_ids)
            await recorder.call(
                "admin_schedule", "GET", f"/api/v1/practitioners/{practitioner}/schedule",
                params={"date": day, "view": "week"}, headers=headers, expect={200},
            )  # fmt: skip
        else:
            await _move(recorder, clinic, rng, headers)
    except Failed:
        pass


async def _move(
    recorder: Recorder, clinic: Clinic, rng: random.Random, headers: dict[str, str]
) -> None:
    """The front desk moves a seeded consultation to another free time of its practitioner."""
    appointment_id = rng.choice(clinic.movable)
    _, body, response = await recorder.call(
        "admin_appointment", "GET", f"/api/v1/appointments/{appointment_id}", headers=headers,
        expect={200},
    )  # fmt: skip
    etag = response.headers.get("ETag", "")
    current = json.loads(body)
    if current.get("status") != "booked":
        return
    first = datetime.now(ZONE).date() + timedelta(days=rng.randrange(2, 28))
    _, body, _ = await recorder.call(
        "admin_availability",
        "GET",
        "/api/v1/public/availability",
        params={
            "treatment_id": str(clinic.treatment_ids["consultation"]),
            "practitioner": str(current["practitioner_id"]),
            "from": first.isoformat(),
            "to": (first + timedelta(days=6)).isoformat(),
        },
        headers={"X-Forwarded-For": "192.0.2.10"},  # the desk's own address
        expect={200},
    )
    slots = [s for d in json.loads(body)["days"] for s in d["slots"]]
    if not slots:
        return
    slot = rng.choice(slots)
    status, _, _ = await recorder.call(
        "admin_move",
        "POST",
        f"/api/v1/appointments/{appointment_id}/reschedule",
        json={"starts_at": slot["start"], "reason": "patient asked"},
        headers={**headers, "If-Match": etag},
        # 409: a patient took the time meanwhile; 412: another move of it came first.
        expect={200, 409, 412},
    )
    recorder.result.outcomes["moved" if status == 200 else f"move_{status}"] += 1


async def front_desk(recorder: Recorder, clinic: Clinic, rate: float, deadline: float) -> None:
    """Open loop: a request every 1/rate s whatever the answers' speed, at most ADMIN_IN_FLIGHT
    in flight (a tick finding them all busy is counted, not queued)."""
    rng = random.Random(7)
    slots = asyncio.Semaphore(ADMIN_IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()

    async def one() -> None:
        try:
            await desk_request(recorder, clinic, rng)
        finally:
            slots.release()

    tick = time.monotonic()
    while tick < deadline:
        if slots.locked():
            recorder.result.outcomes["admin_skipped"] += 1
        else:
            await slots.acquire()
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        tick += 1 / rate
        await asyncio.sleep(max(0.0, tick - time.monotonic()))
    if tasks:
        await asyncio.gather(*tasks)


# -- the run -------------------------------------------------------------------------------------


async def _sample_rss(services: Services, result: LoadResult, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        for name, mb in services.rss_mb().items():
            result.rss_mb[name].append(mb)


async def _outbox_counts(url: str, since: datetime) -> tuple[int, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            """
            SELECT count(*) FILTER (WHERE status <> ALL($2::text[]) AND due_at <= now()) AS due,
                   count(*) FILTER (WHERE status IN ('sent', 'delivered')) AS sent
            FROM notification WHERE created_at >= $1
            """,
            since,
            list(FINAL),
        )
        assert row is not None
        return int(row["due"]), int(row["sent"])
    finally:
        await conn.close()


async def _checks(url: str, result: LoadResult) -> None:
    conn = await asyncpg.connect(url)
    try:
        result.overlaps = await conn.fetchval(
            """
            SELECT count(*) FROM appointment a JOIN appointment b
              ON a.practitioner_id = b.practitioner_id AND a.id < b.id AND a.blocked && b.blocked
            WHERE a.status IN ('held', 'booked', 'confirmed', 'checked_in')
              AND b.status IN ('held', 'booked', 'confirmed', 'checked_in')
            """
        )
        # The visits' patients' sessions in the diary: one per session of each booked visit.
        result.stored_sessions = await conn.fetchval(
            """
            SELECT count(*) FROM appointment a JOIN patient p ON p.id = a.patient_id
            WHERE p.mobile LIKE '+447922%' AND a.status = 'booked'
            """
        )
        rows = await conn.fetch(
            """
            SELECT a.status, count(*) FROM appointment a JOIN patient p ON p.id = a.patient_id
            WHERE p.mobile LIKE '+447922%' GROUP BY 1 ORDER BY 1
            """
        )
        result.visitor_appointments = {r["status"]: r["count"] for r in rows}
    finally:
        await conn.close()


async def run_load(
    url: str,
    folder: Path,
    *,
    seconds: float,
    patients: int,
    admin_rate: float,
    think: float = 0.0,
    drain_timeout: float = 120.0,
    rss_every: float = 10.0,
) -> LoadResult:
    """Seed the migrated, empty database at `url`, start the services and the stand-ins, run the
    load for `seconds`, wait (up to `drain_timeout`) until the outbox holds nothing due, and
    stop everything. `think`: the seconds (on average) a patient spends on each page; 0 clicks
    on the moment a page arrives, which saturates the booking process."""
    clinic = await seed(url, today=datetime.now(ZONE).date())
    result = LoadResult(seconds=seconds, patients=patients)
    stand_ins = StandIns()
    await stand_ins.start()
    try:
        async with running_services(url, stand_ins, folder) as services:
            for name, mb in services.rss_mb().items():
                result.rss_mb[name].append(mb)
            since = datetime.now(UTC)
            connector = aiohttp.TCPConnector(limit=patients + ADMIN_IN_FLIGHT)
            timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
            async with aiohttp.ClientSession(
                connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
            ) as http:
                recorder = Recorder(result, http, f"http://127.0.0.1:{services.ports['booking']}")
                people = Patients(random.Random(11))
                started = time.monotonic()
                deadline = started + seconds
                sampler = asyncio.create_task(_sample_rss(services, result, rss_every))
                try:
                    await asyncio.gather(
                        front_desk(recorder, clinic, admin_rate, deadline),
                        *(
                            patient(recorder, clinic, people, deadline, seed, think)
                            for seed in range(patients)
                        ),
                    )
                finally:
                    sampler.cancel()
                result.seconds = time.monotonic() - started
            for name, mb in services.rss_mb().items():
                result.rss_mb[name].append(mb)
            stopped = time.monotonic()
            result.messages_pending, _ = await _outbox_counts(url, since)
            while time.monotonic() - stopped < drain_timeout:
                due, _ = await _outbox_counts(url, since)
                if due == 0:
                    break
                await asyncio.sleep(0.5)
            result.drain_seconds = time.monotonic() - stopped
            dead = services.exited()
            if dead:
                result.errors[f"service exited: {', '.join(dead)}"] += 1
        for name, log in services.logs.items():
            lines = log.read_text(errors="replace").splitlines()
            result.log_problems[name] = sum(
                '"level": "error"' in line
                or '"level": "critical"' in line
                or line.startswith("Traceback")
                for line in lines
            )
        result.messages_sent = len(stand_ins.recorder._items)
        await _checks(url, result)
    finally:
        await stand_ins.stop()
    return result
