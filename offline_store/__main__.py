"""``python -m offline_store``: read the settings, configure logging, serve until SIGTERM.

Exit codes: ``runtime/startup.py``.
"""

import sys

from offline_store import app
from offline_store.settings import Settings
from runtime.startup import run_service

if __name__ == "__main__":
    sys.exit(run_service("offline_store", Settings.from_env, app.main))
