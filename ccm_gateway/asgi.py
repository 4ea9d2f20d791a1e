"""The app hypercorn workers import: ``ccm_gateway.asgi:app``.

The CLI passes the config path in ``CCM_CONFIG`` (worker processes are spawned, so the environment
is the one channel that reaches them); without it the embedded default config is used.
"""

import os

from .app import create_app
from .cli import configure_logging
from .config import DEFAULT_CONFIG_PATH, load_config
from .gc_tuning import tune_collector

_config = load_config(os.environ.get("CCM_CONFIG") or DEFAULT_CONFIG_PATH)
configure_logging(_config.logging.level, _config.logging.format)
app = create_app(_config)
tune_collector(_config.server.gc_threshold)  # this process is ours (not an app mounted elsewhere)
