"""Outcome classification and upstream wait hints (ccm_gateway/resilience/outcome.py): which answers count
against a deployment, which only cool it or eject its key, and how long the upstream asks us to wait."""

from __future__ import annotations

import pytest

from ccm_gateway.mock import anthropic_error, openai_error
from ccm_gateway.resilience import Outcome, classify, retry_after, retryable

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z

OPENAI_QUOTA = (b'{"error":{"message":"You exceeded your current quota, please check your plan and billing details.",'
                b'"type":"insufficient_quota","param":null,"code":"insufficient_quota"}}')
OPENAI_RATE = (b'{"error":{"message":"Rate limit reached for gpt-4o. Visit the billing page.",'
               b'"type":"requests","param":null,"code":"rate_limit_exceeded"}}')
OPENAI_CONTEXT = (b'{"error":{"message":"This model\'s maximum context length is 128000 tokens.",'
                  b'"type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}')
ANTHROPIC_OVERLOADED = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
ANTHROPIC_BILLING = b'{"type":"error","error":{"type":"billing_error","message":"Your credit balance is too low."}}'


@pytest.mark.parametrize(("status", "body", "expected"), [
    (200, b"", Outcome.SUCCESS),
    (201, b"", Outcome.SUCCESS),
    (500, b"", Outcome.FAILURE),
    (502, b"<html>bad gateway</html>", Outcome.FAILURE),
    (503, b"", Outcome.FAILURE),
    (504, b"", Outcome.FAILURE),
    (529, ANTHROPIC_OVERLOADED, Outcome.FAILURE),
    (529, b"", Outcome.FAILURE),
    (520, b"", Outcome.FAILURE),  # any other 5xx (e.g. a CDN's) is the upstream's trouble too
    (408, b"", Outcome.FAILURE),  # the upstream gave up waiting for our request: the path, not the client
    (501, b"", Outcome.CLIENT_ERROR),  # about the request, not the deployment's health
    (505, b"", Outcome.CLIENT_ERROR),
    (400, ANTHROPIC_OVERLOADED, Outcome.FAILURE),  # an overloaded_error body whatever the status
    (400, OPENAI_CONTEXT, Outcome.CLIENT_ERROR),
    (400, b"", Outcome.CLIENT_ERROR),
    (404, openai_error(404, "no such model"), Outcome.CLIENT_ERROR),
    (413, b"", Outcome.CLIENT_ERROR),
    (422, b"", Outcome.CLIENT_ERROR),
    (429, openai_error(429, "slow down"), Outcome.RATE_LIMITED),
    (429, anthropic_error(429, "slow down"), Outcome.RATE_LIMITED),
    (429, OPENAI_RATE, Outcome.RATE_LIMITED),  # "billing" in a message is not a billing error
    (429, OPENAI_QUOTA, Outcome.DEAD_KEY),  # OpenAI's out-of-credit is a 429 with insufficient_quota
    (400, ANTHROPIC_BILLING, Outcome.DEAD_KEY),
    (402, ANTHROPIC_BILLING, Outcome.DEAD_KEY),
    (401, openai_error(401, "bad key"), Outcome.DEAD_KEY),
    (403, anthropic_error(403, "forbidden"), Outcome.DEAD_KEY),
    (400, b'{"error":{"code":400,"status":"INVALID_ARGUMENT","details":[{"reason":"API_KEY_INVALID"}]}}',
     Outcome.DEAD_KEY),  # Gemini refuses a key with a 400
    (200, OPENAI_QUOTA, Outcome.SUCCESS),  # a reply that merely talks about quotas
])
def test_classify_status_and_body(status: int, body: bytes, expected: Outcome) -> None:
    assert classify(status, body) is expected


def test_classify_transport_flags() -> None:
    assert classify(None) is Outcome.FAILURE  # reset / closed before a head
    assert classify(None, connect_error=True) is Outcome.FAILURE
    assert classify(None, timeout=True) is Outcome.FAILURE  # first-byte or idle timeout
    assert classify(200, timeout=True) is Outcome.FAILURE  # idle timeout mid-stream after a 200 head
    assert classify(None, cancelled=True) is Outcome.CANCELLED
    assert classify(503, cancelled=True, timeout=True) is Outcome.CANCELLED  # the client left first


def test_classify_reads_only_the_start_of_a_body() -> None:
    padded = b'{"error":{"message":"' + b"x" * 10_000 + b'","type":"insufficient_quota"}}'
    assert classify(429, padded) is Outcome.RATE_LIMITED
    assert classify(429, OPENAI_QUOTA + b" " * 10_000) is Outcome.DEAD_KEY


def test_retryable() -> None:
    assert {o for o in Outcome if retryable(o)} == {Outcome.FAILURE, Outcome.RATE_LIMITED, Outcome.DEAD_KEY}


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, None),
    ({"retry-after": "7"}, 7.0),
    ({"retry-after": "1.5"}, 1.5),
    ({"retry-after": "0"}, 0.0),
    ({"retry-after": "Tue, 14 Nov 2023 22:13:50 GMT"}, 30.0),  # HTTP-date, 30 s after NOW
    ({"retry-after": "Tue, 14 Nov 2023 22:13:00 GMT"}, 0.0),  # a date in the past: no wait
    ({"retry-after-ms": "250"}, 0.25),
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the precise one wins
    ({"retry-after": "soon"}, None),
    ({"retry-after": "-3"}, None),
    ({"retry-after": "nan"}, None),
    ({"retry-after-ms": "inf"}, None),
    ({"retry-after-ms": "x", "retry-after": "4"}, 4.0),
    ({"retry-after": "soon", "x-ratelimit-reset-requests": "2s", "x-ratelimit-remaining-requests": "0"}, 2.0),
    # OpenAI's Go-style durations, only for an exhausted bucket; the later of requests / tokens
    ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-remaining-requests": "0"}, 1.0),
    ({"x-ratelimit-reset-requests": "20ms", "x-ratelimit-remaining-requests": "0"}, 0.02),
    ({"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-remaining-requests": "0"}, 360.0),
    ({"x-ratelimit-reset-tokens": "1h2m3.5s", "x-ratelimit-remaining-tokens": "0"}, 3723.5),
    ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-remaining-requests": "12"}, None),
    ({"x-ratelimit-reset-requests": "1s"}, None),
    ({"x-ratelimit-reset-requests": "3s", "x-ratelimit-remaining-requests": "0",
      "x-ratelimit-reset-tokens": "8s", "x-ratelimit-remaining-tokens": "0"}, 8.0),
    ({"x-ratelimit-reset-requests": "3s", "x-ratelimit-remaining-requests": "0",
      "x-ratelimit-reset-tokens": "8s", "x-ratelimit-remaining-tokens": "500"}, 3.0),
    ({"x-ratelimit-reset-requests": "3 parsecs", "x-ratelimit-remaining-requests": "0"}, None),
    ({"x-ratelimit-reset-requests": "1s2", "x-ratelimit-remaining-requests": "0"}, None),
    ({"x-ratelimit-reset-requests": "", "x-ratelimit-remaining-requests": "0"}, None),
    # Anthropic's RFC 3339 resets, same remaining rule
    ({"anthropic-ratelimit-requests-reset": "2023-11-14T22:13:32Z", "anthropic-ratelimit-requests-remaining": "0"},
     12.0),
    ({"anthropic-ratelimit-tokens-reset": "2023-11-14T22:13:25+00:00", "anthropic-ratelimit-tokens-remaining": "0",
      "anthropic-ratelimit-output-tokens-reset": "2023-11-14T22:13:40Z",
      "anthropic-ratelimit-output-tokens-remaining": "0"}, 20.0),
    ({"anthropic-ratelimit-input-tokens-reset": "2023-11-14T22:13:25Z",
      "anthropic-ratelimit-input-tokens-remaining": "0"}, 5.0),
    ({"anthropic-ratelimit-requests-reset": "2023-11-14T22:13:32Z", "anthropic-ratelimit-requests-remaining": "3"},
     None),
    ({"anthropic-ratelimit-requests-reset": "yesterday", "anthropic-ratelimit-requests-remaining": "0"}, None),
    ({"anthropic-ratelimit-requests-reset": "2023-11-14T22:13:00Z", "anthropic-ratelimit-requests-remaining": "0"},
     0.0),
])
def test_retry_after_header_forms(headers: dict[str, str], expected: float | None) -> None:
    got = retry_after(headers, now=NOW)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_retry_after_with_a_case_insensitive_mapping() -> None:
    from multidict import CIMultiDict

    assert retry_after(CIMultiDict({"Retry-After": "3"}), now=NOW) == 3.0
    assert retry_after(CIMultiDict({"X-RateLimit-Reset-Requests": "2s", "X-RateLimit-Remaining-Requests": "0"})) == 2.0
