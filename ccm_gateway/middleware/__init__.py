"""The gateway's stages, each a pure ASGI middleware usable on its own.

A stage acts on requests that carry an Exchange (``exchange_of(scope)``) and lets every other
request by. Order in the default chain: ExchangeMiddleware (outermost) → RequestIdMiddleware →
(auth, rate limit, token count, billing, breaker: later issues) → the endpoints.
"""

from .exchange import ExchangeMiddleware
from .request_id import RequestIdMiddleware

__all__ = ["ExchangeMiddleware", "RequestIdMiddleware"]
