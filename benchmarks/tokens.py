"""Incremental token counting on a Claude Code-sized conversation: the first count of a ~100k-token
history, then the second turn (the same history plus one new message), which should hit the cache.

    python -m benchmarks.tokens
"""

from __future__ import annotations

import statistics
import time

import msgspec

from ccm_gateway.tokens import TokenCounter, get_encoding


def conversation(tokens: int) -> list[dict[str, str]]:
    """Distinct turns (as in a real session), ≈``tokens`` tokens in all."""
    messages: list[dict[str, str]] = []
    size = 0
    while size < tokens * 4:
        text = f"Turn {len(messages)}: here is the diff for module_{len(messages)}.py and the test output. " * 10
        messages.append({"role": "user" if len(messages) % 2 == 0 else "assistant", "content": text})
        size += len(text)
    return messages


def measure(dialect: str = "openai_chat", model: str = "gpt-4o", tokens: int = 100_000) -> dict[str, float]:
    get_encoding("o200k_base")
    history = conversation(tokens)
    first_body = msgspec.json.encode({"model": model, "max_tokens": 1024, "messages": history})
    counter = TokenCounter()
    start = time.perf_counter()
    total, _ = counter.count(first_body, dialect, model)
    first_ms = (time.perf_counter() - start) * 1000
    seconds = []
    for i in range(20):
        turn = [*history, {"role": "user", "content": f"and one more thing, number {i}"}]
        body = msgspec.json.encode({"model": model, "max_tokens": 1024, "messages": turn})
        start = time.perf_counter()
        counter.count(body, dialect, model)
        seconds.append((time.perf_counter() - start) * 1000)
    return {"tokens": total, "body_bytes": len(first_body), "first_ms": first_ms,
            "second_ms": statistics.median(seconds)}


def main() -> None:
    for dialect, model in (("openai_chat", "gpt-4o"), ("anthropic_messages", "claude-sonnet-4-5")):
        r = measure(dialect, model)
        print(f"{dialect:<19} {r['tokens']:>7,} tokens ({r['body_bytes'] / 1024:.0f} KiB): first count "
              f"{r['first_ms']:.1f} ms, second turn {r['second_ms']:.2f} ms (median of 20)")


if __name__ == "__main__":
    main()
