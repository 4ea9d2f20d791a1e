"""A client that hangs up mid-stream ends the upstream read at once — not at the next chunk — and the
Exchange says so."""

from __future__ import annotations

import httpx
import pytest

from ccm_gateway.mock import MockUpstream

from .conftest import exchange_for
from .servers import ServerThread


def test_client_hangup_cancels_the_upstream_read(gateway: ServerThread, upstream: MockUpstream) -> None:
    model = "gpt-4.1+chunks=3+delay_ms=3000"  # one event at once, then 3 s of silence between events
    # "local" is a provider with the default (long) idle timeout.
    body = {"model": "local/" + model, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "x"}]}
    with httpx.stream("POST", gateway.base_url + "/v1/chat/completions", json=body, timeout=10) as r:
        request_id = r.headers["x-request-id"]
        assert next(r.iter_lines()).startswith("data: ")
    ex = exchange_for(request_id)
    result = next(s for s in reversed(upstream.streams) if s.model == model)
    # The exchange ended while the upstream was still silent: it did not wait for the next chunk.
    assert result.sent == 1 and result.total > 3
    assert ex.client_disconnected
    assert not ex.usage.reported


def test_client_hangup_while_waiting_for_the_first_byte(gateway: ServerThread) -> None:
    body = {"model": "local/gpt-4.1+ttfb_ms=4000", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    request_id = "hangup-before-first-byte"
    with pytest.raises(httpx.ReadTimeout):  # the client gives up long before the upstream answers
        httpx.post(gateway.base_url + "/v1/chat/completions", json=body, timeout=httpx.Timeout(10, read=0.5),
                   headers={"x-request-id": request_id})
    ex = exchange_for(request_id)
    assert ex.client_disconnected and ex.upstream_status is None
