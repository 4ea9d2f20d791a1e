"""The yardstick: the smallest pass-through proxy on the gateway's own stack (starlette + hypercorn
+ aiohttp). Whatever the gateway costs beyond this is the price of its features.

    python -m benchmarks.bare_proxy --upstream http://127.0.0.1:9100 --port 9200 [--workers N]
"""

import argparse
import os

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

UPSTREAM = os.environ.get("BARE_UPSTREAM", "http://127.0.0.1:9100")
session: aiohttp.ClientSession | None = None


async def forward(request: Request) -> StreamingResponse:
    global session
    if session is None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512))
    path = "/v1/messages" if request.url.path.endswith("/messages") else "/v1/chat/completions"
    headers = {k: v for k, v in request.headers.items() if k in ("content-type", "anthropic-version")}
    resp = await session.post(UPSTREAM + path, data=await request.body(), headers=headers)
    content_type = resp.headers.get("content-type", "application/json")
    return StreamingResponse(resp.content.iter_any(), status_code=resp.status, media_type=content_type,
                             background=None)


app = Starlette(routes=[Route("/v1/chat/completions", forward, methods=["POST"]),
                        Route("/v1/messages", forward, methods=["POST"])])

if __name__ == "__main__":
    from hypercorn.config import Config
    from hypercorn.run import run

    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", default=UPSTREAM)
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    os.environ["BARE_UPSTREAM"] = args.upstream
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.workers = 0 if args.workers == 1 else args.workers
    config.worker_class = "uvloop"
    config.application_path = "benchmarks.bare_proxy:app"
    config.accesslog = None
    run(config)
