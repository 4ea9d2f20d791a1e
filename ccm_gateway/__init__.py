"""ccm_gateway: an embeddable LLM provider gateway (ASGI app + composable ASGI middlewares)."""

from .app import Gateway, create_app, gateway_lifespan
from .config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from .errors import GatewayError
from .exchange import Exchange, Usage, exchange_of
from .middleware import ExchangeMiddleware, RequestIdMiddleware
from .secrets import Secret, register_source

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "Config",
    "ConfigError",
    "Exchange",
    "ExchangeMiddleware",
    "Gateway",
    "GatewayError",
    "RequestIdMiddleware",
    "Secret",
    "Usage",
    "create_app",
    "exchange_of",
    "gateway_lifespan",
    "load_config",
    "register_source",
]
