"""CPU per request of the gateway's stage chain, in process, with a fake endpoint instead of the upstream.

The full benchmark measures the whole server against a bare proxy, and on a shared two-core machine its
ratios move by more than the stages cost. This measures only what the stages add: the same app built
from the benchmark's gateway config (every stage on, or the core stages only), its chat route answered
by an endpoint that does what a pass-through answer does to the Exchange (usage, status, deployment)
and sends a small JSON answer. Process CPU time over many requests, best of a few rounds.

    python -m benchmarks.stages [--requests 20000] [--rounds 5]

With ``--upstream`` the real endpoints answer, through aiohttp, from the benchmark's mock upstream
(a separate process): the gateway's app (every stage on, core stages only) next to the bare proxy's
app, each driven in process without a server. That is the whole per-request cost of the code we
write and call (stages, endpoint, attempt loop, aiohttp client), without hypercorn's, h11's and the
load generator's, which are the same for both in the server benchmarks.

    python -m benchmarks.stages --upstream [--requests 3000] [--rounds 5]
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
from ccm_gateway.middleware.endpoints import EndpointDispatch

from .runner import BENCH_KEY, Processes, gateway_config

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


def build(chain: str, upstream: str = "") -> Any:
    config = load_config_text(gateway_config(upstream or "http://127.0.0.1:9", 1, chain))
    app = create_app(config)
    if not upstream:
        app.middleware_stack = stage = app.build_middleware_stack()
        while not isinstance(stage, EndpointDispatch):  # the innermost stage dispatches the endpoints
            stage = stage.app
        stage.endpoints["/v1/chat/completions"] = fake_chat
    return app


def bare(upstream: str) -> Any:
    """The bare proxy's app, pointed at ``upstream`` (it reads the address when first called)."""
    from . import bare_proxy

    bare_proxy.UPSTREAM = upstream
    return bare_proxy.app


def load_config_text(text: str) -> Any:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gateway.toml"
        path.write_text(text)
        return load_config(path)


async def run(apps: dict[str, Any], requests: int, rounds: int, concurrency: int = 1,
              stream: bool = False) -> dict[str, float]:
    """Best µs of CPU per request of each app over ``rounds`` rounds of ``requests`` sequential
    requests; the apps take turns within a round, so a load change on the machine hits them alike."""
    ask: dict[str, Any] = {"messages": [{"role": "user", "content": "hello"}]}
    if stream:  # the benchmark's streaming scenario: 50 text chunks, usage asked for
        ask.update(stream=True, stream_options={"include_usage": True})
    directives = "+chunks=50" if stream else ""
    body = msgspec.json.encode({"model": "up/m" + directives, **ask})
    bare_body = msgspec.json.encode({"model": "m" + directives, **ask})
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), (b"authorization", f"Bearer {BENCH_KEY}".encode()),
               (b"user-agent", b"bench")]
    message = {"type": "http.request", "body": body, "more_body": False}
    bare_message = {"type": "http.request", "body": bare_body, "more_body": False}
    current = message
    never = asyncio.Event()

    def receiver() -> Any:
        """The body once, then nothing (a client that neither sends more nor hangs up)."""
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await never.wait()
            sent = True
            return current

        return receive

    statuses: list[int] = []

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            statuses.append(msg["status"])

    def scope(app: Any) -> dict[str, Any]:
        return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                "query_string": b"", "root_path": "", "headers": list(headers), "client": ("127.0.0.1", 50000),
                "server": ("127.0.0.1", 8080), "app": app}

    async def client(app: Any, n: int) -> None:
        for _ in range(n):
            await app(scope(app), receiver(), send)

    for name, app in apps.items():
        current = bare_message if name == "bare" else message
        for _ in range(200):  # warm-up: encodings, caches, the lazily started meter
            await app(scope(app), receiver(), send)
    best = dict.fromkeys(apps, float("inf"))
    for _ in range(rounds):
        for name, app in apps.items():
            current = bare_message if name == "bare" else message
            statuses.clear()
            start = time.process_time()
            if concurrency == 1:
                for _ in range(requests):
                    await app(scope(app), receiver(), send)
            else:
                await asyncio.gather(*(client(app, requests // concurrency) for _ in range(concurrency)))
            best[name] = min(best[name], (time.process_time() - start) / requests * 1e6)
            assert statuses == [200] * (requests // concurrency * concurrency), set(statuses)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--upstream", action="store_true", help="real endpoints, mock upstream process, bare app")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight at once")
    parser.add_argument("--apps", default="bare,core,full", help="which of bare, core, full to run (--upstream)")
    parser.add_argument("--stream", action="store_true", help="streamed answers of 50 chunks (--upstream)")
    args = parser.parse_args()
    try:
        import uvloop  # the server's loop
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if not args.upstream:
        results = asyncio.run(run({chain: build(chain) for chain in ("core", "full")}, args.requests, args.rounds,
                                  args.concurrency))
    else:
        procs = Processes()
        try:
            url = procs.upstream[0]
            wanted = args.apps.split(",")
            apps = {"bare": bare(url)} if "bare" in wanted else {}
            apps.update({chain: build(chain, url) for chain in ("core", "full") if chain in wanted})
            results = asyncio.run(run(apps, args.requests, args.rounds, args.concurrency, args.stream))
        finally:
            procs.stop()
    for chain, us in results.items():
        print(f"{chain:<5} {us:7.1f} µs CPU per request")
    if "core" in results and "full" in results:
        print(f"stages (full − core): {results['full'] - results['core']:.1f} µs per request")
    if "bare" in results and "full" in results:
        print(f"gateway (full) − bare: {results['full'] - results['bare']:.1f} µs per request "
              f"({results['full'] / results['bare']:.2f}×)")

if __name__ == "__main__":
    main()
