"""Prometheus metrics recorded per request (``Metrics.record``) — the hot-path half of ``/metrics``.

Labels are bounded: ``route`` is a configured model name, or an ad-hoc name (``provider/model``, a
detected name) among the first ``MAX_ADHOC_ROUTES`` that succeeded, else ``"other"``; ``provider`` is a
configured provider; ``model`` the deployment's upstream model (``"other"`` with the route). No
request ids, key values or user text. Labelled children are cached per label tuple, so a request
costs a few dict lookups and observations, no string formatting.

With several workers, prometheus-client's multi-process mode (``PROMETHEUS_MULTIPROC_DIR``, set by
the CLI) keeps each worker's values in files that ``/metrics`` sums; ``in_flight_requests`` is a
``livesum`` gauge. In one process the values are plain Python numbers (no lock: one app serves on
one event loop) turned into metric families at scrape time — a prometheus-client child costs a lock
per value and a linear bucket scan per observation, several microseconds a request. What is read at
scrape time lives in ``scrape.py``.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from ..exchange import Exchange

MAX_ADHOC_ROUTES = 32
_UNSLOTTED = "\x00unslotted"  # cache key of failed ad-hoc names (no route can be called this)
NONE = "none"
OTHER = "other"
# Latency buckets (seconds) from sub-millisecond gateway overhead to long generations.
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
GAP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_STATUS = tuple(str(code) for code in range(600))
TOKEN_KINDS = ("input", "output", "cache_read", "cache_write", "reasoning")
_DEPLOYMENT = ("route", "provider", "model")


def multiprocess_dir() -> str | None:
    """The directory shared by the workers' metric files, when running several."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _Value:
    """A counter or gauge child: a float."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class _Buckets:
    """A histogram child: per-bucket counts (the last is +Inf) and the sum; cumulated at scrape time."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount


class _Family:
    """A labelled metric kept in plain numbers; ``labels()`` matches prometheus-client's call."""

    def __init__(self, kind: str, name: str, doc: str, labelnames: tuple[str, ...],
                 buckets: tuple[float, ...] = ()) -> None:
        self.kind, self.name, self.doc, self.labelnames, self.buckets = kind, name, doc, labelnames, buckets
        self.children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = _Buckets(self.buckets) if self.kind == "histogram" else _Value()
        return child

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self.labels().dec(amount)

    def family(self) -> Metric:
        if self.kind == "counter":
            out: Any = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
            for values, child in self.children.items():
                out.add_metric(values, child.value)
            return out
        if self.kind == "gauge":
            out = GaugeMetricFamily(self.name, self.doc, labels=self.labelnames)
            for values, child in self.children.items():
                out.add_metric(values, child.value)
            return out
        out = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        les = [*(floatToGoString(b) for b in self.buckets), "+Inf"]
        for values, child in self.children.items():
            running, cumulative = 0, []
            for le, count in zip(les, child.counts, strict=True):
                running += count
                cumulative.append((le, running))
            out.add_metric(values, cumulative, child.total)
        return out


class _Collector:
    def __init__(self, families: list[_Family]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return [f.family() for f in self.families]


class _Children:
    """The labelled children of one (route, provider, model), looked up once and kept."""

    __slots__ = ("cost", "duration", "gap", "overhead", "retries", "tokens", "ttft", "upstream")

    def __init__(self, m: Metrics, labels: tuple[str, str, str]) -> None:
        self.duration = m.request_duration.labels(*labels)
        self.upstream = m.upstream_duration.labels(*labels)
        self.overhead = m.overhead_duration.labels(*labels)
        self.ttft = m.ttft.labels(*labels)
        self.gap = m.chunk_gap.labels(*labels)
        self.cost = m.cost.labels(*labels)
        self.retries = m.retries.labels(*labels)
        self.tokens = tuple(m.tokens.labels(*labels, kind) for kind in TOKEN_KINDS)


class Metrics:
    """One app's request metrics in their own registry (several apps in one process stay apart)."""

    def __init__(self, routes: set[str] | frozenset[str] = frozenset(), registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.shared = multiprocess_dir() is not None  # several workers: prometheus-client's file-backed values
        self._own: list[_Family] = []
        self.routes = frozenset(routes)
        self._adhoc: set[str] = set()
        self._children: dict[tuple[str | None, str | None], tuple[tuple[str, str, str], _Children]] = {}
        self._requests: dict[tuple[Any, ...], Any] = {}
        r = self.registry
        c, h = self._counter, self._histogram
        self.requests = c("ccm_requests", "API requests answered, by route, provider, upstream model, dialect and "
                          "status", ("route", "provider", "model", "dialect", "status"), r)
        self.request_duration = h("ccm_request_duration_seconds", "Total time from request to last byte", r,
                                  LATENCY_BUCKETS)
        self.upstream_duration = h("ccm_upstream_duration_seconds", "Time inside upstream attempts (send to last "
                                   "byte relayed)", r, LATENCY_BUCKETS)
        self.overhead_duration = h("ccm_overhead_duration_seconds", "Gateway time: total minus upstream", r,
                                   OVERHEAD_BUCKETS)
        self.ttft = h("ccm_time_to_first_token_seconds", "Request start to the first upstream chunk of a stream", r,
                      LATENCY_BUCKETS)
        self.chunk_gap = h("ccm_stream_chunk_gap_seconds", "The longest gap between two upstream chunks, one "
                           "observation per stream", r, GAP_BUCKETS)
        self.tokens = c("ccm_tokens", "Tokens by kind (input excludes cache reads and writes)", (*_DEPLOYMENT, "kind"),
                        r)
        self.cost = c("ccm_cost_usd", "Cost of answered requests in USD (priced models only)", _DEPLOYMENT, r)
        self.retries = c("ccm_retries", "Upstream attempts beyond the first", _DEPLOYMENT, r)
        self.fallbacks = c("ccm_fallbacks", "Requests answered by a fallback route", ("route", "fallback"), r)
        self.rate_limited = c("ccm_rate_limit_rejections", "Requests refused by the gateway's rate limits",
                              ("dialect",), r)
        if self.shared:
            self.in_flight: Any = prometheus_client.Gauge("ccm_in_flight_requests", "API requests being served",
                                                          registry=r, multiprocess_mode="livesum")
        else:
            self.in_flight = _Family("gauge", "ccm_in_flight_requests", "API requests being served", ())
            self._own.append(self.in_flight)
            self.in_flight.labels()  # shown as 0 before the first request
            r.register(_Collector(self._own))
        self._rate_limited = {d: self.rate_limited.labels(d) for d in ("openai_chat", "anthropic_messages")}

    def _counter(self, name: str, doc: str, labelnames: tuple[str, ...], registry: CollectorRegistry) -> Any:
        if self.shared:
            return prometheus_client.Counter(name, doc, labelnames, registry=registry)
        family = _Family("counter", name, doc, labelnames)
        self._own.append(family)
        return family

    def _histogram(self, name: str, doc: str, registry: CollectorRegistry, buckets: tuple[float, ...]) -> Any:
        """Labelled by deployment, like every per-request histogram."""
        if self.shared:
            return prometheus_client.Histogram(name, doc, _DEPLOYMENT, buckets=buckets, registry=registry)
        family = _Family("histogram", name, doc, _DEPLOYMENT, buckets)
        self._own.append(family)
        return family

    def labels(self, ex: Exchange, ok: bool = True) -> tuple[tuple[str, str, str], _Children]:
        route = ex.route
        if not ok and route is not None and route not in self.routes and route not in self._adhoc:
            route = _UNSLOTTED  # a failed ad-hoc name (client text) never takes one of the slots
        key = (route, ex.deployment)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = (labels := self._label(route, ex.deployment)), _Children(self, labels)
            if len(self._children) > 4 * MAX_ADHOC_ROUTES + len(self.routes) * 8:
                self._children.clear()  # only the cache: the children stay registered
        return found

    def _label(self, route: str | None, deployment: str | None) -> tuple[str, str, str]:
        provider, _, model = (deployment or "").partition("/")
        if route is None:
            return NONE, provider or NONE, model or NONE
        if route is _UNSLOTTED:
            return OTHER, provider or NONE, OTHER
        if route not in self.routes:
            if route not in self._adhoc and len(self._adhoc) < MAX_ADHOC_ROUTES:
                self._adhoc.add(route)
            if route not in self._adhoc:
                return OTHER, provider or NONE, OTHER
        return route, provider or NONE, model or NONE

    def record(self, ex: Exchange, status: int, total: float, ttft: float | None, rate_limited: bool) -> None:
        """Everything one finished request contributes."""
        labels, children = self.labels(ex, status < 400)
        dialect = ex.dialect.value
        key = (labels, dialect, status)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.requests.labels(*labels, dialect, _STATUS[status % 600])
        counter.inc()
        children.duration.observe(total)
        if rate_limited:
            (self._rate_limited.get(dialect) or self.rate_limited.labels(dialect)).inc()
        if not ex.attempts:
            return
        upstream = ex.upstream_time
        if upstream:  # 0: an endpoint that does not time its attempts yet (embeddings)
            children.upstream.observe(upstream)
            children.overhead.observe(max(total - upstream, 0.0))
        if ttft is not None:
            children.ttft.observe(ttft)
            children.gap.observe(ex.chunk_gap)
        usage = ex.usage
        for child, value in zip(children.tokens, (usage.input, usage.output, usage.cache_read, usage.cache_write,
                                                  usage.reasoning), strict=True):
            if value:
                child.inc(value)
        if ex.cost:
            children.cost.inc(ex.cost)
        if ex.attempts > 1:
            children.retries.inc(ex.attempts - 1)
        fallback = getattr(ex, "fallback", None)
        if fallback:
            self.fallbacks.labels(labels[0], fallback if fallback in self.routes else OTHER).inc()
