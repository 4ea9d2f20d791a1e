"""Worker processes for ``server.workers > 1``, so each one drains on SIGTERM like a single process.

hypercorn's own multi-process runner keeps the signals in the parent and only tells workers to stop
accepting; the gateway's drain (``shutdown.Drain``: end what is still open with an error event just
before the grace deadline) never hears of it. This supervisor is the same shape — sockets bound once
in the parent, workers spawned with them — but each worker's shutdown trigger starts the drain.
A worker that dies is replaced while the server runs (unless it died within STARTUP seconds of its
start: then the server stops, rather than loop on a broken start); on SIGTERM/SIGINT the parent sets
the shared stop event, waits the grace period (plus a margin) for the workers, then terminates
stragglers.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from typing import Any

log = logging.getLogger("ccm_gateway.workers")

STOP_POLL = 0.1  # seconds between a worker's looks at the stop event
EXIT_MARGIN = 5.0  # seconds past the grace period before a worker is terminated
STARTUP = 10.0  # a worker that exits sooner than this after its start is a broken start, not a crash


def serve_workers(hc: Any, workers: int, grace: float) -> int:
    """Run ``workers`` processes of the app named by ``hc.application_path``'s module (``asgi.py``
    reads ``CCM_CONFIG``) on the sockets of ``hc.bind``; returns when they have all stopped."""
    ctx = multiprocessing.get_context("spawn")
    sockets = hc.create_sockets()
    stop = ctx.Event()
    processes: dict[BaseProcess, float] = {}  # process → when it started
    stopping = False
    code = 0

    def on_signal(*_: Any) -> None:
        nonlocal stopping
        stopping = True
        stop.set()

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # children inherit "ignore": the parent decides
    try:
        while not stopping:
            while len(processes) < workers:
                process = ctx.Process(target=_worker, kwargs={"hc": hc, "sockets": sockets, "stop": stop,
                                                              "grace": grace}, daemon=True)
                process.start()
                processes[process] = time.monotonic()
            signal.signal(signal.SIGINT, on_signal)
            signal.signal(signal.SIGTERM, on_signal)
            wait([p.sentinel for p in processes])  # a worker exited (a signal only sets the stop event)
            if stopping:
                break
            for process, started in list(processes.items()):
                if not process.is_alive():
                    del processes[process]
                    log.error("worker %s exited with code %s", process.pid, process.exitcode)
                    if time.monotonic() - started < STARTUP:
                        code, stopping = process.exitcode or 1, True
                        stop.set()
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        for process in processes:
            process.join(grace + EXIT_MARGIN)
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(EXIT_MARGIN)
    finally:
        signal.signal(signal.SIGINT, previous)
        for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
            sock.close()
    return code


def _worker(hc: Any, sockets: Any, stop: Event, grace: float) -> None:
    """One worker: the gateway app served on the inherited sockets until the stop event, then drained."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a signal to the whole group: the parent's event decides
    from hypercorn.asyncio.run import worker_serve
    from hypercorn.utils import wrap_app

    from .asgi import app

    async def shutdown_trigger() -> None:
        while not stop.is_set():
            await asyncio.sleep(STOP_POLL)
        app.state.gateway.drain.begin(grace)

    serve = worker_serve(wrap_app(app, hc.wsgi_max_body_size, "asgi"), hc, sockets=sockets,
                         shutdown_trigger=shutdown_trigger)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve)
    else:
        uvloop.run(serve)
