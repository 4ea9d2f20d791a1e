"""Resilience policy: outcome classification, circuit breakers, cooldowns, credential ejection, retry
budget and backoff — pure logic on an injected clock — plus optional breaker sharing through Redis.
The routing layer (proxy/translate) drives it: ``Health.acquire`` before an attempt, ``Health.record`` after."""

from .backoff import backoff
from .breaker import Breaker, State
from .budget import RetryBudget
from .health import Health, Member
from .outcome import Outcome, classify, retry_after, retryable
from .policy import BreakerPolicy, CooldownPolicy, ResilienceConfig, RetryPolicy

__all__ = [
    "Breaker", "BreakerPolicy", "CooldownPolicy", "Health", "Member", "Outcome", "ResilienceConfig", "RetryBudget",
    "RetryPolicy", "State", "backoff", "classify", "retry_after", "retryable",
]
