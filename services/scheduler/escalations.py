"""The alert escalation sweep: an open staff alert nobody acknowledged in time goes to the next
person on the clinic's escalation list, and at the end of the list becomes exhausted and the
clinic admins are told (shared/domain/alerts.py says who and how).

It also counts the open or exhausted alerts that reached nobody (no care team, no rota, no
list): shown as the scheduler's `regimen_staff_alerts_unrouted` gauge and `/readyz` detail
`staff_alerts_unrouted` (`install_unrouted_warning`), for an operator's alert rule, since such an
alert is otherwise only seen in the admin API.
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from aiohttp import web
from prometheus_client import Gauge

from shared.clock import Clock
from shared.db.transactions import in_transaction
from shared.domain import alerts
from shared.store import staff_alerts
from shared.sweeps import Sweep
from shared.web import READY_DETAILS, REGISTRY

NAME = "escalate-alerts"
INTERVAL = timedelta(minutes=1)
# Alerts decided per transaction.
BATCH = 50

# The last count, by this process's last sweep (every replica counts the same rows).
_unrouted: dict[str, int | None] = {"count": None}


def install_unrouted_warning(app: web.Application) -> None:
    """The gauge on the app's registry and the /readyz detail."""
    gauge = Gauge(
        "regimen_staff_alerts_unrouted",
        "Open or exhausted staff alerts that no message reached (nobody to alert is configured)",
        registry=app[REGISTRY],
    )
    gauge.set_function(lambda: float(_unrouted["count"] or 0))
    app[READY_DETAILS].append(lambda: {"staff_alerts_unrouted": _unrouted["count"]})


async def escalate_due(pool: asyncpg.Pool, clock: Clock) -> int:
    """Escalate every open alert whose time has come; returns how many were moved on.

    Replicas: a row claim. Each batch locks the due alerts with FOR UPDATE SKIP LOCKED and moves
    them on in the same transaction (a new escalate_at, or exhausted), so an alert another
    replica holds is skipped and, once that commits, is no longer due: each alert escalates once
    per step however many replicas sweep. Acknowledging takes the same row lock, so an alert is
    never escalated after its acknowledgement commits. The outbox rows' dedupe keys (alert, step,
    member, channel) would refuse a second copy anyway."""
    now = clock.now()

    async def batch(conn: asyncpg.Connection) -> int:
        due = await staff_alerts.lock_due(conn, now=now, limit=BATCH)
        for alert in due:
            await alerts.escalate(conn, alert, now=now)
        return len(due)

    total = 0
    while True:
        moved = await in_transaction(pool, batch)
        total += moved
        if moved < BATCH:
            break
    _unrouted["count"] = await staff_alerts.count_unrouted(pool)
    return total


ESCALATE_ALERTS = Sweep(NAME, INTERVAL, escalate_due)
