"""The gateway mounted inside someone else's Starlette app, served by real hypercorn."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anthropic
import httpx
import openai
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from ccm_gateway import create_app, gateway_lifespan, load_config
from ccm_gateway.mock import MockUpstream

from .conftest import gateway_config
from .servers import ServerThread


def build_host_app(upstream: MockUpstream) -> tuple[Starlette, Starlette]:
    """What the README shows: the host app runs the gateway's lifespan inside its own."""
    gateway = create_app(load_config(gateway_config(upstream.base_url), env={}, dotenv=False))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with gateway_lifespan(gateway):
            yield

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("host app")

    host = Starlette(routes=[Route("/", home), Mount("/llm", app=gateway)], lifespan=lifespan)
    return host, gateway


def test_mounted_gateway_serves_both_sdks(upstream: MockUpstream) -> None:
    host, gateway = build_host_app(upstream)
    with ServerThread(host) as server:
        assert httpx.get(server.base_url + "/").text == "host app"
        assert gateway.state.gateway.started  # the host's lifespan opened the upstream sessions
        oai = openai.OpenAI(base_url=server.base_url + "/llm/v1", api_key="x", max_retries=0, timeout=10)
        out = oai.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "mounted"}])
        assert out.choices[0].message.content.endswith("You said: mounted")
        ant = anthropic.Anthropic(base_url=server.base_url + "/llm", api_key="x", max_retries=0, timeout=10)
        with ant.messages.stream(
            model="claude-sonnet", max_tokens=5, messages=[{"role": "user", "content": "mounted"}]
        ) as stream:
            assert stream.get_final_message().content[0].text.endswith("You said: mounted")
        r = httpx.post(server.base_url + "/llm/v1/messages", json={"model": "nope", "max_tokens": 1, "messages": []})
        assert r.status_code == 404 and r.json()["type"] == "error"  # errors keep the caller's shape
        assert httpx.get(server.base_url + "/llm/health").json() == {"status": "ok"}
    assert not gateway.state.gateway.started  # and closed them on shutdown


def test_mounted_without_lifespan_opens_sessions_lazily(upstream: MockUpstream) -> None:
    gateway = create_app(load_config(gateway_config(upstream.base_url), env={}, dotenv=False))
    host = Starlette(routes=[Mount("/llm", app=gateway)])
    with ServerThread(host) as server:
        oai = openai.OpenAI(base_url=server.base_url + "/llm/v1", api_key="x", max_retries=0, timeout=10)
        out = oai.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "lazy"}])
        assert out.choices[0].message.content.endswith("You said: lazy")
        assert httpx.get(server.base_url + "/llm/ready").status_code == 200
        server.run(gateway.state.gateway.close())  # what the README's lifespan hook would do
