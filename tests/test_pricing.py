"""Prices and costs: the shipped table, overrides, and the cost of real wire usage in every dialect —
pass-through streams included — against values computed by hand from the price table.

Hand computations are in USD per million tokens (the table's unit), so ``1e-6 * (...)`` below.
"""

from __future__ import annotations

import msgspec
import pytest

from ccm_gateway import load_config
from ccm_gateway.billing.cost import cost_of
from ccm_gateway.billing.pricing import PriceError, PriceTable, load_price_file
from ccm_gateway.config import ConfigError
from ccm_gateway.dialects import anthropic_messages, anthropic_stream, gemini, openai_chat
from ccm_gateway.dialects.canonical import Names, UsageEv
from ccm_gateway.exchange import Usage
from ccm_gateway.streaming import UsageSniffer

TABLE = PriceTable()
enc = msgspec.json.encode


def cost(usage: Usage, model: str, table: PriceTable = TABLE) -> float:
    price = table.lookup(None, model)
    assert price is not None, model
    result = cost_of(usage, price)
    assert result is not None
    return result.total


# --- the table -------------------------------------------------------------------------------------


def test_shipped_table_covers_the_current_models() -> None:
    rows = load_price_file()
    for model in ("gpt-4.1", "gpt-4.1-mini", "gpt-4o", "gpt-4o-mini", "o3", "o4-mini", "claude-sonnet-4-5",
                  "claude-opus-4-1", "claude-haiku-4-5", "gemini-2.5-pro", "gemini-2.5-flash", "deepseek-chat"):
        assert model in rows and TABLE.lookup(None, model) is not None
    assert TABLE.lookup(None, "gemini-2.5-pro").long_context is not None  # the >200k tier


def test_lookup_strips_dates_and_prefers_provider_rows() -> None:
    assert TABLE.lookup("openai", "gpt-4.1-2025-04-14").name == "gpt-4.1"
    assert TABLE.lookup("anthropic", "claude-sonnet-4-5-20250929").name == "claude-sonnet-4-5"
    assert TABLE.lookup("openrouter", "deepseek/deepseek-chat").name == "deepseek-chat"
    assert TABLE.for_deployment("openai/gpt-4o-mini").name == "gpt-4o-mini"
    assert TABLE.lookup("local", "llama3.1:8b") is None  # unknown: no guess
    table = PriceTable({"azure/gpt-4o": {"input": 1.0, "output": 2.0}, "local/*": {"input": 0, "output": 0},
                        "azure/my-deploy": {"same_as": "gpt-4o-mini"}})
    assert table.lookup("azure", "gpt-4o").base.input == pytest.approx(1e-6)
    assert table.lookup("openai", "gpt-4o").base.input == pytest.approx(2.5e-6)
    assert table.lookup("local", "llama3.1:8b").base.output == 0
    assert table.lookup("azure", "my-deploy").name == "gpt-4o-mini"


def test_bad_price_rows_fail_at_config_load_with_their_path() -> None:
    with pytest.raises(ConfigError) as err:
        load_config({"pricing": {"models": {"m": {"input": "cheap", "output": 1}}}}, env={}, dotenv=False)
    assert 'pricing.models."m".input: expected a number' in str(err.value)
    with pytest.raises(PriceError, match="same_as"):
        PriceTable({"x": {"same_as": "no-such-model"}})
    with pytest.raises(ConfigError, match=r"keys\[0\].budget_period"):
        load_config({"keys": [{"name": "k", "key": "k" * 12, "budget_usd": 1, "budget_period": "weekly"}]},
                    env={}, dotenv=False)


# --- OpenAI: prompt_tokens includes cached_tokens; completion_tokens includes reasoning ----------------

OPENAI_USAGE = {"prompt_tokens": 1000, "completion_tokens": 300, "total_tokens": 1300,
                "prompt_tokens_details": {"cached_tokens": 600},
                "completion_tokens_details": {"reasoning_tokens": 200}}
# o4-mini: input 1.10, cache read 0.275, output 4.40 (reasoning billed as output)
OPENAI_COST = 1e-6 * (400 * 1.10 + 600 * 0.275 + 300 * 4.40)


def test_openai_json_cost_counts_cached_tokens_once() -> None:
    usage = Usage()
    openai_chat.apply_usage(enc({"id": "x", "choices": [], "usage": OPENAI_USAGE}), usage)
    assert (usage.input, usage.cache_read, usage.output, usage.reasoning) == (400, 600, 300, 200)
    assert cost(usage, "o4-mini") == pytest.approx(OPENAI_COST)
    naive = 1e-6 * (1000 * 1.10 + 600 * 0.275 + 300 * 4.40)  # cache added on top of the inclusive prompt
    assert cost(usage, "o4-mini") < naive


def test_openai_pass_through_stream_cost() -> None:
    usage = Usage()
    sniffer = UsageSniffer(openai_chat.apply_usage, usage)
    chunks = [b'data: {"choices":[{"delta":{"content":"Hi"}}],"usage":null}\n\n',
              b'data: {"choices":[],"usage":' + enc(OPENAI_USAGE) + b"}\n\n", b"data: [DONE]\n\n"]
    for chunk in chunks:
        sniffer.feed(chunk)
    assert cost(usage, "o4-mini") == pytest.approx(OPENAI_COST)


def test_separately_priced_reasoning_is_split_from_output() -> None:
    table = PriceTable({"thinker": {"input": 1.0, "output": 4.0, "reasoning": 10.0}})
    usage = Usage()
    openai_chat.apply_usage(enc({"usage": OPENAI_USAGE}), usage)
    assert cost(usage, "thinker", table) == pytest.approx(1e-6 * (400 * 1.0 + 600 * 1.0 + 100 * 4.0 + 200 * 10.0))


# --- Anthropic: input_tokens excludes cache reads and writes -------------------------------------------

ANT_USAGE = {"input_tokens": 100, "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 5000,
             "output_tokens": 400}
# claude-sonnet-4-5: input 3, cache read 0.30, cache write (5m) 3.75, output 15
ANT_COST = 1e-6 * (100 * 3 + 5000 * 0.30 + 2000 * 3.75 + 400 * 15)


def test_anthropic_json_cost_with_cache_read_and_write() -> None:
    usage = Usage()
    anthropic_messages.apply_usage(enc({"type": "message", "usage": ANT_USAGE}), usage)
    assert (usage.input, usage.cache_read, usage.cache_write, usage.output) == (100, 5000, 2000, 400)
    assert cost(usage, "claude-sonnet-4-5") == pytest.approx(ANT_COST)


def test_anthropic_pass_through_stream_takes_the_last_cumulative_usage() -> None:
    usage = Usage()
    sniffer = UsageSniffer(anthropic_messages.apply_usage, usage)
    start = {"type": "message_start", "message": {"id": "m", "usage": {**ANT_USAGE, "output_tokens": 1}}}
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": ANT_USAGE}  # repeats input
    for event in (b"event: message_start\ndata: " + enc(start) + b"\n\n",
                  b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"Hi"}}\n\n',
                  b"event: message_delta\ndata: " + enc(delta) + b"\n\n",
                  b'event: message_stop\ndata: {"type":"message_stop"}\n\n'):
        sniffer.feed(event)
    assert cost(usage, "claude-sonnet-4-5") == pytest.approx(ANT_COST)  # not the sum of both events


def test_anthropic_long_context_tier_counts_the_cache_in_the_prompt() -> None:
    usage = Usage()
    anthropic_messages.apply_usage(enc({"usage": {"input_tokens": 150_000, "cache_read_input_tokens": 60_000,
                                                  "cache_creation_input_tokens": 0, "output_tokens": 1000}}), usage)
    assert cost(usage, "claude-sonnet-4-5") == pytest.approx(1e-6 * (150_000 * 6 + 60_000 * 0.60 + 1000 * 22.5))


def test_anthropic_one_hour_cache_writes_use_their_rate_when_known() -> None:
    usage = Usage()
    usage.cache_write, usage.cache_write_1h, usage.output = 1000, 400, 10
    assert cost(usage, "claude-haiku-4-5") == pytest.approx(1e-6 * (600 * 1.25 + 400 * 2.0 + 10 * 5.0))


ANT_SPLIT = {**ANT_USAGE, "cache_creation_input_tokens": 3000,
             "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000}}
# claude-sonnet-4-5: cache write 5m 3.75, 1h 6.0 — 1000 written for 5 minutes, 2000 for an hour
ANT_SPLIT_COST = 1e-6 * (100 * 3 + 5000 * 0.30 + 1000 * 3.75 + 2000 * 6.0 + 400 * 15)


def test_anthropic_json_prices_one_hour_cache_writes_at_their_rate() -> None:
    usage = Usage()
    anthropic_messages.apply_usage(enc({"type": "message", "usage": ANT_SPLIT}), usage)
    assert (usage.cache_write, usage.cache_write_1h) == (3000, 2000)
    assert cost(usage, "claude-sonnet-4-5") == pytest.approx(ANT_SPLIT_COST)
    assert abs(ANT_SPLIT_COST - 0.02355) < 1e-12  # not 0.01905: all 3000 at the 5-minute rate


@pytest.mark.parametrize("path", ["pass-through", "translated"])
def test_anthropic_stream_keeps_the_one_hour_split(path: str) -> None:
    start = {"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "model": "x",
                                                  "content": [], "usage": {**ANT_SPLIT, "output_tokens": 1}}}
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"},  # no split repeated here
             "usage": {**ANT_USAGE, "cache_creation_input_tokens": 3000}}
    stream = [b"event: message_start\ndata: " + enc(start) + b"\n\n",
              b"event: message_delta\ndata: " + enc(delta) + b"\n\n",
              b'event: message_stop\ndata: {"type":"message_stop"}\n\n']
    usage = Usage()
    if path == "pass-through":
        sniffer = UsageSniffer(anthropic_messages.apply_usage, usage)
        for chunk in stream:
            sniffer.feed(chunk)
    else:
        decoder = anthropic_stream.StreamDecoder(Names())
        events = [ev for chunk in stream for ev in decoder.feed(chunk)] + decoder.close()
        for ev in events:
            if isinstance(ev, UsageEv):
                ev.apply(usage)
    assert (usage.cache_write, usage.cache_write_1h, usage.output) == (3000, 2000, 400)
    assert cost(usage, "claude-sonnet-4-5") == pytest.approx(ANT_SPLIT_COST)


# --- Gemini: promptTokenCount includes cached content; thoughts are output ---------------------------


def test_gemini_cost_with_cache_and_thoughts() -> None:
    usage = gemini.usage_of({"promptTokenCount": 12_000, "cachedContentTokenCount": 10_000,
                             "candidatesTokenCount": 800, "thoughtsTokenCount": 1200})
    assert (usage.input, usage.cache_read, usage.output, usage.reasoning) == (2000, 10_000, 2000, 1200)
    # gemini-2.5-flash: input 0.30, cache read 0.03, output 2.50 (thinking included)
    assert cost(usage, "gemini-2.5-flash") == pytest.approx(1e-6 * (2000 * 0.30 + 10_000 * 0.03 + 2000 * 2.50))


def test_gemini_pro_above_200k_prices_everything_at_the_long_tier() -> None:
    usage = gemini.usage_of({"promptTokenCount": 250_000, "cachedContentTokenCount": 50_000,
                             "candidatesTokenCount": 1000, "thoughtsTokenCount": 500})
    assert cost(usage, "gemini-2.5-pro") == pytest.approx(1e-6 * (200_000 * 2.50 + 50_000 * 0.25 + 1500 * 15.0))
    small = gemini.usage_of({"promptTokenCount": 1000, "candidatesTokenCount": 100})
    assert cost(small, "gemini-2.5-pro") == pytest.approx(1e-6 * (1000 * 1.25 + 100 * 10.0))


def test_unknown_model_costs_nothing_known() -> None:
    assert cost_of(Usage(), TABLE.lookup("local", "mystery-model")) is None
