"""Token counting: bundled encodings equal tiktoken's, cookbook-exact OpenAI counts, incremental
counting of long conversations, estimates for other families, the context-window refusal and the
count_tokens endpoints."""

from __future__ import annotations

import hashlib
import lzma
import random
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
import regex
import tiktoken
from tiktoken_ext import openai_public

from ccm_gateway import ConfigError, create_app, load_config
from ccm_gateway.mock import MockUpstream, replies
from ccm_gateway.tokens import TokenCounter, bpe, counting, encoding_for_model, encodings, get_encoding
from ccm_gateway.tokens.bpe import BytePairCounter, MergeBudget

from .conftest import gateway_config
from .servers import ServerThread

URLS = {"o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"}
CORPUS = [
    "Hello world! I'm here, you're there, they'll come.", "def f(x):\n    return x**2  # square\n\n\n",
    "日本語のテキストと emoji 🎉🎉 mixed with العربية", "   spaces   and\ttabs\r\n\r\n  ", "<|endoftext|> is literal",
    "1234567890 3.14159 -42 1e10", "a" * 5000, "https://example.com/path?q=1&r=two#frag",
]
# The OpenAI cookbook's examples ("How to count tokens with tiktoken") and the counts the API returned.
COOKBOOK_MESSAGES = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
                                  "into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch "
                                                          "base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to "
                                                               "do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client "
                                "deliverable."},
]
COOKBOOK_TOOLS = [{"type": "function", "function": {
    "name": "get_current_weather", "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "description": "The unit of temperature to return",
                 "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]}}}]
COOKBOOK_TOOL_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


def body(**fields: object) -> bytes:
    return msgspec.json.encode(fields)


@pytest.fixture(scope="module")
def tiktoken_encodings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tiktoken.Encoding]:
    """tiktoken itself, the reference: its documented offline cache filled with our bundled files, which
    tiktoken checks against its SHA-256 digests, and its own split patterns."""
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    for name, url in URLS.items():
        raw = lzma.decompress((encodings.DATA / f"{name}.tiktoken.xz").read_bytes())
        (cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(raw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        return {name: tiktoken.Encoding(**openai_public.ENCODING_CONSTRUCTORS[name]()) for name in URLS}


def varied_corpus() -> list[str]:
    """Code, prose, every script's letters and digits, whitespace and digit runs, emoji sequences,
    special-token text, lone surrogates, and random code points from every plane."""
    rnd = random.Random(7)
    files = sorted(Path(__file__).resolve().parent.parent.glob("ccm_gateway/**/*.py"))[:40]
    texts = [f.read_text() for f in files] + [f.read_text() for f in sorted(Path(__file__).parent.glob("*.py"))[:10]]
    pools = [" \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u1680\u2000\u2028\u2029\u202f\u3000",
             "0123456789\u0660\u0661\u0968\u0969\u0e57\u07c0",  # digits of several scripts
             "abcXYZéÉß\u017f\u01c5\u01c8\ufb01'\u2019sStTlLdD", "日本語中文한국어ภาษาไทยالعربيةעבריתрусскийΕλληνικά",
             "😀👍🏽👨‍👩‍👧‍👦🇺🇸\u200d\ufe0f\u0301\u20dd", "!@#$%^&*()[]{}<>/\\|`~-_=+;:,.?\"'",
             "<|endoftext|><|endofprompt|>", "\ud800\udfff", "\u0558\U0001e6c0\U0003d000\u13c0\u2126"]
    planes = ((0x20, 0x7E), (0xA0, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF))
    for _ in range(1500):
        texts.append("".join("".join(rnd.choice(pool) for _ in range(rnd.choice((1, 2, 3, 5, 8, 20))))
                             for pool in rnd.choices(pools, k=rnd.randint(1, 40))))
        texts.append("".join(chr(rnd.randint(*rnd.choice(planes))) for _ in range(rnd.randint(1, 40))))
    for alphabet in ("abcdefghij", "aaab", "etaoinshrdlu", "日本語中文字", "ёжзийклмн", "a\u0300\u0301", "🎉"):
        texts += ["".join(rnd.choices(alphabet, k=size)) for size in (90, 300, 2000)]  # long pieces: the heap merge
    for width in range(1, 120, 7):
        for ws in (" ", "\t", "\n", " \n", "\r\n", "  \n\n"):
            texts += ["x" + ws * width + "y", ws * width, "1" * width + ws + "2" * (width % 13)]
    return [*CORPUS, *texts]


ENGINES = ["compact", "tiktoken"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", list(URLS))
def test_counts_equal_tiktokens_on_a_varied_corpus(name: str, engine: str,
                                                   tiktoken_encodings: dict[str, tiktoken.Encoding]) -> None:
    reference, ours = tiktoken_encodings[name], get_encoding(name, engine)
    for text in varied_corpus():
        assert ours.count(text) == len(reference.encode(text, disallowed_special=())), text[:80]
        assert ours.count(text) == len(reference.encode(text, disallowed_special=())), text[:80]  # from the memo


# Each code point between letters and before a contraction and digits: the contexts in which the split
# depends on whether it is a letter, a mark, a number or neither (and on which Unicode version says so).
PLANES = [(name, lo) for name in URLS for lo in range(0, 0x30000 if name == "cl100k_base" else 0x110000, 0x20000)]


@pytest.mark.parametrize(("name", "lo"), PLANES)
def test_counts_equal_tiktokens_for_every_code_point(name: str, lo: int,
                                                    tiktoken_encodings: dict[str, tiktoken.Encoding]) -> None:
    reference, ours = tiktoken_encodings[name], get_encoding(name)
    for start in range(lo, min(lo + 0x20000, 0x110000), 0x1000):
        chars = (chr(cp) for cp in range(start, min(start + 0x1000, 0x110000)) if not 0xD800 <= cp <= 0xDFFF)
        text = "".join(f"x{ch}'s{ch}1 " for ch in chars)
        assert ours.count(text) == len(reference.encode(text, disallowed_special=())), hex(start)


@pytest.mark.parametrize("name", list(URLS))
def test_ascii_text_splits_the_same_with_the_ascii_pattern(name: str) -> None:
    full = regex.compile(encodings._SPECS[name][0])
    fast = re.compile(encodings.ASCII_PATTERNS[name], re.ASCII)
    rnd = random.Random(11)
    alphabet = [chr(c) for c in range(128)] + ["'s", "'LL", "'Re", "'d", " ", "\n", "\r\n", "  ", "123", "aB", "/"]
    texts = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 200))) for _ in range(5000)]
    texts += [f.read_text() for f in sorted(Path(__file__).resolve().parent.parent.glob("ccm_gateway/**/*.py"))]
    for text in texts:
        if text.isascii():
            assert fast.findall(text) == full.findall(text), text[:80]


def test_ranks_are_tiktokens(tiktoken_encodings: dict[str, tiktoken.Encoding]) -> None:
    for name, reference in tiktoken_encodings.items():
        ours = get_encoding(name)
        for rank in (0, 255, 256, 1000, 50_000, 99_999, reference.max_token_value - 300):
            assert ours.rank(reference.decode_single_token_bytes(rank)) == rank
        assert ours.rank(b"not one token at all, surely") is None


def test_a_ranks_file_out_of_order_is_refused() -> None:
    with pytest.raises(ValueError, match="line 2"):
        BytePairCounter("broken", r"\S+", b"YQ== 0\nYg== 5\n")


def test_encodings_load_without_any_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(encodings, "_loaded", {})  # a fresh build from the bundled file, not the cache
    for engine in ENGINES:
        assert encodings.get_encoding("cl100k_base", engine).count("hello world") == 2


def test_the_tiktoken_engine_is_tiktoken_and_drops_its_python_copy_of_the_ranks() -> None:
    encoding = get_encoding("o200k_base", "tiktoken")
    assert isinstance(encoding, encodings.TiktokenCounter) and isinstance(encoding.encoding, tiktoken.Encoding)
    assert encoding.encoding._mergeable_ranks == {}  # ~26 MB that only pickling would need
    assert encoding.count("<|endoftext|> hello") == get_encoding("o200k_base").count("<|endoftext|> hello")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("model", "expected"), [("gpt-4o", 124), ("gpt-4o-mini", 124), ("gpt-4-0613", 129),
                                                 ("gpt-3.5-turbo-0125", 129)])
def test_cookbook_message_counts(model: str, expected: int, engine: str) -> None:
    counter = TokenCounter(engine=engine)
    assert counter.count(body(model=model, messages=COOKBOOK_MESSAGES), "openai_chat", model) == (expected, True)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini"])
def test_cookbook_tool_counts(model: str, engine: str) -> None:
    request = body(model=model, messages=COOKBOOK_TOOL_MESSAGES, tools=COOKBOOK_TOOLS)
    assert TokenCounter(engine=engine).count(request, "openai_chat", model) == (101, True)


def test_engine_is_chosen_in_the_config_and_a_bad_one_names_the_field(upstream: MockUpstream) -> None:
    with pytest.raises(ConfigError, match=r"tokens\.engine: invalid enum value 'rust'"):
        load_config({"tokens": {"engine": "rust"}}, env={}, dotenv=False)
    assert load_config(None, env={}, dotenv=False).tokens.engine == "compact"
    config = gateway_config(upstream.base_url)
    config["tokens"] = {"engine": "tiktoken"}
    app = create_app(load_config(config, env={}, dotenv=False))
    assert app.state.gateway.counter.engine == "tiktoken"
    with ServerThread(app) as server:
        r = httpx.post(server.base_url + "/v1/chat/completions/count_tokens",
                       json={"model": "gpt-4.1", "messages": COOKBOOK_TOOL_MESSAGES, "tools": COOKBOOK_TOOLS})
    assert r.status_code == 200 and r.headers["x-ccm-token-count"] == "exact"
    assert r.json()["input_tokens"] == 101


def test_model_encoding_table() -> None:
    assert [encoding_for_model(m) for m in ("gpt-4o-mini", "gpt-4.1", "o3", "gpt-4-0613", "gpt-4", "gpt-3.5-turbo",
                                            "openai/gpt-4o", "claude-sonnet-4-5")] == [
        "o200k_base", "o200k_base", "o200k_base", "cl100k_base", "cl100k_base", "cl100k_base", "o200k_base",
        "o200k_base"]


def history(turns: int) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant",
             "content": f"turn {i}: " + "some code and prose about the change we are making " * 40}
            for i in range(turns)]


def test_second_turn_of_a_long_conversation_only_encodes_the_new_message(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[str] = []

    class Spy:
        def __init__(self, inner: encodings.Encoding) -> None:
            self.inner = inner

        def count(self, text: str, budget: MergeBudget | None = None) -> int:
            encoded.append(text)
            return self.inner.count(text, budget)

    monkeypatch.setattr(counting, "get_encoding", lambda name, engine: Spy(get_encoding(name, engine)))
    counter = TokenCounter()
    turns = history(250)  # ≈100k tokens
    first, _ = counter.count(body(model="gpt-4o", messages=turns), "openai_chat", "gpt-4o")
    assert first > 100_000
    encoded.clear()
    new = {"role": "user", "content": "one more question about the diff"}
    second, _ = counter.count(body(model="gpt-4o", messages=[*turns, new]), "openai_chat", "gpt-4o")
    assert encoded == [new["content"]]
    assert second == first + 3 + 1 + get_encoding("o200k_base").count(new["content"])  # per-message + role


def test_cache_is_bounded_by_size() -> None:
    counter = TokenCounter(cache_chars=10_000)
    for i in range(100):
        counter.text(f"{i} " + "x" * 500)
    assert counter._cache.currsize <= 10_000


def test_anthropic_estimate_uses_the_family_multiplier_and_skips_old_thinking() -> None:
    request = {"model": "claude-sonnet-4-5", "max_tokens": 10, "system": [{"type": "text", "text": "Be brief."}],
               "messages": [
                   {"role": "user", "content": "hello there, how are you today?"},
                   {"role": "assistant", "content": [{"type": "thinking", "thinking": "long old thought " * 50,
                                                      "signature": "s"}, {"type": "text", "text": "Fine."}]},
                   {"role": "user", "content": "good"}]}
    plain = TokenCounter(multipliers={"anthropic": 1.0}).count(body(**request), "anthropic_messages", "claude-x")
    scaled = TokenCounter(multipliers={"anthropic": 2.0}).count(body(**request), "anthropic_messages", "claude-x")
    assert plain[1] is False and scaled[0] == 2 * plain[0]
    assert plain[0] < 60  # the earlier turn's thinking (≈150 tokens) is not input
    with_tools = TokenCounter(multipliers={"anthropic": 1.0}).count(
        body(**request, tools=[{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}]),
        "anthropic_messages", "claude-x")
    assert with_tools[0] > plain[0] + counting.ANTHROPIC_TOOL_PREAMBLE


# --- through the gateway --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokens_gateway(upstream: MockUpstream) -> Iterator[ServerThread]:
    config = gateway_config(upstream.base_url)
    config["models"] += [
        {"name": "tiny-gpt", "targets": [{"provider": "oai", "model": "gpt-4o"}], "context_window": 40},
        {"name": "tiny-claude", "targets": [{"provider": "ant", "model": "claude-sonnet-4-5"}], "context_window": 40},
    ]
    with ServerThread(create_app(load_config(config, env={}, dotenv=False))) as server:
        yield server


ANTHROPIC = {"anthropic-version": "2023-06-01"}


def test_prompt_over_the_window_is_refused_in_the_callers_wording(tokens_gateway: ServerThread) -> None:
    long = [{"role": "user", "content": "word " * 200}]
    r = httpx.post(tokens_gateway.base_url + "/v1/chat/completions", json={"model": "tiny-gpt", "messages": long})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["message"].startswith("This model's maximum context length is 40 tokens. However, your messages "
                                       "resulted in 2")
    r = httpx.post(tokens_gateway.base_url + "/v1/messages", headers=ANTHROPIC,
                   json={"model": "tiny-claude", "max_tokens": 5, "messages": long})
    assert r.status_code == 400
    assert r.json()["error"]["message"].endswith("tokens > 40 maximum")
    assert r.json()["error"]["message"].startswith("prompt is too long: ")


def test_an_estimate_within_its_margin_is_not_refused(tokens_gateway: ServerThread) -> None:
    # ≈ 42 estimated tokens for a 40-token window: the estimator may be 15% high, so it goes upstream.
    short = [{"role": "user", "content": "word " * 30}]
    r = httpx.post(tokens_gateway.base_url + "/v1/messages", headers=ANTHROPIC,
                   json={"model": "tiny-claude", "max_tokens": 5, "messages": short})
    assert r.status_code == 200, r.text


CLAUDE_CODE_COUNT = {
    "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": [{"type": "text", "text": "how many tokens is this?"}]}],
    "tools": [{"name": "Bash", "description": "Run a shell command", "input_schema": {
        "type": "object", "properties": {"command": {"type": "string"}}}}],
}


def test_count_tokens_for_an_anthropic_route_asks_anthropic(tokens_gateway: ServerThread,
                                                            upstream: MockUpstream) -> None:
    r = httpx.post(tokens_gateway.base_url + "/v1/messages/count_tokens?beta=true", headers=ANTHROPIC,
                   json={"model": "claude-sonnet", **CLAUDE_CODE_COUNT})
    assert r.status_code == 200 and r.headers["x-ccm-token-count"] == "upstream"
    assert r.json() == {"input_tokens": replies.count_tokens("how many tokens is this?")}
    sent = next(q for q in reversed(upstream.requests) if q.path == "/v1/messages/count_tokens")
    assert sent.json()["model"] == "claude-sonnet-4-5" and sent.query == ""


def test_count_tokens_falls_back_to_the_estimate_when_anthropic_is_overloaded(tokens_gateway: ServerThread) -> None:
    r = httpx.post(tokens_gateway.base_url + "/v1/messages/count_tokens", headers=ANTHROPIC,
                   json={"model": "claude-sonnet+status=529", **CLAUDE_CODE_COUNT})
    assert r.status_code == 200 and r.headers["x-ccm-token-count"] == "estimate"
    assert r.json()["input_tokens"] > counting.ANTHROPIC_TOOL_PREAMBLE


def test_count_tokens_for_other_upstreams_is_local(tokens_gateway: ServerThread) -> None:
    r = httpx.post(tokens_gateway.base_url + "/v1/messages/count_tokens?beta=true", headers=ANTHROPIC,
                   json={"model": "local-llama", **CLAUDE_CODE_COUNT})
    assert r.status_code == 200 and r.headers["x-ccm-token-count"] == "estimate"
    expected, _ = TokenCounter().count(body(model="x", **CLAUDE_CODE_COUNT), "anthropic_messages", "llama3.1:8b")
    assert r.json() == {"input_tokens": expected}


def test_openai_count_endpoint_is_exact_for_openai_models(tokens_gateway: ServerThread) -> None:
    r = httpx.post(tokens_gateway.base_url + "/v1/chat/completions/count_tokens",
                   json={"model": "tiny-gpt", "messages": COOKBOOK_TOOL_MESSAGES, "tools": COOKBOOK_TOOLS})
    assert r.status_code == 200 and r.headers["x-ccm-token-count"] == "exact"
    assert r.json()["input_tokens"] == 101


def test_count_tokens_errors_keep_the_callers_shape(tokens_gateway: ServerThread) -> None:
    r = httpx.post(tokens_gateway.base_url + "/v1/messages/count_tokens", headers=ANTHROPIC,
                   json={"model": "nope", "messages": []})
    assert r.status_code == 404 and r.json()["type"] == "error"
    r = httpx.post(tokens_gateway.base_url + "/v1/messages/count_tokens", headers=ANTHROPIC, json={"messages": []})
    assert r.status_code == 400 and r.json()["error"]["message"] == "model: field required"


def test_role_shortcut_matches_the_encodings() -> None:
    for name in ("o200k_base", "cl100k_base"):
        for role, tokens in counting._ROLE_TOKENS.items():
            assert get_encoding(name).count(role) == tokens


def test_every_chat_request_carries_its_estimate(gateway: ServerThread) -> None:
    from .conftest import exchange_for

    r = httpx.post(gateway.base_url + "/v1/chat/completions", timeout=10,
                   json={"model": "gpt-4.1", "messages": COOKBOOK_TOOL_MESSAGES, "tools": COOKBOOK_TOOLS})
    assert r.status_code == 200
    assert exchange_for(r.headers["x-request-id"]).token_estimate == 101  # gpt-4.1 is o200k, like gpt-4o


# --- the merge budget: bounded CPU for text that is not whole tokens --------------------------------

PROSE = [
    "网关在把请求发给上游之前，会先数一数提示里有多少个词元。对于中文、日文和韩文的长篇文字，很多片段都不是现成的词元，"  # noqa: RUF001
    "需要逐字节合并；这项工作必须有上限，否则一个恶意客户端就能占满整个进程。正常的对话，即使很长，也远远用不完这个额度。",  # noqa: RUF001
    "ゲートウェイは、リクエストを上流に送る前にプロンプトのトークン数を数えます。日本語の長い文章では、多くの断片が"
    "そのままのトークンではないため、バイト単位の結合が必要になります。通常の会話なら、予算を使い切ることはありません。",
    "Шлюз подсчитывает токены запроса до того, как отправить его дальше. Для длинных текстов на русском языке многие "  # noqa: RUF001
    "словоформы не являются готовыми токенами, и их приходится собирать по байтам; обычная переписка, даже очень "
    "длинная, не исчерпывает бюджет, а злонамеренный клиент не сможет занять процессор на минуты.",  # noqa: RUF001
]


def random_words(seed: int, size: int, alphabet: str = "abcdefghijklmnopqrstuvwxyz") -> str:
    """What an authenticated client can send to make every piece cost a merge: random 1-2 KB words."""
    rnd = random.Random(seed)
    words: list[str] = []
    while sum(map(len, words)) < size:
        words.append("".join(rnd.choices(alphabet, k=rnd.randint(1000, 2000))))
    return " ".join(words)


def test_real_prompts_stay_exact_within_the_merge_budget() -> None:
    """This repository's sources and docs (~400k tokens of code and English) and CJK and Cyrillic prose,
    as one request: all of it merged, none estimated, tiktoken's count."""
    root = Path(__file__).resolve().parent.parent
    files = sorted(root.glob("ccm_gateway/**/*.py")) + sorted(root.glob("tests/*.py")) + sorted(root.glob("*.md"))
    messages = [{"role": "user", "content": f.read_text()} for f in [*files, *sorted(root.glob("docs/*.md"))]]
    messages += [{"role": "user", "content": text} for text in PROSE]
    request = body(model="gpt-4o", messages=messages)
    count, exact = TokenCounter().count(request, "openai_chat", "gpt-4o")
    assert exact
    assert (count, exact) == TokenCounter(engine="tiktoken").count(request, "openai_chat", "gpt-4o")


def test_a_large_ascii_text_split_with_the_gil_released_counts_the_same() -> None:
    root = Path(__file__).resolve().parent.parent
    text = "".join(c for f in sorted(root.glob("ccm_gateway/**/*.py")) for c in f.read_text() if c.isascii())
    assert text.isascii() and len(text) > bpe.LARGE_ASCII
    assert get_encoding("o200k_base").count(text) == get_encoding("o200k_base", "tiktoken").count(text)


@pytest.mark.parametrize("alphabet", ["abcdefghijklmnopqrstuvwxyz", "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"])
def test_text_over_the_merge_budget_is_estimated_close_to_tiktoken_and_said_so(alphabet: str) -> None:
    """The budget is per prompt, not per text: 40 messages of 8 KB each, 320 KB in all, for a 32 KiB budget."""
    messages = [{"role": "user", "content": random_words(i, 8_000, alphabet)} for i in range(40)]
    request = body(model="gpt-4o", messages=messages)
    reference, exact = TokenCounter(engine="tiktoken").count(request, "openai_chat", "gpt-4o")
    assert exact
    counter = TokenCounter(merge_budget=32 * 1024)
    estimate, exact = counter.count(request, "openai_chat", "gpt-4o")
    assert not exact
    assert abs(estimate - reference) <= 0.02 * reference, (estimate, reference)  # stated tolerance: 2%
    counter.merge_budget = 1 << 40  # the estimates were not cached: with room, the same prompt is exact
    assert counter.count(request, "openai_chat", "gpt-4o") == (reference, True)


def test_one_huge_piece_is_estimated_from_a_merged_sample_of_its_head() -> None:
    text = "".join(random.Random(5).choices("abcdefghijklmnopqrstuvwxyz", k=200_000))  # no space: one piece
    budget = MergeBudget(64 * 1024)
    estimate = get_encoding("o200k_base").count(text, budget)
    reference = get_encoding("o200k_base", "tiktoken").count(text)
    assert budget.estimated and 0 < budget.merged_bytes < len(text)
    assert abs(estimate - reference) <= 0.02 * reference, (estimate, reference)


def test_count_tokens_says_estimate_past_the_default_merge_budget(tokens_gateway: ServerThread) -> None:
    """500 KB of random words to an OpenAI model: past the default budget, so the count is an estimate
    (the context-window check then allows the estimator's margin) and the endpoint says so."""
    r = httpx.post(tokens_gateway.base_url + "/v1/chat/completions/count_tokens",
                   json={"model": "gpt-4.1", "messages": [{"role": "user", "content": random_words(1, 500_000)}]})
    assert r.status_code == 200 and r.headers["x-ccm-token-count"] == "estimate"
    reference = get_encoding("o200k_base", "tiktoken").count(random_words(1, 500_000))
    assert abs(r.json()["input_tokens"] - reference) <= 0.02 * reference
