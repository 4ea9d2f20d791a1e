"""Python's cyclic garbage collector, tuned for a process the gateway owns.

Each request allocates a few thousand container objects, nearly all freed by reference counting, so
with Python's default generation-0 threshold (700) the collector runs several times per request and
walks the objects of every request in flight: about 6 % of the server's CPU per JSON request
(callgrind, docs/performance.md). A threshold of 10,000 makes that a fraction, and freezing what
start-up built keeps full collections from walking the app itself. Only the standalone entry point
(``ccm_gateway.asgi``) calls this: an app mounted into someone else's process leaves its GC alone.
"""

from __future__ import annotations

import gc


def tune_collector(gen0_threshold: int) -> None:
    """Freeze the objects built so far and raise the generation-0 threshold (0: Python's defaults)."""
    if gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
