"""The gateway's stages, each a pure ASGI middleware usable on its own.

A stage acts on requests that carry an Exchange (``exchange_of(scope)``) and lets every other
request by. Order in the default chain (``app.create_app``): ExchangeMiddleware (outermost) →
RequestIdMiddleware → ObserveMiddleware → the admin and usage endpoints → AuthMiddleware →
RequestGuardMiddleware → TokenCountMiddleware → RateLimitMiddleware → BreakerMiddleware →
BillingMiddleware → your own stages → EndpointDispatch (API ``POST``s straight to their endpoints;
everything else to Starlette's router).
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
