"""``ccm-gateway serve | check-config | usage export``."""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from .config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from .observability.redaction import config_secrets, register_secrets
from .providers.kinds import KINDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ccm-gateway", description="Embeddable LLM provider gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway under hypercorn")
    serve.add_argument("--config", type=Path, help="TOML config (default: the embedded mock-only config)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    check = sub.add_parser("check-config", help="validate a config and print it with secrets redacted")
    check.add_argument("config", type=Path, nargs="?", default=DEFAULT_CONFIG_PATH)
    usage = sub.add_parser("usage", help="read the usage ledger").add_subparsers(dest="action", required=True)
    export = usage.add_parser("export", help="write ledger records as CSV or JSON lines to stdout")
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    export.add_argument("--since", help="date, ISO 8601 time or Unix seconds (default: everything)")
    export.add_argument("--until", help="date, ISO 8601 time or Unix seconds (default: now)")
    export.add_argument("--db", type=Path, help="the ledger file (default: [ledger] path of --config)")
    export.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    export.add_argument("--all", action="store_true", help="include reserve records, not only finals")
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config)
    if args.command == "usage":
        return usage_export(args)
    return serve_forever(args)


def usage_export(args: argparse.Namespace) -> int:
    from .billing.export import export
    from .errors import InvalidRequest
    from .usage_api import parse_time

    db = args.db
    if db is None:
        try:
            db = load_config(args.config).ledger.path
        except ConfigError as exc:
            print(f"{args.config}: invalid configuration\n  " + "\n  ".join(exc.errors), file=sys.stderr)
            return 2
        if not db:
            print("no ledger: give --db PATH or a config with [ledger] path", file=sys.stderr)
            return 2
    try:
        since = parse_time(args.since, "since") if args.since else 0.0
        until = parse_time(args.until, "until") if args.until else None
        kinds = ("reserve", "final") if args.all else ("final",)
        export(Path(db), args.format, since, until, kinds)
    except (InvalidRequest, FileNotFoundError) as exc:
        print(f"usage export: {exc}", file=sys.stderr)
        return 2
    return 0


def check_config(path: Path) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid configuration", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return 2
    print(json.dumps(config.redacted(), indent=2))
    unavailable = [n for n, p in config.providers.items() if KINDS[p.kind].needs_key and not p.api_keys]
    if unavailable:
        print(f"note: no API key for provider(s) {', '.join(unavailable)}", file=sys.stderr)
    return 0


def serve_forever(args: argparse.Namespace) -> int:
    from hypercorn.config import Config as HypercornConfig

    path = args.config or DEFAULT_CONFIG_PATH
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid configuration", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return 2
    configure_logging(config.logging.level, config.logging.format)
    register_secrets(config_secrets(config))  # the workers register theirs when they build the app
    os.environ["CCM_CONFIG"] = str(Path(path).resolve())
    hc = HypercornConfig()
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    hc.bind = [_bind(host, port)]
    if config.admin.port is not None:  # a second listener; admin_api.AdminEndpoint routes by it
        hc.bind.append(_bind(host, config.admin.port))
    workers = args.workers or config.server.workers
    hc.workers = 0 if workers == 1 else workers  # 0: serve in this process
    if workers > 1 and config.metrics.enabled and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir()
    hc.worker_class = "uvloop" if _has_uvloop() else "asyncio"
    hc.application_path = "ccm_gateway.asgi:app"
    hc.graceful_timeout = config.server.graceful_timeout
    # Slowloris: a connection whose request head is incomplete counts as idle, so keep_alive_timeout
    # bounds how long a head may dribble in; a larger head is refused with 431; the body is bounded by
    # server.read_timeout in the exchange stage. hypercorn's own read_timeout stays off: it applies to
    # every socket read, so a client that is silent while a long answer streams would be disconnected.
    hc.keep_alive_timeout = config.server.keep_alive_timeout
    hc.h11_max_incomplete_size = config.server.max_header_bytes
    hc.h2_max_header_list_size = config.server.max_header_bytes
    hc.read_timeout = None
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")  # through our handlers, once
    admin = f", admin on port {config.admin.port}" if config.admin.port is not None else ""
    print(f"ccm-gateway listening on http://{host}:{port} ({workers} worker(s), config {path}{admin})", flush=True)
    if hc.workers == 0:
        return serve_here(hc, config.server.graceful_timeout)
    from .workers import serve_workers  # each worker drains on SIGTERM, as one process does

    return serve_workers(hc, workers, config.server.graceful_timeout)


def configure_logging(level: str, fmt: str = "auto") -> None:
    """Redacted stderr logging (JSON or text) for the standalone server; hosts that embed the app
    keep their own (see ``observability.redaction.RedactionFilter``)."""
    from .observability.log_format import configure_logging as install

    install(level, fmt)


def metrics_dir() -> str:
    """A fresh ``PROMETHEUS_MULTIPROC_DIR`` for this server's workers (they inherit the environment
    and sum their metric files at scrape time), removed at exit. An operator's own directory is
    kept as given (it must be emptied between runs)."""
    path = tempfile.mkdtemp(prefix="ccm-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    atexit.register(shutil.rmtree, path, True)
    return path


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def serve_here(hc: Any, grace: float) -> int:
    """One process: hypercorn on our own loop, so SIGTERM/SIGINT can start the drain
    (``shutdown.Drain``) before hypercorn stops accepting and waits ``grace`` seconds. Several
    workers: ``workers.serve_workers``."""
    import asyncio
    import signal

    from hypercorn.asyncio import serve

    hc.workers = 1
    from .asgi import app

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        async def shutdown_trigger() -> None:
            await stop.wait()
            app.state.gateway.drain.begin(grace)

        await serve(app, hc, shutdown_trigger=shutdown_trigger)

    if _has_uvloop():
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
    return 0


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
