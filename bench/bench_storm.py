"""Issue 15's 08:00 storm: 1,000 clinics in three time zones whose quiet hours held the night's
reminders (100,000 in the issue; see the scale below), released when the clock reaches 08:00
local in each zone in turn.

Real `regimen serve notifier` processes (production mode, two replicas sharing one sender, as
a scaled-out deployment runs them) drain the outbox through the local Twilio stand-in and
aiosmtpd with pacing ON at `SEGMENTS_PER_SECOND`. The processes' clock follows
REGIMEN_DEV_CLOCK_FILE, which the benchmark moves to 08:00 in New York, then Chicago, then
Los Angeles (each zone once the previous one has drained; in real time the zones are an hour
apart, and a scaled rate drains each wave well within that hour).

Printed, per zone and sender: the time from 08:00 local to the last SMS handed to the stand-in,
the segments it sent, and the bound (segments ÷ the paced rate); `storm_drain_vs_pacing_bound`
is the worst sender's drain ÷ bound. During every wave, messages that are not rate-limited are
enqueued at a steady rate (a public booking's confirmation by SMS and by email, which the
planner marks urgent, and a staff booking's confirmation email, which is not urgent but never
paced): `storm_unpaced_wait_p99_ms` is the p99 of their due-to-sent time.

The scale: a US long code sends about one segment a second, which would make one sender's
wave of 30,000 SMS last eight hours. The benchmark paces at `SEGMENTS_PER_SECOND` (50, a
toll-free number's or a small short code's order) and seeds 15,000 held reminders (5,000 a
zone, 4,500 of them SMS) by default, so each wave lasts about 95 s and the whole run about five
minutes, and the rate stays well below what two notifier processes can prepare and send on a
2-core machine: the bound, not the notifier, is what a drain meets. `STORM_REMINDERS=100000`
runs the issue's full storm (90,000 SMS: 30 minutes at 50 segments a second); the rate must
then stay below the notifier's capacity (`STORM_SEGMENTS_PER_SECOND`), or the figure measures
the notifier instead of the pacing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from datetime import time as wall_time
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from bench.bench_notify import FINAL, StandIns, _free_port, _notifier_env, _ready, _spawn
from bench.support import fresh_database, percentile, postgres, report
from services.devkit.recorder import Sent
from shared.sms_segments import segment_count

CLINICS = 1_000
ZONES = ("America/New_York", "America/Chicago", "America/Los_Angeles")
REMINDERS = int(os.environ.get("STORM_REMINDERS", "15000"))
EMAIL_EVERY = 10  # one patient in ten has no SMS consent: their reminder goes by email
SEGMENTS_PER_SECOND = int(os.environ.get("STORM_SEGMENTS_PER_SECOND", "50"))
PROCESSES = 2
SENDER = "+15005550006"
PROBES_PER_SECOND = 6
PROBE_PATIENTS = 6_000


async def _seed(url: str, storm_day: date) -> None:
    """Set-based: clinics, one practitioner and treatment each, patients with consents, one
    booked appointment each in the days after the storm, and its reminder held by quiet hours
    until 08:00 local on `storm_day` (what the notifier's quiet-hours wait leaves behind)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """
            INSERT INTO clinic (name, time_zone, phone, region)
            SELECT 'Clinic ' || n, ($2::text[])[1 + n % 3], '+1202555' || lpad(n::text, 4, '0'),
                   'US'
            FROM generate_series(1, $1) AS n
            """,
            CLINICS,
            list(ZONES),
        )
        await conn.execute(
            "INSERT INTO practitioner (clinic_id, name) SELECT id, 'Dr ' || id FROM clinic"
        )
        await conn.execute(
            "INSERT INTO treatment (clinic_id, code, name, duration_minutes) "
            "SELECT id, 'consultation', 'Consultation', 30 FROM clinic"
        )
        # Patients 1..REMINDERS have a held reminder; the rest are the probes' patients.
        await conn.execute(
            """
            INSERT INTO patient (clinic_id, first_name, last_name, mobile, email, created_at,
                                 updated_at)
            SELECT 1 + n % $2, 'Pat', 'No ' || n, '+1' || (2000000000 + n)::text,
                   'patient' || n || '@example.test', now(), now()
            FROM generate_series(1, $1) AS n
            """,
            REMINDERS + PROBE_PATIENTS,
            CLINICS,
        )
        await conn.execute(
            """
            INSERT INTO patient_consent (patient_id, kind, granted, source, wording_version,
                                         recorded_at)
            SELECT p.id, k, true, 'bench', 'bench', now()
            FROM patient p CROSS JOIN unnest(ARRAY['care_sms', 'care_email']) AS k
            WHERE k = 'care_email' OR p.id % $1 <> 0 OR p.id > $2
            """,
            EMAIL_EVERY,
            REMINDERS,
        )
        # Each practitioner's patients in 30-minute slots from 09:00 local, 16 a day, from the
        # day after the storm.
        await conn.execute(
            """
            INSERT INTO appointment (clinic_id, practitioner_id, treatment_id, patient_id, status,
                                     during, blocked, source, status_changed_at, created_at)
            SELECT c.id, pr.id, t.id, s.id, 'booked', tstzrange(s.at, s.at + interval '30 min'),
                   tstzrange(s.at, s.at + interval '30 min'), 'storm', now(), now()
            FROM (SELECT p.id, p.clinic_id,
                         ((($1::date + (1 + (p.id / $2) / 16)::int) + time '09:00'
                           + ((p.id / $2) % 16) * interval '30 minutes')
                          AT TIME ZONE c.time_zone) AS at
                  FROM patient p JOIN clinic c ON c.id = p.clinic_id) AS s
            JOIN clinic c ON c.id = s.clinic_id
            JOIN practitioner pr ON pr.clinic_id = c.id
            JOIN treatment t ON t.clinic_id = c.id
            """,
            storm_day,
            CLINICS,
        )
        await conn.execute(
            """
            INSERT INTO notification (clinic_id, patient_id, appointment_id, kind, channel,
                template, context, appointment_version, due_at, expires_at, dedupe_key,
                created_at, updated_at)
            SELECT a.clinic_id, a.patient_id, a.id, 'reminder_24h',
                   CASE WHEN a.patient_id % $3 = 0 THEN 'email' ELSE 'sms' END, 'reminder_24h',
                   jsonb_build_object('starts_at', lower(a.during)), a.version,
                   ($1::date + time '08:00') AT TIME ZONE c.time_zone, lower(a.during),
                   'storm:' || array_position($4::text[], c.time_zone) || ':' || a.id,
                   now(), now()
            FROM appointment a JOIN clinic c ON c.id = a.clinic_id
            WHERE a.patient_id <= $2
            """,
            storm_day,
            REMINDERS,
            EMAIL_EVERY,
            list(ZONES),
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def _probe(
    conn: asyncpg.Connection, n: int, zone_index: int, patient: int, clock_now: datetime
) -> None:
    """One message that is not rate-limited, due now: a public booking's confirmation (urgent)
    by SMS or email, or a staff booking's confirmation email (not urgent, never paced)."""
    kind = n % 3
    channel = "sms" if kind == 0 else "email"
    urgent = kind != 2
    await conn.execute(
        """
        INSERT INTO notification (clinic_id, patient_id, appointment_id, kind, channel, template,
            context, appointment_version, due_at, expires_at, dedupe_key, urgent, created_at,
            updated_at)
        SELECT a.clinic_id, a.patient_id, a.id, 'booking_confirmation', $2, 'booking_confirmation',
               jsonb_build_object('starts_at', lower(a.during), 'appointment_ids',
                                  jsonb_build_array(a.id)),
               a.version, $3, lower(a.during), 'probe:' || $4, $5, $3, $3
        FROM appointment a WHERE a.patient_id = $1
        """,
        patient,
        channel,
        clock_now,
        f"{zone_index}:{n}",
        urgent,
    )


def _write_offset(path: Path, seconds: float) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{seconds:.6f}")
    tmp.replace(path)  # the processes never read half a number


async def _left(conn: asyncpg.Connection, pattern: str) -> int:
    left = await conn.fetchval(
        "SELECT count(*) FROM notification WHERE dedupe_key LIKE $1 "
        "AND NOT status = ANY($2::text[])",
        pattern,
        list(FINAL),
    )
    return int(left)


def _drain(items: list[Sent], offset: timedelta, eight: datetime) -> dict[str, dict[str, float]]:
    """Per sender: seconds from 08:00 local to its last SMS, its segments, its peak second."""
    by_sender: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    for item in items:
        if item.channel == "sms":
            by_sender[item.sender].append((item.at + offset, segment_count(item.body)))
    found: dict[str, dict[str, float]] = {}
    for sender, sends in by_sender.items():
        sends.sort()
        # The most segments handed over within any one second (a burst would show here).
        peak, start, window = 0, 0, 0
        for at, segments in sends:
            window += segments
            while sends[start][0] <= at - timedelta(seconds=1):
                window -= sends[start][1]
                start += 1
            peak = max(peak, window)
        found[sender] = {
            "drain_s": (sends[-1][0] - eight).total_seconds(),
            "messages": float(len(sends)),
            "segments": float(sum(s for _, s in sends)),
            "peak": float(peak),
        }
    return found


async def run(server: object) -> None:
    stand_ins = StandIns()
    await stand_ins.start()
    storm_day = datetime.now(UTC).date() + timedelta(days=2)
    worst = 0.0
    waits: list[float] = []
    try:
        async with fresh_database(server) as url:  # type: ignore[arg-type]
            started = time.perf_counter()
            await _seed(url, storm_day)
            print(
                f"# seeded {CLINICS} clinics in {len(ZONES)} zones, {REMINDERS} held reminders "
                f"(one in {EMAIL_EVERY} by email) in {time.perf_counter() - started:.1f} s; "
                f"pacing {SEGMENTS_PER_SECOND} segments/s, {PROCESSES} notifier processes"
            )
            with tempfile.TemporaryDirectory() as folder:
                clock_file = Path(folder) / "clock"
                night = datetime.combine(storm_day, wall_time(5), tzinfo=UTC)  # 00:00 in NY
                _write_offset(clock_file, (night - datetime.now(UTC)).total_seconds())
                env = _notifier_env(url, 0, stand_ins.twilio_url, stand_ins.smtp_port)
                env.update(
                    {
                        "REGIMEN_SMS_SEGMENTS_PER_SECOND": str(SEGMENTS_PER_SECOND),
                        "REGIMEN_DEV_CLOCK_FILE": str(clock_file),
                        "REGIMEN_TWILIO_FROM": SENDER,
                    }
                )
                ports = [_free_port() for _ in range(PROCESSES)]
                children = [
                    _spawn(
                        [sys.executable, "-m", "services.cli", "serve", "notifier"]
                        + ["--host", "127.0.0.1"],
                        {**env, "REGIMEN_NOTIFIER_PORT": str(port)},
                        Path(folder) / f"notifier-{port}.log",
                    )
                    for port in ports
                ]
                conn = await asyncpg.connect(url)
                try:
                    for port in ports:
                        await _ready(port)
                    for index, zone in enumerate(ZONES, start=1):
                        figures, zone_waits = await _wave(
                            conn, stand_ins, clock_file, storm_day, index, zone
                        )
                        waits += zone_waits
                        for sender, f in figures.items():
                            bound = f["segments"] / SEGMENTS_PER_SECOND
                            ratio = f["drain_s"] / bound
                            worst = max(worst, ratio)
                            print(
                                f"# {zone} sender {sender}: {f['messages']:.0f} SMS "
                                f"({f['segments']:.0f} segments) drained {f['drain_s']:.1f} s "
                                f"after 08:00 local; bound {bound:.1f} s; ratio {ratio:.3f}; "
                                f"peak {f['peak']:.0f} segments in one second "
                                f"(rate {SEGMENTS_PER_SECOND})"
                            )
                    statuses = await conn.fetch(
                        "SELECT split_part(dedupe_key, ':', 1) AS what, status, count(*) "
                        "FROM notification GROUP BY 1, 2 ORDER BY 1, 2"
                    )
                finally:
                    await conn.close()
                    for child in children:
                        child.send_signal(signal.SIGTERM)
                    for child in children:
                        await asyncio.to_thread(child.wait, 20)
            print("# statuses: " + ", ".join(f"{r[0]} {r[1]} {r[2]}" for r in statuses))
            print(f"# stand-ins received {stand_ins.duplicates()} messages twice")
        report("storm_drain_vs_pacing_bound", worst, "ratio")
        report("storm_unpaced_wait_p50_ms", percentile(waits, 0.5), "ms")
        report("storm_unpaced_wait_p99_ms", percentile(waits, 0.99), "ms")
    finally:
        await stand_ins.stop()


async def _wave(
    conn: asyncpg.Connection,
    stand_ins: StandIns,
    clock_file: Path,
    storm_day: date,
    index: int,
    zone: str,
) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Move the processes' clock to 08:00 in `zone`, probe until its reminders have all gone."""
    eight = datetime.combine(storm_day, wall_time(8), tzinfo=ZoneInfo(zone))
    # Probe patients of clinics in the zone whose 08:00 it is (open hours there).
    patients = [
        r["id"]
        for r in await conn.fetch(
            "SELECT p.id FROM patient p JOIN clinic c ON c.id = p.clinic_id "
            "WHERE p.id > $1 AND c.time_zone = $2 ORDER BY p.id",
            REMINDERS,
            zone,
        )
    ]
    first_item = len(stand_ins.recorder._items)
    offset = eight - datetime.now(UTC)
    _write_offset(clock_file, offset.total_seconds())
    began = time.perf_counter()
    probes = 0
    while True:
        patient = patients[probes % len(patients)]
        await _probe(conn, probes, index, patient, datetime.now(UTC) + offset)
        probes += 1
        if probes % PROBES_PER_SECOND == 0 and not await _left(conn, f"storm:{index}:%"):
            break
        await asyncio.sleep(max(0.0, began + probes / PROBES_PER_SECOND - time.perf_counter()))
    # The last probes, enqueued just before the last reminder went, have yet to go.
    while True:
        if not await _left(conn, f"probe:{index}:%"):
            break
        await asyncio.sleep(0.05)
    rows = await conn.fetch(
        "SELECT extract(epoch FROM sent_at - due_at) * 1000 AS ms, channel, urgent "
        "FROM notification WHERE dedupe_key LIKE $1",
        f"probe:{index}:%",
    )
    unsent = [r for r in rows if r["ms"] is None]
    for channel, urgent, what in (
        ("sms", True, "public booking confirmations by SMS (urgent)"),
        ("email", True, "public booking confirmations by email (urgent)"),
        ("email", False, "staff booking confirmations by email (not urgent)"),
    ):
        ms = [
            float(r["ms"])
            for r in rows
            if r["ms"] is not None and r["channel"] == channel and r["urgent"] == urgent
        ]
        if ms:
            print(
                f"# {zone}: {what}: wait p50 {percentile(ms, 0.5):.0f} ms, "
                f"p99 {percentile(ms, 0.99):.0f} ms, max {max(ms):.0f} ms"
            )
    emails = await conn.fetchval(
        "SELECT extract(epoch FROM max(sent_at) - $2) FROM notification "
        "WHERE dedupe_key LIKE $1 AND channel = 'email'",
        f"storm:{index}:%",
        eight,
    )
    print(
        f"# {zone}: {probes} unpaced probes ({len(unsent)} not sent); the email reminders "
        f"drained {float(emails or 0):.1f} s after 08:00 local"
    )
    # The same peak by the notifiers' own record (each attempt begins just before its call), to
    # tell a burst the notifiers made from arrivals the stand-in's event loop bunched up.
    starts = [
        r["started_at"]
        for r in await conn.fetch(
            "SELECT a.started_at FROM notification_attempt a "
            "JOIN notification n ON n.id = a.notification_id "
            "WHERE n.channel = 'sms' AND (n.dedupe_key LIKE $1 OR n.dedupe_key LIKE $2) "
            "ORDER BY 1",
            f"storm:{index}:%",
            f"probe:{index}:%",
        )
    ]
    peak, start = 0, 0
    for i, at in enumerate(starts):
        while starts[start] <= at - timedelta(seconds=1):
            start += 1
        peak = max(peak, i - start + 1)
    print(f"# {zone}: peak SMS attempts begun within one second, by the notifiers' clock: {peak}")
    items = [i for i in stand_ins.recorder._items[first_item:]]
    return _drain(items, offset, eight), [float(r["ms"]) for r in rows if r["ms"] is not None]


def main() -> None:
    started = datetime.now(UTC)
    with postgres() as server:
        asyncio.run(run(server))
    print(f"# storm benchmark took {(datetime.now(UTC) - started).total_seconds():.0f} s")


if __name__ == "__main__":
    main()
