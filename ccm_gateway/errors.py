"""The GatewayError family: one exception per situation, rendered in the caller's own protocol.

A stage or the endpoint raises; the exchange stage (outermost) turns the error into an OpenAI- or
Anthropic-shaped body with the status PROTOCOLS.md §4.12 gives. Messages are written for clients and
never carry secrets, upstream bodies or stack traces.
"""

from __future__ import annotations

from .dialects import Dialect


class GatewayError(Exception):
    status = 500
    anthropic_type = "api_error"
    openai_type = "server_error"
    openai_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def status_for(self, dialect: Dialect) -> int:
        return self.status


class InvalidRequest(GatewayError):
    status = 400
    anthropic_type = "invalid_request_error"
    openai_type = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    status = 401
    anthropic_type = "authentication_error"
    openai_type = "invalid_request_error"
    openai_code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    anthropic_type = "permission_error"
    openai_type = "permission_error"


class ModelNotFound(GatewayError):
    status = 404
    anthropic_type = "not_found_error"
    openai_type = "invalid_request_error"
    openai_code = "model_not_found"


class NotFound(GatewayError):
    status = 404
    anthropic_type = "not_found_error"
    openai_type = "invalid_request_error"


class MethodNotAllowed(GatewayError):
    status = 405
    anthropic_type = "invalid_request_error"
    openai_type = "invalid_request_error"


class RequestTooLarge(GatewayError):
    status = 413
    anthropic_type = "request_too_large"
    openai_type = "invalid_request_error"


class RateLimited(GatewayError):
    status = 429
    anthropic_type = "rate_limit_error"
    openai_type = "requests"
    openai_code = "rate_limit_exceeded"


class BillingError(GatewayError):
    """Out of credit, in each protocol's own words: Anthropic 402 ``billing_error``, OpenAI 429
    ``insufficient_quota`` (an upstream's, translated, or the gateway's own budget)."""

    status = 402
    anthropic_type = "billing_error"
    openai_type = "insufficient_quota"
    openai_code = "insufficient_quota"

    def status_for(self, dialect: Dialect) -> int:
        return 402 if dialect is Dialect.ANTHROPIC_MESSAGES else 429


class BudgetExceeded(BillingError):
    """A key's or team's budget cannot cover the request; clients must not retry it."""

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers={**(headers or {}), "x-should-retry": "false"})


class UpstreamError(GatewayError):
    """The upstream answered with an error the gateway could not pass through as it was."""

    status = 500
    anthropic_type = "api_error"
    openai_type = "server_error"


class UpstreamUnavailable(GatewayError):
    """No connection to the upstream, or it dropped the connection (502)."""

    status = 502
    anthropic_type = "api_error"
    openai_type = "server_error"


class Overloaded(GatewayError):
    """Anthropic's 529; OpenAI clients do not know 529, so they get 503 (both SDKs retry it)."""

    status = 529
    anthropic_type = "overloaded_error"
    openai_type = "server_error"
    openai_code = "service_unavailable"

    def status_for(self, dialect: Dialect) -> int:
        return 529 if dialect is Dialect.ANTHROPIC_MESSAGES else 503


class ServiceUnavailable(GatewayError):
    status = 503
    anthropic_type = "overloaded_error"
    openai_type = "server_error"
    openai_code = "service_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    anthropic_type = "timeout_error"
    openai_type = "timeout"


_BY_STATUS: dict[int, type[GatewayError]] = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    413: RequestTooLarge,
    429: RateLimited,
    502: UpstreamUnavailable,
    503: ServiceUnavailable,
    504: UpstreamTimeout,
    529: Overloaded,
}


def error_for_status(status: int, message: str) -> GatewayError:
    """The error a client should see for an upstream status whose body could not be passed on."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = InvalidRequest if 400 <= status < 500 else UpstreamError
    return cls(message, status=status if cls in (InvalidRequest, UpstreamError) else None)
