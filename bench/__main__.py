"""`make bench`: run every `bench/bench_*.py` module's `main()`; each prints `BENCH name value unit`
lines. Benchmarks start their own PostgreSQL (DATABASE_URL if set, else embedded)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(selected: list[str]) -> int:
    folder = Path(__file__).parent
    names = sorted(
        m.name for m in pkgutil.iter_modules([str(folder)]) if m.name.startswith("bench_")
    )
    if selected:
        names = [n for n in names if any(s in n for s in selected)]
    for name in names:
        print(f"== {name}", flush=True)
        importlib.import_module(f"bench.{name}").main()
    if not names:
        print("no benchmarks matched")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
