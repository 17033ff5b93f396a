"""Helpers for the tests that run `regimen serve notifier` (and `serve booking`) as real processes
in production mode against the benchmark's stand-ins (bench/bench_notify.py: Twilio stand-in and
a counting SMTP sink): starting, killing and restarting a process, waiting for the outbox to
settle, reminders on one channel, a slow SMTP server, and counting what arrived twice."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import asyncpg
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.bench_notify import FINAL, CountingHandler, StandIns, _notifier_env, _ready
from services.devkit.recorder import Recorder
from services.devkit.smtp_sink import start_smtp_server
from tests.processes import free_port, start_regimen

Channel = Literal["sms", "email"]


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


async def ready(port: int, log: Path) -> None:
    """Wait for /readyz to answer 200 (migrations applied, database reachable)."""
    try:
        await _ready(port)
    except RuntimeError as exc:
        raise AssertionError(f"{exc}:\n{tail(log)}") from None


@dataclass
class Service:
    """One `regimen serve <name>` that may be killed and started again; each run logs to its
    own file in `folder`."""

    name: str
    env: dict[str, str]
    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0

    @property
    def log(self) -> Path:
        return self.folder / f"{self.name}-{self.runs}.log"

    async def start(self) -> None:
        self.runs += 1
        self.process = start_regimen(
            ["serve", self.name, "--host", "127.0.0.1"], self.env, self.log
        )
        try:
            await ready(self.port, self.log)
        except AssertionError:
            await self.kill()
            raise

    async def kill(self) -> None:
        """SIGKILL: no drain, no handing back; whatever was in flight is cut off."""
        await self._end(signal.SIGKILL)

    async def stop(self) -> None:
        await self._end(signal.SIGTERM)

    async def _end(self, sig: int) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        # In a thread: the stand-ins live on this loop and must keep answering meanwhile.
        await asyncio.to_thread(process.wait, 15)


def notifier(url: str, stand_ins: StandIns, folder: Path, **settings: str) -> Service:
    """A production-mode notifier against the stand-ins (bench's settings: rate limit off, pool
    of 20), with `settings` (REGIMEN_* names) on top."""
    port = free_port()
    env = _notifier_env(url, port, stand_ins.twilio_url, stand_ins.smtp_port)
    env.update(settings)
    return Service("notifier", env, port, folder)


def booking(url: str, stand_ins: StandIns, folder: Path) -> Service:
    """A production-mode booking service on the same database (its own ports)."""
    port = free_port()
    env = _notifier_env(url, free_port(), stand_ins.twilio_url, stand_ins.smtp_port)
    env.update(REGIMEN_BOOKING_PORT=str(port), REGIMEN_BOOKING_METRICS_PORT=str(free_port()))
    return Service("booking", env, port, folder)


async def start_stand_ins() -> StandIns:
    stand_ins = StandIns()
    await stand_ins.start()
    return stand_ins


async def stand_ins_with_slow_smtp(delay: float) -> tuple[StandIns, SlowSmtpHandler]:
    """bench's stand-ins, but the SMTP server takes `delay` seconds to answer each message."""
    stand_ins = await start_stand_ins()
    handler = SlowSmtpHandler(stand_ins.recorder, delay)
    stand_ins.smtp.close()
    await stand_ins.smtp.wait_closed()
    stand_ins.smtp = await start_smtp_server(handler, "127.0.0.1", 0)
    stand_ins.smtp_port = stand_ins.smtp.sockets[0].getsockname()[1]
    return stand_ins, handler


class ThreadedSmtp:
    """bench's counting SMTP server on a thread and event loop of its own, as a mail server on
    another machine would be: when it accepts a message does not depend on this test's loop,
    which is also the one that kills the notifier (served in-loop, a busy moment of the test
    lets several acceptances pile up and then land together just before a kill)."""

    def __init__(self, handler: CountingHandler) -> None:
        self.port = free_port()
        self.controller = Controller(
            handler, hostname="127.0.0.1", port=self.port, server_hostname="regimen.localhost"
        )
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()

    async def wait_closed(self) -> None:
        return None


async def stand_ins_with_threaded_smtp() -> StandIns:
    stand_ins = await start_stand_ins()
    stand_ins.smtp.close()
    await stand_ins.smtp.wait_closed()
    threaded = ThreadedSmtp(CountingHandler(stand_ins.recorder))
    stand_ins.smtp = threaded
    stand_ins.smtp_port = threaded.port
    return stand_ins


async def until(check: Callable[[], bool], *, within: float) -> bool:
    """Poll `check` until it holds (True) or `within` seconds pass (False: the caller asserts
    what it found, which says more than a timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


class SlowSmtpHandler(CountingHandler):
    """An SMTP server that takes `delay` seconds to answer 250 to each message (a congested or
    greylisting relay). `arrived` counts the messages it has started to receive."""

    def __init__(self, recorder: Recorder, delay: float) -> None:
        super().__init__(recorder)
        self.delay = delay
        self.arrived = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.arrived += 1
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)  # records the 250's time


@dataclass(frozen=True)
class Queued:
    notification_id: int
    channel: Channel
    to: str  # the patient's mobile or email address
    due_at: datetime


async def enqueue(conn: asyncpg.Connection, channel: Channel, count: int, tag: str) -> list[Queued]:
    """`count` 24-hour reminders on `channel` due now (as bench's _enqueue writes them), for
    seeded appointments that have no message yet."""
    rows = await conn.fetch(
        """
        WITH picked AS (
            SELECT a.* FROM appointment a
            WHERE a.source = 'bench'
              AND NOT EXISTS (SELECT 1 FROM notification n WHERE n.appointment_id = a.id)
            ORDER BY a.id LIMIT $2
        ), queued AS (
            INSERT INTO notification (clinic_id, patient_id, appointment_id, kind, channel,
                template, context, appointment_version, due_at, expires_at, dedupe_key,
                created_at, updated_at)
            SELECT 1, a.patient_id, a.id, 'reminder_24h', $1, 'reminder_24h',
                   jsonb_build_object('starts_at', lower(a.during)), a.version, now(),
                   lower(a.during), $3 || ':' || a.id, now(), now()
            FROM picked a
            RETURNING id, patient_id, due_at
        )
        SELECT q.id, q.due_at, CASE WHEN $1 = 'sms' THEN p.mobile ELSE p.email END AS address
        FROM queued q JOIN patient p ON p.id = q.patient_id ORDER BY q.id
        """,
        channel,
        count,
        tag,
    )
    assert len(rows) == count, f"only {len(rows)} seeded appointments left for {count} messages"
    return [Queued(r["id"], channel, r["address"], r["due_at"]) for r in rows]


async def statuses(conn: asyncpg.Connection) -> Counter[str]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM notification GROUP BY 1")
    return Counter({r["status"]: r["n"] for r in rows})


async def settle(conn: asyncpg.Connection, *, within: float) -> Counter[str]:
    """Wait (polling) until every notification is final or `within` seconds have passed; the
    statuses then, final or not (the caller asserts)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        found = await statuses(conn)
        if all(status in FINAL for status in found) or loop.time() > deadline:
            return found
        await asyncio.sleep(0.1)


@dataclass
class Arrivals:
    """What the stand-ins received, for one address: SMS created at Twilio (bodies) and emails
    accepted by the SMTP server (Message-IDs with the time of each 250)."""

    sms: list[str] = field(default_factory=list)
    emails: dict[str, list[datetime]] = field(default_factory=dict)


def arrivals(stand_ins: StandIns) -> dict[str, Arrivals]:
    by_address: dict[str, Arrivals] = {}
    for message in stand_ins.twilio.messages.values():
        by_address.setdefault(message.to, Arrivals()).sms.append(message.body)
    for item in stand_ins.recorder._items:  # every arrival, not the de-duplicated view
        if item.channel == "email":
            times = by_address.setdefault(item.to, Arrivals()).emails.setdefault(item.id, [])
            times.append(item.at)
    return by_address


def sms_created_twice(stand_ins: StandIns) -> int:
    """Messages Twilio created more than once: the same body to the same number."""
    seen = Counter((m.to, m.body) for m in stand_ins.twilio.messages.values())
    return sum(n - 1 for n in seen.values())


def emails_delivered_twice(stand_ins: StandIns) -> int:
    """Emails the SMTP server accepted more than once (the same Message-ID)."""
    seen = Counter(i.id for i in stand_ins.recorder._items if i.channel == "email")
    return sum(n - 1 for n in seen.values())


def lags(queued: list[Queued], stand_ins: StandIns) -> dict[int, float | None]:
    """Seconds from due to arrival at the provider for each queued message (None: not there;
    for a message that arrived twice, the first arrival)."""
    found = arrivals(stand_ins)
    twilio_at: dict[str, list[datetime]] = {}
    for message in stand_ins.twilio.messages.values():
        twilio_at.setdefault(message.to, []).append(message.date_created)
    result: dict[int, float | None] = {}
    for item in queued:
        if item.channel == "sms":
            times = twilio_at.get(item.to, [])
        else:
            times = [t for ts in found.get(item.to, Arrivals()).emails.values() for t in ts]
        result[item.notification_id] = (min(times) - item.due_at).total_seconds() if times else None
    return result
