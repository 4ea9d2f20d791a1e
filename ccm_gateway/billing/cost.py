"""Cost of one attempt from its normalised Usage and a Price — each token counted exactly once.

Usage is already normalised (``exchange.Usage``): ``input`` excludes cache reads and writes, and
``output`` includes ``reasoning``. So the cost is a plain sum over disjoint parts; nothing is added on
top of an inclusive count (the LiteLLM double-charge, PROTOCOLS.md P5).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..exchange import Usage
from .pricing import Price


@dataclass(frozen=True, slots=True)
class Cost:
    """USD per part; ``total`` is their sum. ``tier`` says whether the long-context rates applied."""

    input: float
    cache_read: float
    cache_write: float
    output: float
    reasoning: float
    tier: str  # "base" | "long_context"

    @property
    def total(self) -> float:
        return self.input + self.cache_read + self.cache_write + self.output + self.reasoning


def cost_of(usage: Usage, price: Price | None) -> Cost | None:
    """The cost of ``usage`` at ``price``; None when the price is unknown (never a guess)."""
    if price is None:
        return None
    rates = price.rates_for(usage.prompt_total)
    write_1h = min(max(usage.cache_write_1h, 0), max(usage.cache_write, 0))  # Anthropic's 1-hour TTL writes
    reasoning = min(max(usage.reasoning, 0), max(usage.output, 0))
    return Cost(
        input=max(usage.input, 0) * rates.input,
        cache_read=max(usage.cache_read, 0) * rates.cache_read,
        cache_write=(max(usage.cache_write, 0) - write_1h) * rates.cache_write_5m + write_1h * rates.cache_write_1h,
        output=(max(usage.output, 0) - reasoning) * rates.output,
        reasoning=reasoning * rates.reasoning,
        tier="base" if rates is price.base else "long_context",
    )


def estimate_cost(input_tokens: int, output_tokens: int, price: Price | None) -> float:
    """An upper-bound style estimate for a reservation: uncached input plus the output allowance."""
    if price is None:
        return 0.0
    rates = price.rates_for(input_tokens)
    return input_tokens * rates.input + output_tokens * max(rates.output, rates.reasoning)
