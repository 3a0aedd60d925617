"""``python -m router``: read the settings, configure logging, run until SIGTERM.

Exit codes: 0 after a clean shutdown, 2 for unusable settings, 1 when RabbitMQ or Redis
cannot be reached at startup (one line on stderr says which, where, and how to start it), 3
when the drain overran its deadline (proto/shutdown.py).
"""

import asyncio
import os
import sys

from proto.errors import DependencyUnavailable, SettingsError
from proto.logs import configure_logging
from router import app
from router.settings import Settings


def main() -> int:
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"router: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        asyncio.run(app.main(settings))
    except SettingsError as exc:
        print(f"router: {exc}", file=sys.stderr)
        return 2
    except DependencyUnavailable as exc:
        print(f"router: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
