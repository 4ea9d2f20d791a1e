"""Mock provider: exact OpenAI / Anthropic wire replies (``replies``) and a loopback fake upstream.

Behaviour is steered by directives in the model name, e.g. ``mock-1+status=503`` or
``gpt-4o+chunks=5+delay_ms=20`` (see :class:`MockPlan`), so no API keys are needed. The loopback server
also injects faults for resilience tests (``+fault=reset``, ``+stall_first_ms=``, ``+reset_after=``,
``+fail_first=``, …; the full list is in ``replies.py``'s docstring).
"""

from .replies import (
    MockPlan,
    RequestInfo,
    anthropic_error,
    anthropic_json,
    anthropic_sse,
    count_tokens,
    openai_error,
    openai_json,
    openai_sse,
    parse_plan,
    prompt_text,
    read_request,
    reply_for,
)

__all__ = [
    "MockPlan",
    "MockUpstream",
    "RecordedRequest",
    "RequestInfo",
    "anthropic_error",
    "anthropic_json",
    "anthropic_sse",
    "count_tokens",
    "openai_error",
    "openai_json",
    "openai_sse",
    "parse_plan",
    "prompt_text",
    "read_request",
    "reply_for",
]


def __getattr__(name: str) -> object:
    # The server pulls in aiohttp.web; load it only when asked so the in-process provider stays light.
    if name in ("MockUpstream", "RecordedRequest"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
