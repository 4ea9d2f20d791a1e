"""The price table: the shipped ``data/prices.toml`` plus the config's ``[pricing.models]`` rows.

A model without a price is *unknown*: its cost is recorded as null and counted, never guessed.
Lookups try ``provider/model``, then the bare model, each also without a date suffix, then the
config's fnmatch patterns; results are cached per (provider, model).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRICES_PATH = Path(__file__).resolve().parent.parent / "data" / "prices.toml"
PER_TOKEN = 1e-6  # the table is in USD per million tokens
_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")
_RATE_FIELDS = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h", "reasoning")


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per token for one tier; missing fields were filled with their fallbacks at load."""

    input: float
    output: float
    cache_read: float
    cache_write_5m: float
    cache_write_1h: float
    reasoning: float


@dataclass(frozen=True, slots=True)
class Price:
    """A model's rates, and the long-context tier that replaces them above ``above`` prompt tokens."""

    name: str  # the row that matched, for the ledger and the headers
    base: Rates
    long_context: Rates | None = None
    above: int | None = None

    def rates_for(self, prompt_tokens: int) -> Rates:
        if self.long_context is not None and self.above is not None and prompt_tokens > self.above:
            return self.long_context
        return self.base


class PriceError(ValueError):
    """A price row that cannot be used (names the row and the field)."""


def _rates(row: Mapping[str, Any], where: str) -> Rates:
    values: dict[str, float] = {}
    for name in _RATE_FIELDS:
        value = row.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise PriceError(f"{where}.{name}: expected a number >= 0 (USD per million tokens), got {value!r}")
        values[name] = float(value)
    for required in ("input", "output"):
        if required not in values:
            raise PriceError(f"{where}.{required}: required")
    values.setdefault("cache_read", values["input"])
    values.setdefault("cache_write_5m", values["input"])
    values.setdefault("cache_write_1h", values["cache_write_5m"])
    values.setdefault("reasoning", values["output"])
    return Rates(**{k: v * PER_TOKEN for k, v in values.items()})


def parse_price(name: str, row: Mapping[str, Any], where: str = "pricing.models") -> Price:
    at = f'{where}."{name}"'
    known = {*_RATE_FIELDS, "long_context", "same_as", "provider"}
    unknown = sorted(set(row) - known)
    if unknown:
        raise PriceError(f"{at}: unknown field(s) {', '.join(unknown)}")
    long = row.get("long_context")
    if long is None:
        return Price(name, _rates(row, at))
    if not isinstance(long, Mapping) or not isinstance(long.get("above"), int) or long["above"] < 1:
        raise PriceError(f"{at}.long_context: expected a table with above = <prompt tokens> and rates")
    tier = {**{k: v for k, v in row.items() if k in _RATE_FIELDS}, **long}
    return Price(name, _rates(row, at), _rates(tier, f"{at}.long_context"), int(long["above"]))


def load_price_file(path: Path = PRICES_PATH) -> dict[str, Mapping[str, Any]]:
    with open(path, "rb") as f:
        return dict(tomllib.load(f).get("models", {}))


class PriceTable:
    """Prices by model name; ``overrides`` (the config's rows) replace or add to the shipped ones."""

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 base: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        rows = dict(load_price_file() if base is None else base)
        rows.update(overrides or {})
        aliases = {n: r["same_as"] for n, r in rows.items() if "same_as" in r}
        self.exact: dict[str, Price] = {}
        self.patterns: list[tuple[str, Price]] = []
        for name, row in rows.items():
            if name in aliases:
                continue
            price = parse_price(name, row)
            if "*" in name or "?" in name:
                self.patterns.append((name, price))
            else:
                self.exact[name] = price
        for name, target in aliases.items():
            price = self.exact.get(target)
            if price is None:
                raise PriceError(f'pricing.models."{name}".same_as: no price row named "{target}"')
            if "*" in name or "?" in name:
                self.patterns.append((name, price))
            else:
                self.exact[name] = price
        self._cache: dict[tuple[str, str], Price | None] = {}

    def lookup(self, provider: str | None, model: str) -> Price | None:
        """The price of ``model`` served by ``provider``, or None when it is unknown."""
        key = (provider or "", model)
        if key in self._cache:
            return self._cache[key]
        price = self._find(provider, model)
        if len(self._cache) < 10_000:
            self._cache[key] = price
        return price

    def for_deployment(self, label: str | None) -> Price | None:
        """Price for an Exchange's ``deployment`` label (``"provider/upstream-model"``)."""
        if not label:
            return None
        provider, _, model = label.partition("/")
        return self.lookup(provider, model) if model else self.lookup(None, provider)

    def _find(self, provider: str | None, model: str) -> Price | None:
        names = [model, _DATE_SUFFIX.sub("", model)]
        if "/" in model:  # "deepseek/deepseek-chat" (OpenRouter style): the last segment
            tail = model.rsplit("/", 1)[1]
            names += [tail, _DATE_SUFFIX.sub("", tail)]
        candidates = [f"{provider}/{n}" for n in names] if provider else []
        candidates += names
        for name in candidates:
            price = self.exact.get(name)
            if price is not None:
                return price
        for name in candidates:
            for pattern, price in self.patterns:
                if fnmatch.fnmatchcase(name, pattern):
                    return price
        return None
