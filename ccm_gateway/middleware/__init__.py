"""The gateway's stages, each a pure ASGI middleware usable on its own.

A stage acts on requests that carry an Exchange (``exchange_of(scope)``) and lets every other
request by. Order in the default chain: ExchangeMiddleware (outermost) → RequestIdMiddleware → AuthMiddleware →
RateLimitMiddleware → BillingMiddleware → (breaker: a later issue) → the endpoints (the token-count stage
sits before the rate limits; ``usage_api.UsageEndpoint`` before auth).
"""

from .auth import AuthMiddleware, Principal
from .billing import BillingMiddleware
from .exchange import ExchangeMiddleware
from .ratelimit import RateLimitMiddleware
from .request_id import RequestIdMiddleware

__all__ = [
    "AuthMiddleware", "BillingMiddleware", "ExchangeMiddleware", "Principal", "RateLimitMiddleware",
    "RequestIdMiddleware",
]
