"""The scheduler's sweeps. Each one is a small function over the pool and the clock; the
scheduling issues add theirs here (holds expiring, reminders due, no-shows, escalations)."""

from __future__ import annotations

from shared.sweeps import Sweep

DEFAULT_SWEEPS: list[Sweep] = []
