"""``POST /v1/embeddings`` through the official openai SDK: pass-through to OpenAI, compatible and
Azure upstreams, translation to Gemini's batchEmbedContents; base64 (the SDK default) and float."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from ccm_gateway.mock import MockUpstream, RecordedRequest
from ccm_gateway.mock.embeddings import DEFAULT_DIMENSIONS, openai_embeddings, vector
from ccm_gateway.providers.kinds import AZURE_API_VERSION

from .conftest import AZURE_KEY, GEMINI_KEY, OPENAI_KEY, exchange_for
from .servers import ServerThread

GEMINI_PATH = "/v1beta/models/gemini-embedding-001:batchEmbedContents"
# alias → (upstream path, credential header, credential value)
UPSTREAMS = {
    "embed-small": ("/v1/embeddings", "authorization", f"Bearer {OPENAI_KEY}"),
    "embed-local": ("/v1/embeddings", "authorization", None),
    "embed-azure": ("/openai/deployments/embed-deploy/embeddings", "api-key", AZURE_KEY),
    "embed-gemini": (GEMINI_PATH, "x-goog-api-key", GEMINI_KEY),
}


@pytest.fixture
def oai(gateway: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="client-key", max_retries=0, timeout=10)


def sent_for(upstream: MockUpstream, request_id: str) -> list[RecordedRequest]:
    return [r for r in upstream.requests if r.headers.get("x-request-id") == request_id]


def post(gateway: ServerThread, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(gateway.base_url + "/v1/embeddings", json=body, headers=headers, timeout=10)


@pytest.mark.parametrize("alias", list(UPSTREAMS))
def test_sdk_default_base64(alias: str, oai: openai.OpenAI, upstream: MockUpstream) -> None:
    raw = oai.embeddings.with_raw_response.create(model=alias, input=["alpha", "beta gamma"])
    wire = raw.http_response.json()
    assert all(isinstance(d["embedding"], str) for d in wire["data"])  # base64 on the wire
    result = raw.parse()
    assert [d.embedding for d in result.data] == [vector("alpha"), vector("beta gamma")]
    assert [d.index for d in result.data] == [0, 1]
    request_id = raw.headers["x-request-id"]
    (sent,) = sent_for(upstream, request_id)
    path, header, value = UPSTREAMS[alias]
    assert sent.path == path
    assert sent.headers.get(header) == value
    assert all("client-key" not in v for v in sent.headers.values())  # the caller's key stays here
    if header != "authorization":
        assert "authorization" not in sent.headers
    assert sent.query == (f"api-version={AZURE_API_VERSION}" if alias == "embed-azure" else "")
    if alias == "embed-gemini":
        assert sent.json() == {"requests": [
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "alpha"}]}},
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "beta gamma"}]}},
        ]}
        assert result.usage.prompt_tokens == exchange_for(request_id).usage.input > 0  # estimated
    else:
        assert sent.json()["encoding_format"] == "base64"  # the SDK's default, passed on
        assert sent.json()["input"] == ["alpha", "beta gamma"]
        usage = exchange_for(request_id).usage
        assert usage.reported and usage.input == result.usage.prompt_tokens > 0


@pytest.mark.parametrize("alias", list(UPSTREAMS))
def test_sdk_float_with_dimensions(alias: str, oai: openai.OpenAI, upstream: MockUpstream) -> None:
    raw = oai.embeddings.with_raw_response.create(model=alias, input="one text", encoding_format="float",
                                                  dimensions=5)
    assert isinstance(raw.http_response.json()["data"][0]["embedding"], list)
    result = raw.parse()
    assert [d.embedding for d in result.data] == [vector("one text", 5)]
    (sent,) = sent_for(upstream, raw.headers["x-request-id"])
    if alias == "embed-gemini":
        assert sent.json()["requests"][0]["outputDimensionality"] == 5
    else:
        assert sent.json()["dimensions"] == 5


@pytest.mark.parametrize("alias", ["embed-small", "embed-azure"])
def test_passthrough_is_byte_for_byte(alias: str, gateway: ServerThread, upstream: MockUpstream) -> None:
    r = post(gateway, {"model": alias, "input": ["x", "y"], "encoding_format": "base64", "user": "u1"})
    assert r.status_code == 200
    (sent,) = sent_for(upstream, r.headers["x-request-id"])
    body = sent.json()
    assert body["user"] == "u1" and body["model"] != alias  # only the model name was rewritten
    assert r.content == openai_embeddings(sent.body)[1]  # the upstream's answer, untouched


def test_token_id_inputs_pass_through(oai: openai.OpenAI) -> None:
    result = oai.embeddings.create(model="embed-small", input=[[1, 2, 3], [4]], encoding_format="float")
    assert [d.embedding for d in result.data] == [vector([1, 2, 3]), vector([4])]
    single = oai.embeddings.create(model="embed-small", input=[7, 8])
    assert [d.embedding for d in single.data] == [vector([7, 8])]


def test_gemini_large_input_is_split_into_batches(oai: openai.OpenAI, upstream: MockUpstream) -> None:
    texts = [f"text {i}" for i in range(150)]
    raw = oai.embeddings.with_raw_response.create(model="embed-gemini", input=texts)
    result = raw.parse()
    assert [d.embedding for d in result.data] == [vector(t) for t in texts]
    assert [d.index for d in result.data] == list(range(150))
    sent = sent_for(upstream, raw.headers["x-request-id"])
    assert [len(s.json()["requests"]) for s in sent] == [100, 50]


def test_embedding_model_names_are_detected(oai: openai.OpenAI, upstream: MockUpstream) -> None:
    raw = oai.embeddings.with_raw_response.create(model="text-embedding-3-large", input="d")
    (sent,) = sent_for(upstream, raw.headers["x-request-id"])
    assert sent.path == "/v1/embeddings" and sent.json()["model"] == "text-embedding-3-large"
    raw = oai.embeddings.with_raw_response.create(model="gemini-embedding-001", input="d")
    (sent,) = sent_for(upstream, raw.headers["x-request-id"])
    assert sent.path == GEMINI_PATH
    assert raw.parse().data[0].embedding == vector("d")


def test_gemini_resource_name_is_accepted(oai: openai.OpenAI, upstream: MockUpstream) -> None:
    raw = oai.embeddings.with_raw_response.create(model="gem/models/gemini-embedding-001", input="r")
    (sent,) = sent_for(upstream, raw.headers["x-request-id"])
    assert sent.path == GEMINI_PATH and sent.json()["requests"][0]["model"] == "models/gemini-embedding-001"


def test_mock_provider_answers_in_process(oai: openai.OpenAI) -> None:
    result = oai.embeddings.create(model="mock/anything", input="hi")
    assert result.data[0].embedding == vector("hi", DEFAULT_DIMENSIONS)


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "embed-small"}, "input"),
    ({"model": "embed-small", "input": 5}, "input"),
    ({"model": "embed-small", "input": []}, "input"),
    ({"model": "embed-small", "input": ["a", 1]}, "input"),
    ({"model": "embed-small", "input": [[1], []]}, "input"),
    ({"model": "embed-small", "input": [{"text": "a"}]}, "input"),
    ({"model": 3, "input": "a"}, "model"),
    ({"input": "a"}, "model"),
    ({"model": "embed-small", "input": "a", "encoding_format": "hex"}, "encoding_format"),
    ({"model": "embed-small", "input": "a", "dimensions": "3"}, "dimensions"),
    ({"model": "embed-small", "input": "a", "dimensions": 0}, "dimensions"),
    ({"model": "embed-small", "input": "a", "user": 5}, "user"),
    ({"model": "embed-gemini", "input": [1, 2, 3]}, "input"),
])
def test_bad_requests_name_the_field(body: dict[str, Any], param: str, gateway: ServerThread,
                                     upstream: MockUpstream) -> None:
    r = post(gateway, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"{param}:")
    assert not sent_for(upstream, r.headers["x-request-id"])  # refused before any upstream call


def test_errors_are_openai_shaped_even_with_anthropic_headers(gateway: ServerThread) -> None:
    r = post(gateway, {"model": "embed-small"}, **{"anthropic-version": "2023-06-01"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"


def test_unknown_model_and_anthropic_model(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        oai.embeddings.create(model="no-such-embedder", input="a")
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as anthropic:
        oai.embeddings.create(model="claude-sonnet", input="a")
    assert "does not support embeddings" in anthropic.value.message
    assert anthropic.value.body["param"] == "model"


def test_upstream_errors_pass_through_or_are_reshaped(oai: openai.OpenAI, gateway: ServerThread) -> None:
    with pytest.raises(openai.RateLimitError) as limited:  # OpenAI's own error body, passed on
        oai.embeddings.create(model="oai/text-embedding-3-small+status=429", input="a")
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.body["code"] == "rate_limit_exceeded"
    r = post(gateway, {"model": "gem/gemini-embedding-001+status=404", "input": "a"})
    assert r.status_code == 404
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}  # re-shaped from Gemini's {code, status}
    assert "NOT_FOUND" in error["message"]
    r = post(gateway, {"model": "gem/gemini-embedding-001+auth=other-key", "input": "a"})
    assert r.status_code == 400 and "API key not valid" in r.json()["error"]["message"]
    assert GEMINI_KEY not in r.text


def test_get_is_not_allowed(gateway: ServerThread) -> None:
    r = httpx.get(gateway.base_url + "/v1/embeddings", timeout=10)
    assert r.status_code == 405 and "use POST" in r.json()["error"]["message"]
