"""Seeing the gateway: Prometheus metrics (``metrics``, ``scrape``), the JSON access line
(``access_log``), log formatting and redaction (``log_format``, ``redaction``), and optional
OpenTelemetry spans (``tracing``). The per-request stage is ``middleware/observe.py``."""
