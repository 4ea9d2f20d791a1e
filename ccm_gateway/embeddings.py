"""``POST /v1/embeddings`` in OpenAI's shape, routed like chat.

OpenAI-shaped upstreams (OpenAI, Azure, compatible servers, the mock) get the client's bytes with
only the model name changed, and their answer — float or base64, as the client asked — is piped
back untouched. Gemini upstreams are translated to ``batchEmbedContents`` and back, so the base64
form (the openai SDK's default, PROTOCOLS.md P26) is produced here.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping

import aiohttp

from .dialects import Dialect
from .dialects import gemini_embeddings as gemini
from .dialects.openai_embeddings import EmbeddingsHead
from .errors import InvalidRequest, ModelNotFound, UpstreamError, UpstreamTimeout, UpstreamUnavailable, error_for_status
from .exchange import Exchange, exchange_of
from .middleware.types import Receive, Scope, Send
from .providers.kinds import EMBEDDINGS
from .providers.upstream import Upstream, UpstreamResponse
from .proxy import (
    MAX_ERROR_BODY,
    Pipe,
    redact_credentials,
    relay_error,
    response_headers,
    until_disconnect,
    upstream_headers,
)
from .responses import send_bytes
from .routing import Deployment, Route, Router

MAX_GEMINI_BODY = 64 * 1024 * 1024  # 100 vectors of 3072 floats are ~6 MB of JSON


class EmbeddingsEndpoint:
    """ASGI app behind ``POST /v1/embeddings``."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = exchange_of(scope)
        assert ex is not None, "EmbeddingsEndpoint needs ExchangeMiddleware in front of it"
        ex.operation = EMBEDDINGS  # also when mounted under a path the middleware did not recognise
        head: EmbeddingsHead = ex.head()
        route = self.router.resolve(head.model)
        deployment = pick_embedder(route)
        ex.route, ex.deployment = route.name, deployment.label
        upstream = deployment.upstream
        translate = Dialect.GEMINI in upstream.kind.dialects
        if translate and head.texts is None:
            raise InvalidRequest(
                f"input: model '{route.name}' is served by Gemini, which embeds text only, not token ids",
                param="input",
            )
        headers = upstream_headers(scope, ex, upstream)
        headers.update(upstream.auth_headers(upstream.pick_key()))
        if translate:
            work = self._gemini(send, ex, upstream, deployment.model, head, headers)
        else:
            work = self._passthrough(send, ex, upstream, deployment.model, head, headers)
        await until_disconnect(work, receive, ex)

    async def _passthrough(
        self, send: Send, ex: Exchange, upstream: Upstream, model: str, head: EmbeddingsHead, headers: dict[str, str]
    ) -> None:
        deadline = asyncio.get_running_loop().time() + upstream.timeout.deadline
        ex.attempts += 1
        body = head.body_for(model, ex.body)
        resp = await upstream.send(EMBEDDINGS, body, headers, False, deadline, model=model)
        ex.upstream_status = resp.status
        try:
            if resp.status >= 400:
                await relay_error(send, ex, upstream, resp)
            else:
                await Pipe(ex, upstream, resp, send).run(deadline)  # usage: prompt_tokens → ex.usage.input
        finally:
            resp.close()

    async def _gemini(
        self, send: Send, ex: Exchange, upstream: Upstream, model: str, head: EmbeddingsHead, headers: dict[str, str]
    ) -> None:
        assert head.texts is not None
        model = model.removeprefix("models/")  # Gemini's resource name; the path wants the bare model
        loop = asyncio.get_running_loop()
        deadline = loop.time() + upstream.timeout.deadline
        ex.attempts += 1
        vectors: list[list[float]] = []
        upstream_head: Mapping[str, str] = {}
        for batch in gemini.batches(head.texts):
            body = gemini.request_body(model, batch, head.dimensions)
            resp = await upstream.send(EMBEDDINGS, body, headers, False, deadline, model=model)
            ex.upstream_status = resp.status
            try:
                if resp.status >= 400:
                    raise await gemini_error(upstream, resp)
                raw = await _read_whole(upstream, resp, deadline)
            finally:
                resp.close()
            if ex.first_byte_at is None:
                ex.first_byte_at = loop.time()
            try:
                vectors.extend(gemini.vectors(raw, len(batch)))
            except ValueError as exc:
                raise UpstreamError(f"upstream {upstream.name} sent an unusable answer: {exc}", status=502) from None
            upstream_head = resp.headers
        tokens = gemini.estimate_tokens(head.texts)
        ex.usage.input = tokens  # an estimate: Gemini reports no usage for embeddings (reported stays False)
        out = gemini.openai_response(model, vectors, head.encoding_format, tokens)
        await send_bytes(send, 200, out, response_headers(ex, upstream_head))


def pick_embedder(route: Route) -> Deployment:
    """A deployment, by weight, among those whose provider has an embeddings endpoint and a key."""
    capable = [d for d in route.deployments if d.upstream.kind.supports(EMBEDDINGS)]
    if not capable:
        names = ", ".join(sorted({f"{d.upstream.name} (kind {d.upstream.kind.name})" for d in route.deployments}))
        raise InvalidRequest(
            f"model '{route.name}' does not support embeddings: provider {names} has no embeddings endpoint",
            param="model",
        )
    usable = [d for d in capable if d.upstream.available]
    if not usable:
        names = ", ".join(sorted({d.upstream.name for d in capable}))
        raise ModelNotFound(f"model '{route.name}' is not available: provider {names} has no API key configured")
    if len(usable) == 1:
        return usable[0]
    return random.choices(usable, weights=[d.weight for d in usable])[0]


async def gemini_error(upstream: Upstream, resp: UpstreamResponse) -> Exception:
    """A Gemini error as an OpenAI-shaped one: same status, Gemini's message (keys masked)."""
    try:
        async with asyncio.timeout(upstream.timeout.idle):
            body = await resp.read(MAX_ERROR_BODY)
    except (aiohttp.ClientError, TimeoutError):
        body = b""
    message = f"upstream {upstream.name} returned HTTP {resp.status}"
    detail = gemini.error_message(redact_credentials(body, upstream))
    if detail:
        message += f": {detail[:500]}"
    err = error_for_status(resp.status, message)
    retry_after = resp.headers.get("retry-after")
    if retry_after:
        err.headers["retry-after"] = retry_after
    return err


async def _read_whole(upstream: Upstream, resp: UpstreamResponse, deadline: float) -> bytes:
    try:
        async with asyncio.timeout_at(deadline):
            raw = await resp.read(MAX_GEMINI_BODY + 1)
    except TimeoutError:
        raise UpstreamTimeout(f"upstream {upstream.name} did not finish its answer in time") from None
    except aiohttp.ClientError as exc:
        raise UpstreamUnavailable(f"upstream {upstream.name} connection failed ({type(exc).__name__})") from None
    if len(raw) > MAX_GEMINI_BODY:
        raise UpstreamError(f"upstream {upstream.name} answer exceeds {MAX_GEMINI_BODY} bytes", status=502)
    return raw


