"""``POST /v1/embeddings`` in OpenAI's shape, routed like chat.

OpenAI-shaped upstreams (OpenAI, Azure, compatible servers, the mock) get the client's bytes with
only the model name changed, and their answer — float or base64, as the client asked — is piped
back untouched. Gemini upstreams are translated to ``batchEmbedContents`` and back, so the base64
form (the openai SDK's default, PROTOCOLS.md P26) is produced here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp

from .dialects import Dialect
from .dialects import gemini_embeddings as gemini
from .dialects.openai_embeddings import EmbeddingsHead
from .errors import GatewayError, InvalidRequest, UpstreamError, error_for_status
from .exchange import Exchange, exchange_of
from .middleware.types import Receive, Scope, Send
from .providers.kinds import EMBEDDINGS
from .providers.upstream import Upstream
from .proxy import (
    MAX_ERROR_BODY,
    Opened,
    PassThrough,
    read_whole,
    redact_credentials,
    response_headers,
    run_attempts,
    send_options,
    until_disconnect,
)
from .resilience.policy import ResilienceConfig
from .responses import send_bytes
from .routing import Attempts, Candidate, Failure, Router

MAX_GEMINI_BODY = 64 * 1024 * 1024  # 100 vectors of 3072 floats are ~6 MB of JSON


class EmbeddingsEndpoint:
    """ASGI app behind ``POST /v1/embeddings``: the chat endpoint's attempt loop (``proxy.run_attempts``)
    over the route's members that have an embeddings endpoint, so failures are retried and fall back
    the same way."""

    def __init__(self, router: Router, resilience: ResilienceConfig | None = None) -> None:
        self.router = router
        self.resilience = resilience

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = exchange_of(scope)
        assert ex is not None, "EmbeddingsEndpoint needs ExchangeMiddleware in front of it"
        ex.operation = EMBEDDINGS  # also when mounted under a path the middleware did not recognise
        head: EmbeddingsHead = ex.head()
        route = self.router.resolve(head.model)
        route.check(EMBEDDINGS)  # no member could ever embed: 400 (or 404 without keys) before any attempt
        health = ex.health
        policy = self.resilience.retry if health is not None and self.resilience is not None else None
        plan = Attempts(self.router.chain(route), EMBEDDINGS, health, policy, None, 0, self.router.routes.get)
        ex.route = route.name

        def attempt(choice: Candidate) -> Any:
            if Dialect.GEMINI in choice.deployment.upstream.kind.dialects:
                return GeminiEmbeddings(scope, ex, choice, head)
            return PassThroughEmbeddings(scope, ex, choice, head)

        await until_disconnect(run_attempts(send, ex, plan, attempt, EMBEDDINGS), receive, ex)


class PassThroughEmbeddings(PassThrough):
    """One attempt at an OpenAI-shaped embeddings endpoint: the client's bytes with the model renamed
    (sent, relayed and piped like a chat pass-through; usage: prompt_tokens → ex.usage.input)."""

    def __init__(self, scope: Scope, ex: Exchange, choice: Candidate, head: EmbeddingsHead) -> None:
        deployment = choice.deployment
        self.scope, self.ex, self.upstream, self.deployment = scope, ex, deployment.upstream, deployment
        self.key = choice.key
        self.model = deployment.model
        self.op = EMBEDDINGS
        self.stream = self.strip_usage = False
        self.timeouts = deployment.timeouts
        self.send_options = send_options(deployment)
        self.body = head.body_for(deployment.model, ex.body)


class GeminiEmbeddings(PassThroughEmbeddings):
    """One attempt at Gemini's ``batchEmbedContents``: the first batch is the attempt (retried elsewhere
    when it fails); further batches, for inputs of more than one batch, follow on the same member."""

    def __init__(self, scope: Scope, ex: Exchange, choice: Candidate, head: EmbeddingsHead) -> None:
        if head.texts is None:
            raise InvalidRequest(f"input: model '{ex.model}' is served by Gemini, which embeds text only, "
                                 "not token ids", param="input")
        super().__init__(scope, ex, choice, head)
        self.head = head
        self.model = self.model.removeprefix("models/")  # Gemini's resource name; the path wants the bare model
        self.batches = list(gemini.batches(head.texts))
        self.body = gemini.request_body(self.model, self.batches[0], head.dimensions)

    async def relay(self, send: Send, failure: Failure) -> None:
        raise gemini_error(self.upstream, failure.status or 500, failure.headers, failure.body)

    async def deliver(self, send: Send, opened: Opened) -> bool:
        ex, upstream, head = self.ex, self.upstream, self.head
        loop = asyncio.get_running_loop()
        vectors: list[list[float]] = []
        resp = opened.resp
        for i, batch in enumerate(self.batches):
            if i:  # the next batch, on the same member
                resp.close()
                body = gemini.request_body(self.model, batch, head.dimensions)
                resp = await upstream.send(EMBEDDINGS, body, self.headers(), False, opened.deadline, model=self.model,
                                           **self.send_options)
                ex.upstream_status = resp.status
                if resp.status >= 400:
                    try:
                        async with asyncio.timeout(upstream.timeout.idle):
                            error_body = await resp.read(MAX_ERROR_BODY)
                    except (aiohttp.ClientError, TimeoutError):
                        error_body = b""
                    finally:
                        resp.close()
                    raise gemini_error(upstream, resp.status, resp.headers, error_body)
            try:
                raw = await read_whole(upstream, resp, opened.deadline, MAX_GEMINI_BODY)
            finally:
                if i:
                    resp.close()
            if ex.first_byte_at is None:
                ex.first_byte_at = loop.time()
            try:
                vectors.extend(gemini.vectors(raw, len(batch)))
            except ValueError as exc:
                raise UpstreamError(f"upstream {upstream.name} sent an unusable answer: {exc}", status=502) from None
        assert head.texts is not None
        tokens = gemini.estimate_tokens(head.texts)
        ex.usage.input = tokens  # an estimate: Gemini reports no usage for embeddings (reported stays False)
        out = gemini.openai_response(self.model, vectors, head.encoding_format, tokens)
        await send_bytes(send, 200, out, response_headers(ex, resp.headers))
        return True


def gemini_error(upstream: Upstream, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
    """A Gemini error as an OpenAI-shaped one: same status, Gemini's message (keys masked)."""
    message = f"upstream {upstream.name} returned HTTP {status}"
    detail = gemini.error_message(redact_credentials(body, upstream))
    if detail:
        message += f": {detail[:500]}"
    err = error_for_status(status, message)
    retry_after = headers.get("retry-after")
    if retry_after:
        err.headers["retry-after"] = retry_after
    return err


