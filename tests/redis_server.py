"""A real ``redis-server`` on a free loopback port, started and stopped by the tests (bounded waits)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading

from .servers import free_port


class RedisServer:
    """``redis-server`` without persistence on 127.0.0.1; ``kill()`` and ``start()`` again on the same
    port simulate an outage and a recovery."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server); .ci/run installs it")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(int(timeout / 0.02)):
            if self.ping():
                return self
            if self.proc.poll() is not None:
                break
            threading.Event().wait(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """Stop at once (SIGKILL), as a crash would, and wait (bounded) until it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
