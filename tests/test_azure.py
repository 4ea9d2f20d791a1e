"""Azure OpenAI upstreams: the openai SDK talks to the gateway, the gateway calls the deployment URL
with ``api-key`` and ``api-version`` (the mock refuses requests without them, as Azure does)."""

from __future__ import annotations

import httpx
import openai
import pytest

from ccm_gateway import ConfigError, load_config
from ccm_gateway.dialects import Dialect
from ccm_gateway.mock import MockUpstream, RecordedRequest
from ccm_gateway.providers.kinds import AZURE_API_VERSION, EMBEDDINGS, KINDS
from ccm_gateway.providers.upstream import Upstream

from .conftest import AZURE_KEY, exchange_for
from .servers import ServerThread

CLIENT_KEY = "client-key-never-upstream"
REPLY = "Hello from the ccm_gateway mock. You said: "
CHAT_PATH = "/openai/deployments/gpt-4o-deploy/chat/completions"


@pytest.fixture
def oai(gateway: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)


def sent_for(upstream: MockUpstream, request_id: str) -> RecordedRequest:
    found = [r for r in upstream.requests if r.headers.get("x-request-id") == request_id]
    assert len(found) == 1, f"expected one upstream request for {request_id}, saw {len(found)}"
    return found[0]


def assert_azure_request(sent: RecordedRequest, path: str) -> None:
    assert sent.path == path
    assert sent.query == f"api-version={AZURE_API_VERSION}"
    assert sent.headers["api-key"] == AZURE_KEY
    assert "authorization" not in sent.headers  # Azure keys are not Bearer tokens
    assert all(CLIENT_KEY not in v for v in sent.headers.values())


def test_chat_non_streaming_goes_to_the_deployment(oai: openai.OpenAI, upstream: MockUpstream) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="azure-gpt", messages=[{"role": "user", "content": "hello azure"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == REPLY + "hello azure"
    sent = sent_for(upstream, raw.headers["x-request-id"])
    assert_azure_request(sent, CHAT_PATH)
    body = sent.json()
    assert body["model"] == "gpt-4o-deploy"  # ignored by Azure, harmless: the deployment name
    assert body["messages"] == [{"role": "user", "content": "hello azure"}]
    usage = exchange_for(raw.headers["x-request-id"]).usage
    assert usage.reported and usage.input == completion.usage.prompt_tokens


def test_chat_streaming_with_usage(oai: openai.OpenAI, upstream: MockUpstream) -> None:
    with oai.chat.completions.with_streaming_response.create(
        model="azure-gpt", messages=[{"role": "user", "content": "stream azure"}], stream=True,
        stream_options={"include_usage": True},
    ) as raw:
        request_id = raw.headers["x-request-id"]
        chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY + "stream azure"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    sent = sent_for(upstream, request_id)
    assert_azure_request(sent, CHAT_PATH)
    assert sent.json()["stream_options"] == {"include_usage": True}  # passed through byte for byte
    assert exchange_for(request_id).usage.output == chunks[-1].usage.completion_tokens


def test_direct_deployment_and_upstream_error_passes_through(gateway: ServerThread, upstream: MockUpstream) -> None:
    r = httpx.post(gateway.base_url + "/v1/chat/completions", timeout=10,
                   json={"model": "azure/my-dep+status=429", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert r.headers["retry-after"] == "1"
    sent = sent_for(upstream, r.headers["x-request-id"])
    assert_azure_request(sent, "/openai/deployments/my-dep+status=429/chat/completions")


def test_api_version_override_and_url_building() -> None:
    config = load_config({"providers": {
        "az": {"kind": "azure", "base_url": "https://myres.openai.azure.com/", "api_keys": ["k"],
               "api_version": "2025-04-01-preview"},
    }}, env={}, dotenv=False)
    az = Upstream("az", config.providers["az"])
    assert az.url("openai_chat", "dep-1") == (
        "https://myres.openai.azure.com/openai/deployments/dep-1/chat/completions?api-version=2025-04-01-preview"
    )
    assert az.url(EMBEDDINGS, "emb") == (
        "https://myres.openai.azure.com/openai/deployments/emb/embeddings?api-version=2025-04-01-preview"
    )
    assert az.auth_headers(az.pick_key()) == {"api-key": "k"}


def test_config_requires_base_url_and_keeps_api_version_to_azure() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"providers": {
            "az": {"kind": "azure", "api_keys": ["k"]},
            "o": {"kind": "openai", "api_keys": ["k"], "api_version": "2024-10-21"},
        }}, env={}, dotenv=False)
    assert 'providers.az.base_url: required for kind "azure"' in caught.value.errors
    assert any(e.startswith("providers.o.api_version:") for e in caught.value.errors)


def test_kind_paths_are_data_for_every_operation() -> None:
    assert KINDS["openai"].path(Dialect.OPENAI_CHAT) == "/chat/completions"
    assert KINDS["openai"].path(EMBEDDINGS, "text-embedding-3-small") == "/embeddings"
    assert KINDS["anthropic"].path(Dialect.ANTHROPIC_MESSAGES, "claude-x", True) == "/v1/messages"
    assert not KINDS["anthropic"].supports(EMBEDDINGS)
    assert KINDS["azure"].path(Dialect.OPENAI_CHAT, "a b/c") == "/openai/deployments/a%20b%2Fc/chat/completions"
    gemini = KINDS["gemini"]
    assert gemini.path(Dialect.GEMINI, "gemini-2.5-flash") == "/models/gemini-2.5-flash:generateContent"
    assert gemini.path(Dialect.GEMINI, "gemini-2.5-flash", True) == (
        "/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    assert gemini.path(EMBEDDINGS, "gemini-embedding-001") == "/models/gemini-embedding-001:batchEmbedContents"
