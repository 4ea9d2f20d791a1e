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
import os
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
            # A signal handler does not interrupt wait(), so it polls: a worker exited, or the stop came.
            while not stopping and not wait([p.sentinel for p in processes], timeout=STOP_POLL):
                pass
            if stopping:
                break
            for process, started in list(processes.items()):
                if not process.is_alive():
                    del processes[process]
                    log.error("worker %s exited with code %s", process.pid, process.exitcode)
                    _forget_metrics(process.pid)
                    if time.monotonic() - started < STARTUP:
                        code, stopping = process.exitcode or 1, True
                        stop.set()
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        deadline = time.monotonic() + grace + EXIT_MARGIN  # one deadline for all of them, not one each
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(EXIT_MARGIN)
    finally:
        signal.signal(signal.SIGINT, previous)
        for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
            sock.close()
    return code


def _forget_metrics(pid: int | None) -> None:
    """A crashed worker never marked its multi-process metric files dead: its live gauges (in-flight
    requests) would count forever."""
    if pid is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def _worker(hc: Any, sockets: Any, stop: Event, grace: float) -> None:
    """One worker: the gateway app served on the inherited sockets until the stop event, then drained."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a signal to the whole group: the parent's event decides
    from hypercorn.asyncio.run import worker_serve
    from hypercorn.utils import wrap_app

    from .asgi import app

    parent = multiprocessing.parent_process()

    async def shutdown_trigger() -> None:
        # The parent's stop event, or the parent gone (killed): a worker never outlives its supervisor.
        while not stop.is_set() and (parent is None or parent.is_alive()):
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
