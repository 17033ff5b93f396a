"""The screening questions migration 0013 seeds for clinics that existed before it are the ones a
new clinic gets (shared/domain/screening.DEFAULTS): an edit to one must be made to the other."""

from __future__ import annotations

import re
from pathlib import Path

from shared.domain.screening import DEFAULTS

MIGRATION = Path(__file__).parents[2] / "shared/db/migrations/0015_screening.sql"
ROW = re.compile(
    r"^\s*\('([a-z_]+)', '((?:[^']|'')*)', (NULL(?:::text\[\])?|ARRAY\[[^\]]*\]), (\d+)\)"
)


def _applies(text: str) -> list[str] | None:
    if text.startswith("NULL"):
        return None
    return re.findall(r"'([^']*)'", text)


def test_the_migrations_seed_is_the_same_as_the_defaults() -> None:
    seeded = [
        (m[1], m[2].replace("''", "'"), _applies(m[3]), int(m[4]))
        for line in MIGRATION.read_text().splitlines()
        if (m := ROW.match(line))
    ]
    assert seeded == [(q.code, q.wording, q.applies_to, q.position) for q in DEFAULTS]
    assert len(seeded) == 8
