"""Real servers on loopback ports for tests: hypercorn serving an ASGI app in a background thread."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """Serves ``app`` with real hypercorn on 127.0.0.1 until ``stop()``; lifespan included."""

    def __init__(self, app: Any, graceful_timeout: float = 2.0) -> None:
        self.app = app
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._config = HypercornConfig()
        self._config.bind = [f"127.0.0.1:{self.port}"]
        self._config.graceful_timeout = graceful_timeout
        self._config.accesslog = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> ServerThread:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._stop = asyncio.Event()
            loop.call_soon(ready.set)
            loop.run_until_complete(serve(self.app, self._config, shutdown_trigger=self._stop.wait))
            loop.close()

        self._thread = threading.Thread(target=run, name=f"hypercorn-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("server thread did not start")
        self._wait_listening(timeout)
        return self

    def _wait_listening(self, timeout: float) -> None:
        for _ in range(int(timeout / 0.02)):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                threading.Event().wait(0.02)
        raise RuntimeError(f"nothing listening on port {self.port}")

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the server's event loop (where its sessions live) and wait for it."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_gateway_process(
    *args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None, output: bool = True
) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m ccm_gateway serve --port <free> *args`` as users run it, once /health answers.
    Provider keys and ``CCM_*`` overrides of the test run's own environment are not passed on."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("CCM_")}
    sink = subprocess.PIPE if output else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccm_gateway", "serve", "--port", str(port), *args], env={**clean, **(env or {})},
        cwd=cwd, stdout=sink, stderr=subprocess.STDOUT if output else subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):  # up to ~20 s for the interpreter and hypercorn to come up
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode() if proc.stdout else "gateway exited")
        try:
            if httpx.get(base + "/health", timeout=0.5).status_code == 200:
                return proc, base
        except httpx.TransportError:
            threading.Event().wait(0.1)
    proc.kill()
    raise AssertionError("gateway did not come up")
