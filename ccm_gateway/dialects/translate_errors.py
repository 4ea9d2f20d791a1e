"""Upstream errors of any dialect → one GatewayError, rendered in the client's shape (PROTOCOLS §4.12)."""

from __future__ import annotations

from ..errors import BillingError, GatewayError, Overloaded, error_for_status

# Anthropic error types and Gemini status strings → HTTP status (for errors met mid-stream or in bodies).
_TYPE_STATUS = {
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402, "permission_error": 403,
    "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
    "timeout_error": 504, "overloaded_error": 529,
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429, "INTERNAL": 500, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
    "API_KEY_INVALID": 401, "insufficient_quota": 429, "rate_limit_exceeded": 429, "invalid_api_key": 401,
    "context_length_exceeded": 400, "model_not_found": 404,
}


def upstream_error(status: int, message: str, code: str | None = None) -> GatewayError:
    """The error a client should see; ``code`` is an OpenAI code, an Anthropic type or a Gemini status
    or reason (Gemini's invalid key is a 400 with reason API_KEY_INVALID: clients must see 401, P22)."""
    mapped = _TYPE_STATUS.get(code or "")
    if mapped is not None and (status in (200, 400, 500) or code == "API_KEY_INVALID"):
        status = mapped
    message = message or f"upstream returned HTTP {status}"
    if status in (503, 529):
        return Overloaded(message)
    if status == 402:
        return BillingError(message)
    err = error_for_status(status, message)
    if code == "insufficient_quota":
        err.openai_code = "insufficient_quota"  # type: ignore[misc]
    elif code == "context_length_exceeded":
        err.openai_code = "context_length_exceeded"  # type: ignore[misc]
    return err
