"""The embedded ledger store: one SQLite file in WAL mode, written by the ledger's worker thread.

``synchronous = NORMAL`` with WAL makes every commit survive a killed process (the data is in the
OS before ``COMMIT`` returns) without an fsync per commit; only a power loss can take the last
commits. ``open_reserves`` lists reserves still waiting for their final, so recovery never scans
the whole ledger.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from msgspec.structs import astuple

from .ledger import ALL_ESTIMATED, FIELDS, LedgerBackend, Record, instance_alive

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_records (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL, attempt INTEGER NOT NULL, kind TEXT NOT NULL,
    request_id TEXT NOT NULL, ts REAL NOT NULL, instance TEXT NOT NULL,
    key TEXT NOT NULL, team TEXT, route TEXT, provider TEXT, model TEXT, operation TEXT NOT NULL,
    stream INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL, cache_read_tokens INTEGER NOT NULL, cache_write_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL, estimated TEXT NOT NULL,
    cost_usd REAL, reserved_usd REAL NOT NULL, price TEXT, status INTEGER, outcome TEXT NOT NULL,
    duration_ms REAL, ttfb_ms REAL,
    UNIQUE (uid, attempt, kind)
);
CREATE INDEX IF NOT EXISTS usage_records_kind_ts ON usage_records (kind, ts);
CREATE TABLE IF NOT EXISTS open_reserves (uid TEXT PRIMARY KEY, instance TEXT NOT NULL, ts REAL NOT NULL);
"""
_COLUMNS = ", ".join(FIELDS)
_INSERT = f"INSERT OR IGNORE INTO usage_records ({_COLUMNS}) VALUES ({', '.join('?' * len(FIELDS))})"
_GROUPS = ("key", "route", "provider", "model", "day")


class SQLiteLedger(LedgerBackend):
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.conn: sqlite3.Connection | None = None

    def open(self) -> None:
        if self.conn is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        self.conn = conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _db(self) -> sqlite3.Connection:
        if self.conn is None:
            self.open()
        assert self.conn is not None
        return self.conn

    def write(self, records: Sequence[Record]) -> None:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(_INSERT, [astuple(r) for r in records])
            db.executemany("INSERT OR IGNORE INTO open_reserves (uid, instance, ts) VALUES (?, ?, ?)",
                           [(r.uid, r.instance, r.ts) for r in records if r.kind == "reserve"])
            db.executemany("DELETE FROM open_reserves WHERE uid = ?",
                           [(r.uid,) for r in records if r.kind == "final"])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def recover(self, me: str, stale_before: float) -> int:
        db = self._db()
        open_rows = db.execute("SELECT uid, instance, ts FROM open_reserves").fetchall()
        gone = []
        for uid, instance, ts in open_rows:  # a live process holds a reserve at most its longest request
            alive = instance_alive(instance, me)
            if alive is False or (ts < stale_before and instance != me):  # our own are still in flight
                gone.append(uid)
        if not gone:
            return 0
        db.row_factory = sqlite3.Row
        try:
            finals: list[Record] = []
            for uid in gone:
                row = db.execute("SELECT * FROM usage_records WHERE uid = ? AND kind = 'reserve'", (uid,)).fetchone()
                if row is None:
                    continue
                data = {f: row[f] for f in FIELDS}
                data.update(kind="final", outcome="recovered", estimated=ALL_ESTIMATED, status=None,
                            duration_ms=None, ttfb_ms=None)  # the reservation becomes the charge
                data["stream"] = bool(data["stream"])
                finals.append(Record(**data))
        finally:
            db.row_factory = None
        self.write(finals)
        db.executemany("DELETE FROM open_reserves WHERE uid = ?", [(u,) for u in gone])
        return len(finals)

    def spend(self, column: str, name: str, since: float) -> float:
        assert column in ("key", "team")
        row = self._db().execute(
            f"SELECT COALESCE(SUM(cost_usd), 0) FROM usage_records WHERE kind = 'final' AND ts >= ? AND {column} = ?",
            (since, name)).fetchone()
        return float(row[0])

    def aggregate(self, since: float, until: float, key: str | None = None) -> list[dict[str, Any]]:
        where = "kind = 'final' AND ts >= ? AND ts < ?" + (" AND key = ?" if key is not None else "")
        args: tuple[Any, ...] = (since, until) if key is None else (since, until, key)
        sql = (
            "SELECT key, route, provider, model, date(ts, 'unixepoch') AS day, COUNT(*) AS requests,"
            " SUM(input_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens), SUM(output_tokens),"
            " SUM(reasoning_tokens), SUM(cost_usd), SUM(cost_usd IS NULL), SUM(estimated != ''),"
            " SUM(outcome = 'recovered')"
            f" FROM usage_records WHERE {where} GROUP BY key, route, provider, model, day"
            " ORDER BY day, key, route, provider, model"
        )
        names = (*_GROUPS, "requests", "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens",
                 "reasoning_tokens", "cost_usd", "unpriced_requests", "estimated_requests", "recovered_requests")
        out = []
        for row in self._db().execute(sql, args):
            item = dict(zip(names, row, strict=True))
            item["cost_usd"] = round(item["cost_usd"], 10) if item["cost_usd"] is not None else None
            out.append(item)
        return out

    def rows(self, since: float, until: float, kinds: Sequence[str] = ("final",)) -> Iterator[dict[str, Any]]:
        marks = ", ".join("?" * len(kinds))
        cursor = self._db().execute(
            f"SELECT {_COLUMNS} FROM usage_records WHERE ts >= ? AND ts < ? AND kind IN ({marks}) ORDER BY ts, id",
            (since, until, *kinds))
        for row in cursor:
            yield dict(zip(FIELDS, row, strict=True))
