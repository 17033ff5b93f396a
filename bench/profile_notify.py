"""Profile one notifier process draining 10,000 messages (issue 11): the process runs under
py-spy, and this prints the functions that take the most time and the database round trips per
message (from pg_stat_database: every statement the notifier makes is its own transaction).
Run: `.venv/bin/python -m bench.profile_notify [out.txt]` (py-spy comes with the bench extras;
out.txt keeps py-spy's raw stacks)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from bench import bench_notify
from bench.support import fresh_database, postgres

MESSAGES = bench_notify.MESSAGES


async def _run(server: object, out: Path) -> None:
    stand_ins = bench_notify.StandIns()
    await stand_ins.start()
    try:
        async with fresh_database(server) as url:  # type: ignore[arg-type]
            await bench_notify._seed(url, MESSAGES)
            port = bench_notify._free_port()
            env = bench_notify._notifier_env(url, port, stand_ins.twilio_url, stand_ins.smtp_port)
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            with tempfile.TemporaryDirectory() as folder:
                raw = Path(folder) / "profile.txt"
                child = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
                    [
                        spy,
                        "record",
                        "--format",
                        "raw",
                        "-o",
                        str(raw),
                        "--rate",
                        "200",
                        "--",
                        sys.executable,
                        "-m",
                        "services.cli",
                        "serve",
                        "notifier",
                        "--host",
                        "127.0.0.1",
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    await bench_notify._ready(port)
                    conn = await asyncpg.connect(url)
                    try:
                        calls_before = await _statement_calls(conn)
                        started = time.perf_counter()
                        await bench_notify._enqueue(conn, 1, MESSAGES, "profile")
                        await bench_notify._wait_final(conn, "profile", MESSAGES)
                        elapsed = time.perf_counter() - started
                        calls_after = await _statement_calls(conn)
                    finally:
                        await conn.close()
                finally:
                    child.send_signal(2)
                    await asyncio.to_thread(child.wait, 60)
                print(f"# drained {MESSAGES} in {elapsed:.1f} s: {MESSAGES / elapsed:.0f}/s")
                if calls_before is not None and calls_after is not None:
                    per = (calls_after - calls_before) / MESSAGES
                    print(f"# database round trips (transactions) per message: {per:.2f}")
                _top(raw)
                if out.suffix == ".txt":
                    shutil.copy(raw, out)
    finally:
        await stand_ins.stop()


async def _statement_calls(conn: asyncpg.Connection) -> int | None:
    """Transactions the database has committed or rolled back: a statement outside a
    transaction is one, so for the notifier (whose statements are all single) this counts its
    round trips, with the statistics collector's delay."""
    await asyncio.sleep(1.0)  # let the statistics catch up
    value = await conn.fetchval(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database "
        "WHERE datname = current_database()"
    )
    return None if value is None else int(value)


# Frames where a thread waits rather than works (py-spy cannot always tell).
IDLE = ("EpollSelector.select", "_worker (concurrent/futures/thread.py:81)")


def _top(raw: Path, count: int = 25) -> None:
    """Self and total time per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        weight = int(n)
        samples += weight
        frames = stack.split(";")
        if any(idle in frames[-1] for idle in IDLE):
            continue
        own[frames[-1]] = own.get(frames[-1], 0) + weight
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + weight
    print(f"# {samples} busy samples; top by own time:")
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:count]:
        print(f"#  {100 * n / samples:5.1f}%  {frame}")
    print("# top by total time (project code):")
    ours = [(f, n) for f, n in total.items() if "(services/" in f or "(shared/" in f]
    for frame, n in sorted(ours, key=lambda kv: -kv[1])[:count]:
        print(f"#  {100 * n / samples:5.1f}%  {frame}")


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("notify-profile.txt")
    with postgres() as server:
        asyncio.run(_run(server, out))


if __name__ == "__main__":
    main()
