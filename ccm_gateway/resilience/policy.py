"""Resilience knobs: breakers, cooldowns, retries. ``config.py`` embeds ``ResilienceConfig`` as
``Config.resilience``; this module imports nothing from the gateway so the policy logic stays testable alone."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct, field

__all__ = ["BreakerPolicy", "CooldownPolicy", "ResilienceConfig", "RetryPolicy"]

Seconds = Annotated[float, Meta(gt=0)]
NonNegative = Annotated[float, Meta(ge=0)]
PositiveInt = Annotated[int, Meta(ge=1)]
Share = Annotated[float, Meta(ge=0, le=1)]


class _Policy(Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class BreakerPolicy(_Policy):
    """When a deployment's breaker opens and for how long (one breaker per provider + base URL + model + key)."""

    consecutive_failures: PositiveInt = 5  # trip after this many failures in a row
    failure_rate: Annotated[float, Meta(gt=0, le=1)] = 0.5  # … or when this share of the window's calls failed
    window: Annotated[float, Meta(ge=1, le=3600)] = 30.0  # seconds of the sliding failure-rate window
    min_calls: PositiveInt = 10  # calls the window needs before the rate counts
    open_base: Seconds = 5.0  # open time after the first trip
    open_max: Seconds = 300.0  # open time cap; closed this long, the trip count starts over
    open_multiplier: Annotated[float, Meta(ge=1)] = 2.0  # open time × this per repeated trip
    jitter: Annotated[float, Meta(ge=0, lt=1)] = 0.2  # ± this share of the open time, so instances spread probes
    half_open_successes: PositiveInt = 2  # probe successes in a row that close the breaker
    max_ejected_share: Share = 0.5  # at most this share of a route's deployments open at once (at least one)

    def __post_init__(self) -> None:
        if self.open_base > self.open_max:
            raise ValueError("open_base must not exceed open_max")


class CooldownPolicy(_Policy):
    """Rate-limited deployments and dead credentials: not breaker failures, but kept out for a while."""

    default: Seconds = 5.0  # cooldown after a 429 that carries no reset header
    min: Seconds = 1.0  # a 429's reset time is clamped to [min, max]
    max: Seconds = 60.0
    eject: Seconds = 300.0  # a dead credential (401/403, insufficient_quota, billing) is out this long

    def __post_init__(self) -> None:
        if self.min > self.max:
            raise ValueError("min must not exceed max")


class RetryPolicy(_Policy):
    """Retries on another deployment: attempts, backoff and a budget that stops retry storms."""

    max_attempts: PositiveInt = 3  # attempts per request, the first one included
    backoff_base: NonNegative = 0.1  # seconds; full-jitter exponential backoff between attempts
    backoff_max: NonNegative = 2.0  # backoff cap, seconds
    budget_ratio: NonNegative = 0.2  # retries allowed per request over the budget window …
    budget_window: Annotated[float, Meta(ge=1, le=3600)] = 10.0  # … of this many seconds …
    budget_min_per_second: NonNegative = 1.0  # … plus this many retries per second, so quiet periods can retry
    request_deadline: Seconds = 600.0  # one overall deadline per request, all attempts included


class ResilienceConfig(_Policy):
    """The ``[resilience]`` section."""

    enabled: bool = True  # false: one attempt, no breakers, no cooldowns (the gateway as a plain proxy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    cooldown: CooldownPolicy = field(default_factory=CooldownPolicy)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    affinity_header: str = "x-ccm-affinity"  # request header that pins a conversation to one deployment
    affinity_metadata: bool = True  # Anthropic ``metadata.user_id`` pins too (keeps the prompt cache warm)
    share_interval: Seconds = 1.0  # seconds between breaker syncs through Redis (state backend "redis")
