"""``python -m gateway``: read the settings, configure logging, run until SIGTERM.

Exit codes: ``runtime/startup.py``.
"""

import sys

from gateway import app
from gateway.settings import Settings
from runtime.startup import run_service

if __name__ == "__main__":
    sys.exit(run_service("gateway", Settings.from_env, app.main))
