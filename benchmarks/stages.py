"""CPU per request of the gateway's stage chain, in process, with a fake endpoint instead of the upstream.

The full benchmark measures the whole server against a bare proxy, and on a shared two-core machine its
ratios move by more than the stages cost. This measures only what the stages add: the same app built
from the benchmark's gateway config (every stage on, or the core stages only), its chat route answered
by an endpoint that does what a pass-through answer does to the Exchange (usage, status, deployment)
and sends a small JSON answer. Process CPU time over many requests, best of a few rounds.

    python -m benchmarks.stages [--requests 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import msgspec

from ccm_gateway.app import create_app
from ccm_gateway.config import load_config
from ccm_gateway.exchange import exchange_of

from .runner import BENCH_KEY, gateway_config

_ANSWER = msgspec.json.encode({
    "id": "chatcmpl-1", "object": "chat.completion", "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
})
_START = {"type": "http.response.start", "status": 200,
          "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_ANSWER)).encode())]}


async def fake_chat(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """What a pass-through JSON answer leaves on the Exchange, without the network."""
    ex = exchange_of(scope)
    assert ex is not None
    head = ex.head()
    ex.route, ex.deployment = head.model, "up/m"
    ex.attempts += 1
    ex.upstream_status = 200
    ex.usage.input, ex.usage.output, ex.usage.reported = 9, 1, True
    await send({**_START, "headers": list(_START["headers"])})
    await send({"type": "http.response.body", "body": _ANSWER, "more_body": False})


def build(chain: str) -> Any:
    config = load_config_text(gateway_config("http://127.0.0.1:9", 1, chain))
    app = create_app(config)
    for route in app.routes:
        if getattr(route, "path", "") == "/v1/chat/completions":
            route.app = fake_chat
    return app


def load_config_text(text: str) -> Any:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gateway.toml"
        path.write_text(text)
        return load_config(path)


async def run(apps: dict[str, Any], requests: int, rounds: int) -> dict[str, float]:
    """Best µs of CPU per request of each app over ``rounds`` rounds of ``requests`` sequential
    requests; the apps take turns within a round, so a load change on the machine hits them alike."""
    body = msgspec.json.encode({"model": "up/m", "messages": [{"role": "user", "content": "hello"}]})
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), (b"authorization", f"Bearer {BENCH_KEY}".encode()),
               (b"user-agent", b"bench")]
    message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    statuses: list[int] = []

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            statuses.append(msg["status"])

    def scope(app: Any) -> dict[str, Any]:
        return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                "query_string": b"", "root_path": "", "headers": list(headers), "client": ("127.0.0.1", 50000),
                "server": ("127.0.0.1", 8080), "app": app}

    for app in apps.values():
        for _ in range(200):  # warm-up: encodings, caches, the lazily started meter
            await app(scope(app), receive, send)
    best = dict.fromkeys(apps, float("inf"))
    for _ in range(rounds):
        for name, app in apps.items():
            statuses.clear()
            start = time.process_time()
            for _ in range(requests):
                await app(scope(app), receive, send)
            best[name] = min(best[name], (time.process_time() - start) / requests * 1e6)
            assert statuses == [200] * requests, set(statuses)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = asyncio.run(run({chain: build(chain) for chain in ("core", "full")}, args.requests, args.rounds))
    for chain, us in results.items():
        print(f"{chain:<5} {us:7.1f} µs CPU per request")
    print(f"stages (full − core): {results['full'] - results['core']:.1f} µs per request")

if __name__ == "__main__":
    main()
