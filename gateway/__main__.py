"""``python -m gateway``: read the settings, configure logging, run until SIGTERM."""

import asyncio
import os
import sys

from gateway import app
from gateway.settings import Settings
from proto.errors import DependencyUnavailable, SettingsError
from proto.logs import configure_logging


def run() -> int:
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        asyncio.run(app.main(settings))
    except DependencyUnavailable as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run())
