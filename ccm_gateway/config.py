"""The configuration schema and its layered loader.

Layers, lowest first: built-in defaults < TOML file < ``CCM_*`` variables from ``.env`` < ``CCM_*``
variables from the process environment < programmatic overrides. An environment override names a
path with double underscores: ``CCM_SERVER__PORT=9000``, ``CCM_PROVIDERS__OPENAI__BASE_URL=…``,
``CCM_MODELS__0__NAME=…`` (names are lower-cased; values are read as TOML values when they parse,
otherwise as strings). Every error names the field's path and what was expected.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from dotenv import dotenv_values
from msgspec import Meta, Struct, field

from .providers.kinds import KINDS, PLANNED_KINDS
from .resilience.policy import ResilienceConfig
from .secrets import MissingSecret, Secret, resolve_reference

__all__ = ["DEFAULT_CONFIG_PATH", "Config", "ConfigError", "load_config"]

DEFAULT_CONFIG_PATH = Path(__file__).parent / "data" / "default.toml"

Positive = Annotated[float, Meta(gt=0)]
PositiveInt = Annotated[int, Meta(ge=1)]
Port = Annotated[int, Meta(ge=0, le=65535)]


class ConfigError(Exception):
    """The config cannot be used; ``errors`` holds one ``path: problem`` line per problem."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("invalid configuration:\n  " + "\n  ".join(errors))


class _Section(Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: Port = 8080
    workers: PositiveInt = 1
    max_body_bytes: PositiveInt = 32 * 1024 * 1024
    graceful_timeout: Positive = 30.0  # seconds in-flight requests get after SIGTERM
    keep_alive_timeout: Positive = 75.0
    read_timeout: Positive = 60.0  # seconds a request body may take to arrive, else 408 (slow-body slowloris)
    max_header_bytes: PositiveInt = 64 * 1024  # an HTTP/1.1 request head larger than this is refused
    gc_threshold: Annotated[int, Meta(ge=0)] = 10_000  # standalone server: GC generation-0 threshold (0: Python's)


class Timeouts(_Section):
    """Upstream timeouts in seconds. ``first_byte`` bounds the wait for a stream's response head and
    first chunk, ``idle`` the gap between two chunks, ``deadline`` a whole JSON exchange. Streams are
    never cut by ``deadline``: only by ``idle`` and, when set, ``stream_deadline``."""

    connect: Positive = 10.0
    first_byte: Positive = 120.0
    idle: Positive = 120.0
    deadline: Positive = 600.0
    stream_deadline: Positive | None = None  # a total cap on one stream; unset: none
    keepalive: Positive = 15.0  # upstream silence before a translated stream sends the client a keep-alive


class RouteTimeouts(_Section):
    """A route's ``timeout`` table: the fields it sets override its providers' ``Timeouts``."""

    connect: Positive | None = None
    first_byte: Positive | None = None
    idle: Positive | None = None
    deadline: Positive | None = None
    stream_deadline: Positive | None = None
    keepalive: Positive | None = None


class Connections(_Section):
    limit: PositiveInt = 512
    limit_per_host: Annotated[int, Meta(ge=0)] = 0  # 0 = no per-host cap below ``limit``
    dns_cache_ttl: Annotated[int, Meta(ge=0)] = 300
    keepalive_timeout: Positive = 30.0


class ApiKey(_Section):
    key: Secret
    weight: PositiveInt = 1


class ProviderConfig(_Section):
    kind: str
    base_url: str | None = None
    api_keys: list[ApiKey] = field(default_factory=list)
    timeout: Timeouts = field(default_factory=Timeouts)
    connections: Connections = field(default_factory=Connections)
    headers: dict[str, str] = field(default_factory=dict)  # fixed extra upstream headers
    stream_options: bool | None = None  # None: the kind's default
    api_version: str | None = None  # Azure's ``api-version`` query value; None: the kind's default


class Target(_Section):
    provider: str
    model: str
    weight: PositiveInt = 1


class ModelRoute(_Section):
    name: str
    targets: Annotated[list[Target], Meta(min_length=1)]
    fallbacks: list[str] = field(default_factory=list)
    context_window: PositiveInt | None = None
    max_output_tokens: PositiveInt | None = None
    context_window_fallbacks: list[str] = field(default_factory=list)  # when the prompt does not fit the window
    content_policy_fallbacks: list[str] = field(default_factory=list)  # when the upstream refuses the content
    timeout: RouteTimeouts | None = None  # overrides the providers' timeouts for this route


class KeyConfig(_Section):
    """A gateway key that clients present (checked by the auth stage; limits by the rate-limit stage).

    ``models`` are route names or ``fnmatch`` patterns (``"gpt-*"``, ``"openai/*"``); ``rpm``/``tpm``/
    ``concurrency`` left unset take the ``[limits]`` defaults."""

    name: str
    key: Secret | None = None
    key_sha256: str | None = None
    team: str | None = None
    models: list[str] = field(default_factory=lambda: ["*"])
    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    concurrency: PositiveInt | None = None
    budget_usd: Annotated[float, Meta(ge=0)] | None = None
    budget_period: str | None = None


class AuthConfig(_Section):
    """``enabled`` unset: on when ``[[keys]]`` are configured, off otherwise (``make run``)."""

    enabled: bool | None = None


class LimitsConfig(_Section):
    """Rate-limit defaults. Per key: ``rpm``/``tpm``/``concurrency`` for keys that set none; per client
    IP: ``ip_*``. ``burst`` is the share of a minute's limit that may arrive at once (1.0: a whole
    minute's worth, as OpenAI does). ``max_tokens_cap`` bounds the output tokens reserved up front.
    ``trusted_proxies``: CIDRs whose ``X-Forwarded-For`` is believed."""

    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    concurrency: PositiveInt | None = None
    ip_rpm: PositiveInt | None = None
    ip_tpm: PositiveInt | None = None
    ip_concurrency: PositiveInt | None = None
    burst: Annotated[float, Meta(gt=0, le=1)] = 1.0
    max_tokens_cap: PositiveInt = 4096
    trusted_proxies: list[str] = field(default_factory=list)


class StateConfig(_Section):
    """Where rate-limit counters and budgets live. ``redis``: shared by every instance; while Redis
    errors or takes longer than ``timeout_ms``, each instance enforces limit (and budget) ÷
    ``instances`` locally and retries Redis every ``recheck_ms``."""

    backend: Literal["memory", "redis"] = "memory"
    url: Secret | None = None  # redis://[:password@]host:port/db — may be an env:/file: reference
    timeout_ms: PositiveInt = 50
    instances: PositiveInt = 1
    recheck_ms: PositiveInt = 1000


class TokensConfig(_Section):
    """Prompt token counting (the token-count stage and the count_tokens endpoints)."""

    count_prompts: bool = True  # estimate every chat prompt (rate limits, budgets, context-window check)
    multipliers: dict[str, Annotated[float, Meta(gt=0)]] = field(default_factory=dict)  # family → × tiktoken
    cache_chars: PositiveInt = 64 * 1024 * 1024  # text kept in the per-text count cache
    cache_ttl: Positive = 3600.0
    engine: Literal["compact", "tiktoken"] = "compact"  # compact: ~5 MB per encoding; tiktoken: ~47 MB, faster merges


class RoutingConfig(_Section):
    allow_direct: bool = True  # clients may ask for "provider/model"
    detect_provider: bool = False  # "claude-…" → the anthropic provider, "gpt-…" → openai, …
    default_fallbacks: list[str] = field(default_factory=list)  # routes tried after a route's own fallbacks


class LoggingConfig(_Section):
    """``format``: ``json`` (one object per line), ``text``, or ``auto`` — text on a terminal, JSON
    otherwise; ``access``: one JSON access line per API request on logger ``ccm_gateway.access``."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "text"] = "auto"
    access: bool = True


class MetricsConfig(_Section):
    """``GET /metrics`` in the Prometheus text format; ``require_admin_key``: only with ``[admin] key``."""

    enabled: bool = True
    require_admin_key: bool = False


class TracingConfig(_Section):
    """OpenTelemetry spans (needs the ``otel`` extra); ``propagate``: send ``traceparent`` upstream."""

    enabled: bool = False
    propagate: bool = False


class TeamBudget(_Section):
    budget_usd: Annotated[float, Meta(ge=0)]
    budget_period: str | None = None  # None: billing.budget_period


class BillingConfig(_Section):
    """The billing meter. ``reserve_output_tokens``: the output a budget reservation assumes when the
    request sets no ``max_tokens``; ``budget_period``: the default for keys and teams that set a budget
    without one; ``teams``: budgets shared by every key naming the team."""

    enabled: bool = True
    reserve_output_tokens: PositiveInt = 4096
    budget_period: str = "30d"
    allow_unpriced: bool = False  # may keys with a budget call models without a price (never charged)?
    teams: dict[str, TeamBudget] = field(default_factory=dict)


class LedgerConfig(_Section):
    """The usage ledger. ``path``: the SQLite file (relative to the working directory); unset or ""
    turns the ledger off. Finals are written every ``flush_ms`` or ``batch_size`` records."""

    path: str | None = None
    flush_ms: Positive = 50.0
    batch_size: PositiveInt = 512
    durable_reserve: bool = True  # the request waits for its reserve record's commit (see billing/ledger.py)


class PricingConfig(_Section):
    """Rows that replace or extend ``data/prices.toml`` (same fields; ``same_as`` borrows a row)."""

    models: dict[str, dict[str, Any]] = field(default_factory=dict)


class AdminConfig(_Section):
    """``key``: the bearer key for operator endpoints (``GET /v1/usage``, ``GET /v1/admin/config``);
    unset: they answer 404. ``port``: when set, they answer only on this extra listener (and 404 on
    the API port)."""

    key: Secret | None = None
    port: Port | None = None


class RequestsConfig(_Section):
    """Request hardening (``request_guard.py``): generous caps that stop abuse, not real clients.
    ``max_output_tokens`` refuses absurd ``max_tokens`` outright (``[limits] max_tokens_cap`` only
    bounds what a rate-limit reservation assumes); ``forbidden_keys``: object keys that would let a
    client choose where credentials go (refused anywhere in the body except inside tool schemas and
    tool arguments); ``max_response_bytes``: a non-streaming upstream answer larger than this → 502."""

    max_depth: PositiveInt = 64
    max_messages: PositiveInt = 10_000
    max_content_parts: PositiveInt = 50_000  # summed over all messages
    max_tools: PositiveInt = 1024
    max_output_tokens: PositiveInt = 1_000_000
    max_model_chars: PositiveInt = 256
    forbidden_keys: list[str] = field(
        default_factory=lambda: ["api_base", "base_url", "extra_headers", "api_key", "azure_endpoint"])
    max_response_bytes: PositiveInt = 32 * 1024 * 1024


class Config(_Section):
    server: ServerConfig = field(default_factory=ServerConfig)
    keys: list[KeyConfig] = field(default_factory=list)
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    models: list[ModelRoute] = field(default_factory=list)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    tokens: TokensConfig = field(default_factory=TokensConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    state: StateConfig = field(default_factory=StateConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    billing: BillingConfig = field(default_factory=BillingConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    requests: RequestsConfig = field(default_factory=RequestsConfig)
    resilience: ResilienceConfig = field(default_factory=ResilienceConfig)

    def redacted(self) -> dict[str, Any]:
        """A plain-data view for printing: secrets appear as their source (``env:NAME``) only; fixed
        provider header values (often a credential) and base-URL passwords are masked too."""
        out = msgspec.to_builtins(self, enc_hook=_redact)
        for provider in out.get("providers", {}).values():
            provider["headers"] = {name: "<redacted>" for name in provider.get("headers") or {}}
            base = provider.get("base_url")
            if base and urlsplit(base).password:
                provider["base_url"] = base.replace(urlsplit(base).password, "<redacted>", 1)
        return out


def _redact(obj: object) -> object:
    if isinstance(obj, Secret):
        return f"<secret {obj.source}{'' if obj else ' (absent)'}>"
    raise NotImplementedError(type(obj))


# --- loading -------------------------------------------------------------------------------------

_ENV_PREFIX = "CCM_"
_NAMES = {"float": "a number", "int": "an integer", "str": "a string", "bool": "a boolean",
          "array": "an array", "object": "a table", "null": "nothing"}
_WORD = re.compile(r"`(\w+)`")


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    dotenv: str | os.PathLike[str] | bool = True,
) -> Config:
    """Load, merge and validate a config. ``source`` is a TOML path or an already-parsed mapping.

    ``env`` replaces the process environment (tests); ``dotenv`` is a path, or True for ``./.env``
    when it exists. ``.env`` values never override real environment variables.
    """
    if isinstance(source, Mapping):
        raw: dict[str, Any] = _deep_copy(source)
    elif source is not None:
        raw = _read_toml(Path(source))
    else:
        raw = {}
    environ = dict(_read_dotenv(dotenv))
    environ.update(os.environ if env is None else env)
    errors: list[str] = []
    for name, value in environ.items():
        if name.startswith(_ENV_PREFIX) and "__" in name:
            path = [p.lower() for p in name[len(_ENV_PREFIX):].split("__")]
            _apply_override(raw, path, _parse_env_value(value), errors, f"environment {name}")
    for dotted, value in (overrides or {}).items():
        _apply_override(raw, dotted.split("."), value, errors, f"override {dotted}")
    if errors:
        raise ConfigError(errors)
    config = _convert(raw, environ)
    _check(config)
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML ({exc})"]) from None


def _read_dotenv(dotenv: str | os.PathLike[str] | bool) -> Mapping[str, str]:
    if dotenv is False:
        return {}
    path = Path(".env") if dotenv is True else Path(dotenv)
    if not path.is_file():
        if dotenv is True:
            return {}
        raise ConfigError([f"{path}: no such .env file"])
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_deep_copy(v) for v in value]
    return value


def _parse_env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _apply_override(raw: dict[str, Any], path: list[str], value: Any, errors: list[str], what: str) -> None:
    node: Any = raw
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                errors.append(f"{what}: {'.'.join(path[:i + 1])}: no list item {part}")
                return
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            errors.append(f"{what}: {'.'.join(path[:i])} is not a table")
            return


def _convert(raw: dict[str, Any], environ: Mapping[str, str]) -> Config:
    def dec_hook(kind: type, obj: Any) -> Any:
        if kind is Secret:
            if isinstance(obj, Secret):
                return obj
            if not isinstance(obj, str):
                raise TypeError(f"Expected `str`, got `{type(obj).__name__}`")
            return resolve_reference(obj, environ)
        raise NotImplementedError(kind)

    # Providers are converted one by one: msgspec's error paths do not name dict keys.
    providers_raw = raw.pop("providers", {})
    errors: list[str] = []
    if not isinstance(providers_raw, dict):
        raise ConfigError([f"providers: expected a table, got {_describe(providers_raw)}"])
    providers: dict[str, ProviderConfig] = {}
    for name, body in providers_raw.items():
        if isinstance(body, dict) and isinstance(body.get("api_keys"), list):
            body["api_keys"] = [{"key": k} if isinstance(k, str) else k for k in body["api_keys"]]
        try:
            providers[name] = msgspec.convert(body, ProviderConfig, dec_hook=dec_hook)
        except (msgspec.ValidationError, MissingSecret) as exc:
            errors.append(_format(exc, f"providers.{name}", body))
    try:
        config = msgspec.convert(raw, Config, dec_hook=dec_hook)
    except (msgspec.ValidationError, MissingSecret) as exc:
        errors.insert(0, _format(exc, "", raw))
        config = None
    if errors or config is None:
        raise ConfigError(errors)
    config.providers = providers
    return config


def _format(exc: Exception, prefix: str, raw: Any) -> str:
    """msgspec's ``Expected `float`, got `str` - at `$.timeout.connect``` becomes
    ``providers.x.timeout.connect: expected a number, got "fast"``."""
    text = str(exc)
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        message, where = text, "$`"
    parts = [p for p in re.split(r"\.|\[(\d+)\]", where.rstrip("`").lstrip("$")) if p]
    path = ".".join(filter(None, [prefix, *(f"[{p}]" if p.isdigit() else p for p in parts)]))
    path = path.replace(".[", "[")
    value = _lookup(raw, parts)
    if isinstance(exc, msgspec.ValidationError) and message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]  # msgspec's "Expected …" / "Object …"
    if message.startswith("expected"):
        message = _WORD.sub(lambda m: _NAMES.get(m.group(1), m.group(1)), message)
        if value is not _MISSING and not isinstance(value, dict | list):
            message = re.sub(r", got .*$", f", got {_describe(value)}", message)
    return f"{path or '(top level)'}: {message}"


_MISSING = object()
_KEY_FORMAT = re.compile(r"[\x21-\x7e]{8,256}")  # the auth stage checks presented keys the same way


def _lookup(raw: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(raw, list) and part.isdigit() and int(part) < len(raw):
            raw = raw[int(part)]
        elif isinstance(raw, dict) and part in raw:
            raw = raw[part]
        else:
            return _MISSING
    return raw


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"' if len(value) < 60 else "a string"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _check(config: Config) -> None:
    """Cross-field rules msgspec cannot express; all problems are reported at once."""
    errors: list[str] = []
    for name, p in config.providers.items():
        at = f"providers.{name}"
        if "/" in name or not name:
            errors.append(f"{at}: provider names may not be empty or contain '/'")
        kind = KINDS.get(p.kind)
        if kind is None:
            if p.kind in PLANNED_KINDS:
                errors.append(f"{at}.kind: kind \"{p.kind}\" is not built yet (cross-protocol translation)")
            else:
                errors.append(f"{at}.kind: unknown kind \"{p.kind}\"; expected one of {', '.join(sorted(KINDS))}")
            continue
        if kind.base_url is None and p.base_url is None and kind.name != "mock":
            errors.append(f"{at}.base_url: required for kind \"{p.kind}\"")
        if p.api_version is not None and kind.api_version is None:
            errors.append(f"{at}.api_version: only kinds with an api-version (azure) take one")
        if p.base_url is not None and not p.base_url.startswith(("http://", "https://")):
            errors.append(f"{at}.base_url: expected an http:// or https:// URL, got {_describe(p.base_url)}")
        p.api_keys = [k for k in p.api_keys if k.key]  # absent optional references drop out
    seen: set[str] = set()
    for i, route in enumerate(config.models):
        at = f"models[{i}]"
        if route.name in seen:
            errors.append(f"{at}.name: duplicate model name \"{route.name}\"")
        seen.add(route.name)
        for j, target in enumerate(route.targets):
            if target.provider not in config.providers:
                known = ", ".join(sorted(config.providers)) or "none"
                errors.append(
                    f"{at}.targets[{j}].provider: unknown provider \"{target.provider}\"; configured: {known}"
                )
    for i, route in enumerate(config.models):
        for kind in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
            for j, fallback in enumerate(getattr(route, kind)):
                if fallback not in seen:
                    errors.append(f"models[{i}].{kind}[{j}]: unknown model \"{fallback}\"")
    for j, fallback in enumerate(config.routing.default_fallbacks):
        if fallback not in seen:
            errors.append(f"routing.default_fallbacks[{j}]: unknown model \"{fallback}\"")
    for i, key in enumerate(config.keys):
        if not key.key and key.key_sha256 is None:
            errors.append(f"keys[{i}]: give key or key_sha256 (an optional key reference that is unset counts as none)")
        if key.key_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", key.key_sha256):
            errors.append(f"keys[{i}].key_sha256: expected 64 lower-case hex digits")
        if key.key and not _KEY_FORMAT.fullmatch(key.key.reveal()):
            errors.append(f"keys[{i}].key: expected 8 to 256 printable ASCII characters without spaces")
    names = [k.name for k in config.keys]
    for i, key in enumerate(config.keys):
        if names.count(key.name) > 1:
            errors.append(f"keys[{i}].name: duplicate key name \"{key.name}\"")
    if config.auth.enabled and not config.keys:
        errors.append("auth.enabled: auth is on but no [[keys]] are configured; every request would get 401")
    for i, cidr in enumerate(config.limits.trusted_proxies):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            errors.append(f"limits.trusted_proxies[{i}]: expected an IP network like 10.0.0.0/8, got {_describe(cidr)}")
    errors.extend(_billing_problems(config))
    if config.admin.port is not None and config.admin.port == config.server.port:
        errors.append("admin.port: must differ from server.port (the admin listener is a second one)")
    if config.state.backend == "redis" and not config.state.url:
        errors.append('state.url: required when state.backend = "redis" (e.g. "redis://127.0.0.1:6379/0")')
    if config.metrics.enabled and config.metrics.require_admin_key and not config.admin.key:
        errors.append("metrics.require_admin_key: set [admin] key, or /metrics would answer nobody")
    if config.tracing.enabled and importlib.util.find_spec("opentelemetry") is None:
        errors.append("tracing.enabled: needs OpenTelemetry: pip install 'ccm_gateway[otel]'")
    if errors:
        raise ConfigError(errors)


def _billing_problems(config: Config) -> list[str]:
    """Budget periods and price rows, checked at load so a typo never reaches a bill."""
    from .billing.budgets import check_period
    from .billing.pricing import PriceError, PriceTable

    errors: list[str] = []
    periods = [("billing.budget_period", config.billing.budget_period)]
    periods += [(f"keys[{i}].budget_period", k.budget_period) for i, k in enumerate(config.keys)]
    periods += [(f"billing.teams.{n}.budget_period", t.budget_period) for n, t in config.billing.teams.items()]
    for at, period in periods:
        problem = check_period(period) if period is not None else None
        if problem:
            errors.append(f"{at}: {problem}")
    try:
        PriceTable(config.pricing.models)
    except PriceError as exc:
        errors.append(str(exc))
    return errors
