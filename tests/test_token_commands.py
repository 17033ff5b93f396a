"""`regimen token list` and `regimen token revoke NAME` as real processes against a real database:
what an operator sees, and never a token or its hash."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import asyncpg

from shared.db.pool import APP_ROLE, create_pool
from shared.store import staff_tokens
from tests.processes import clean_env


def regimen(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(regimen, *args, **env)


def row_of(output: str, name: str) -> str:
    (line,) = [line for line in output.splitlines() if f"  {name}  " in line]
    return line


async def test_list_shows_every_token_with_its_state_and_last_use_but_no_secret(
    db_url: str,
) -> None:
    now = datetime.now(UTC)
    pool = await create_pool(db_url, act_as=APP_ROLE)
    try:
        desk, _ = await staff_tokens.insert(
            pool, name="Reception iPad", role="front_desk", now=now - timedelta(days=3)
        )
        await staff_tokens.authenticate(pool, desk, now=now - timedelta(days=1))
        old, _ = await staff_tokens.insert(
            pool, name="Old laptop", role="clinician", now=now - timedelta(days=400)
        )
        gone, _ = await staff_tokens.insert(
            pool, name="Former locum", role="clinician", now=now - timedelta(days=30)
        )
        await staff_tokens.revoke_by_name(pool, "Former locum", now=now - timedelta(days=2))
        # A name that tries to forge a row of the table or reorder it.
        forged, _ = await staff_tokens.insert(
            pool, name="x\n99  boss  admin\u202e", role="admin", now=now
        )
        hashes = [
            row["h"]
            for row in await pool.fetch("SELECT encode(token_hash, 'hex') h FROM staff_token")
        ]
    finally:
        await pool.close()

    listed = await run("token", "list", DATABASE_URL=db_url)
    assert listed.returncode == 0, listed.stderr
    out = listed.stdout
    assert out.splitlines()[0].split() == [
        "ID", "NAME", "ROLE", "CREATED", "(UTC)", "LAST", "USED", "(UTC)", "STATE",
    ]  # fmt: skip
    used = f"{now - timedelta(days=1):%Y-%m-%d %H:%M}"
    ipad = row_of(out, "Reception iPad")
    assert "front_desk" in ipad and used in ipad
    assert f"active until {now - timedelta(days=3) + timedelta(days=365):%Y-%m-%d %H:%M}" in ipad
    assert "never" in row_of(out, "Old laptop")
    assert f"expired {now - timedelta(days=35):%Y-%m-%d %H:%M}" in row_of(out, "Old laptop")
    assert f"revoked {now - timedelta(days=2):%Y-%m-%d %H:%M}" in row_of(out, "Former locum")
    assert len(out.splitlines()) == 5  # a header and four tokens: the forged name stays one row
    assert "x\\n99  boss  admin\\u202e" in out
    for secret in (desk, old, gone, forged):
        assert secret not in out
    assert not any(value in out for value in hashes)

    # With no age limit, nothing is expired.
    unlimited = await run(
        "token", "list", DATABASE_URL=db_url, REGIMEN_STAFF_TOKEN_MAX_AGE_DAYS="0"
    )
    old_row = row_of(unlimited.stdout, "Old laptop")
    assert old_row.endswith("active")


async def test_revoke_by_name_stops_every_token_of_that_name_and_says_how_many(
    db_url: str,
) -> None:
    for _ in range(2):
        created = await run(
            "token",
            "create",
            "--role",
            "front_desk",
            "--name",
            "Reception iPad",
            DATABASE_URL=db_url,
        )
        assert created.returncode == 0, created.stderr
    kept = await run(
        "token", "create", "--role", "admin", "--name", "Practice manager", DATABASE_URL=db_url
    )
    kept_token = kept.stdout.strip()

    revoked = await run("token", "revoke", "Reception iPad", DATABASE_URL=db_url)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith("revoked 2 tokens named 'Reception iPad' (id 1, 2)")

    pool = await create_pool(db_url, act_as=APP_ROLE)
    try:
        now = datetime.now(UTC)
        states = dict(
            await pool.fetch(
                "SELECT name, bool_and(revoked_at IS NOT NULL) FROM staff_token GROUP BY name"
            )
        )
        assert states == {"Reception iPad": True, "Practice manager": False}
        assert await staff_tokens.authenticate(pool, kept_token, now=now) is not None
        audit = await pool.fetch(
            "SELECT action, entity_id, actor_kind, actor_name FROM audit_log "
            "WHERE entity = 'staff_token' ORDER BY id"
        )
        assert [(r["action"], r["entity_id"]) for r in audit] == [
            ("create", 1), ("create", 2), ("create", 3), ("revoke", 1), ("revoke", 2),
        ]  # fmt: skip
        assert {r["actor_kind"] for r in audit} == {"system"}
        assert {r["actor_name"] for r in audit} == {"regimen token (command line)"}
    finally:
        await pool.close()

    again = await run("token", "revoke", "Reception iPad", DATABASE_URL=db_url)
    assert again.returncode == 0
    assert again.stdout.strip() == (
        "revoked 0 tokens: every token named 'Reception iPad' was already revoked"
    )

    unknown = await run("token", "revoke", "Nobody", DATABASE_URL=db_url)
    assert unknown.returncode == 2
    assert unknown.stdout == ""
    assert unknown.stderr == "regimen: no token is named 'Nobody' (see 'regimen token list')\n"


async def test_token_commands_refuse_an_unmigrated_database_in_one_line(
    empty_db_url: str,
) -> None:
    for args in (("token", "list"), ("token", "revoke", "anyone")):
        result = await run(*args, DATABASE_URL=empty_db_url)
        assert result.returncode == 2
        assert result.stderr == (
            "regimen: DATABASE_URL: the database is not migrated; run 'regimen migrate'\n"
        )
    conn = await asyncpg.connect(empty_db_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('staff_token')") is None
    finally:
        await conn.close()
