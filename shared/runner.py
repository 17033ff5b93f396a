"""Run aiohttp applications until SIGINT or SIGTERM, then stop them within the time limit.

On a signal the listening sockets close first (no new work), requests in flight get a few seconds
to finish, then each app's cleanup contexts run (sweeps finish their transaction, pools close).
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

# Requests in flight get this long; cleanup contexts get the rest of the 10 s a supervisor allows.
SHUTDOWN_TIMEOUT = 4.0


@dataclass
class Served:
    app: web.Application
    host: str
    port: int


def tune_garbage_collector() -> None:
    """Requests allocate thousands of short-lived objects (a month of free slots); with CPython's
    default thresholds the full collections they trigger rescan every long-lived object (modules,
    schemas, the SDKs) and put tens of milliseconds on the slowest requests. Freezing what
    start-up built and collecting young objects less often removes that tail."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


async def start(served: list[Served]) -> list[web.AppRunner]:
    runners: list[web.AppRunner] = []
    try:
        for item in served:
            runner = web.AppRunner(item.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, item.host, item.port).start()
    except BaseException:
        await stop(runners)
        raise
    tune_garbage_collector()
    return runners


async def stop(runners: list[web.AppRunner]) -> None:
    for runner in reversed(runners):
        await runner.cleanup()


async def wait_for_signal() -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def serve_until_signal(
    served: list[Served], on_started: Callable[[], Awaitable[None]] | None = None
) -> None:
    runners = await start(served)
    try:
        if on_started is not None:
            await on_started()
        await wait_for_signal()
    finally:
        await stop(runners)
