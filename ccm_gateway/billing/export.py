"""``ccm-gateway usage export``: the ledger's records as CSV (or JSON lines) for billing systems.

Reads the SQLite file directly (WAL lets it run beside a serving gateway) and streams rows, so a
large ledger is never held in memory.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import TextIO

import msgspec

from .ledger import FIELDS
from .sqlite_ledger import SQLiteLedger


def export(db: Path, fmt: str = "csv", since: float = 0.0, until: float | None = None,
           kinds: tuple[str, ...] = ("final",), out: TextIO = sys.stdout) -> int:
    """Write the records in [since, until) to ``out``; returns how many."""
    if not db.exists():
        raise FileNotFoundError(f"no usage ledger at {db}")
    backend = SQLiteLedger(db)
    backend.open()
    count = 0
    try:
        rows = backend.rows(since, until if until is not None else time.time() + 86400, kinds)
        if fmt == "csv":
            writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow(row)
                count += 1
        else:
            for row in rows:
                out.write(msgspec.json.encode(row).decode() + "\n")
                count += 1
    finally:
        backend.close()
    return count
