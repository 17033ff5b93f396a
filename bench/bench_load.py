"""Issue 14's load figures: 50 patients at once through the booking pages for five minutes,
beside the admin API at 10 requests a second and the notifier sending (bench/load.py has the
run). `make load` runs the full five minutes; `make bench` (and `python -m bench load`) a
shorter 60 s run with the same patients and rate.

    python -m bench.bench_load --seconds 300 --patients 50 --admin-rate 10
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.load import run_load
from bench.support import BenchServer, fresh_database, postgres, report

BENCH_SECONDS = 60  # `make bench`: long enough for every figure, short beside the others


async def _run(
    server: BenchServer,
    seconds: float,
    patients: int,
    admin_rate: float,
    think: float,
    logs: Path | None,
) -> None:
    async with fresh_database(server) as url:
        with tempfile.TemporaryDirectory(prefix="regimen-load-") as temporary:
            folder = logs or Path(temporary)
            folder.mkdir(parents=True, exist_ok=True)
            result = await run_load(
                url, folder, seconds=seconds, patients=patients, admin_rate=admin_rate, think=think
            )
            if result.error_count or any(result.log_problems.values()):
                for name in ("booking", "scheduler", "notifier"):
                    tail = (folder / f"{name}.log").read_text(errors="replace")[-3000:]
                    print(f"# {name} log (end):\n{tail}")
    for line in result.comments():
        print(f"# {line}")
    for name, value, unit in result.report_lines():
        report(name, value, unit)


def main(argv: Sequence[str] = ()) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_load", description=__doc__)
    parser.add_argument("--seconds", type=float, default=BENCH_SECONDS)
    parser.add_argument("--patients", type=int, default=50)
    parser.add_argument("--admin-rate", type=float, default=10.0, help="admin requests a second")
    parser.add_argument(
        "--think", type=float, default=0.0, help="seconds a patient reads each page (0: none)"
    )
    parser.add_argument("--logs", type=Path, help="keep the services' logs in this folder")
    args = parser.parse_args(list(argv))
    with postgres() as server:
        asyncio.run(
            _run(server, args.seconds, args.patients, args.admin_rate, args.think, args.logs)
        )


if __name__ == "__main__":
    main(sys.argv[1:])
