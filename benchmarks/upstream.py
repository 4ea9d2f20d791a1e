"""The benchmark upstream: the loopback mock (``ccm_gateway.mock``) as its own uvloop process.

Chunk count, inter-chunk delay, reply size and latency are steered per request by directives in the
model name: ``m+chunks=50+delay_ms=2``, ``m+size=4000``, ``m+ttfb_ms=20``.

    python -m benchmarks.upstream --port 9100
"""

import argparse
import asyncio

import uvloop

from ccm_gateway.mock import MockUpstream


async def main(port: int) -> None:
    mock = MockUpstream(port=port, record=False)
    await mock.start()
    print(f"mock upstream on {mock.base_url}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    uvloop.run(main(args.port))
