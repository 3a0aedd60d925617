"""How a service process starts: settings, logging, its event loop, and its exit code.

Every ``python -m <service>`` calls ``run_service``, which runs the service on the event loop
``SWITCHBOARD_EVENT_LOOP`` names (uvloop or asyncio's). Exit codes: 0 after a clean shutdown; 2
for unusable settings (read from the environment, or found at startup, such as a queue declared
with another type); 1 when a dependency cannot be reached at startup; 3 when the drain overran its
deadline (``shutdown.EXIT_OVERRAN``). A startup error is one line on stderr, prefixed with the
service's name, that says which variable to fix or which dependency is missing, where it was
looked for, and how to start it; it never carries a password.
"""

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from proto.env import EVENT_LOOP, location
from proto.errors import DependencyUnavailable, SettingsError
from proto.logs import configure_logging
from proto.metrics import SERVICES
from runtime.metrics import identify
from runtime.settings import ServiceSettings

EXIT_OK = 0
EXIT_UNAVAILABLE = 1
EXIT_SETTINGS = 2

S = TypeVar("S", bound=ServiceSettings)


def run_service(
    service: str,
    from_env: Callable[[Mapping[str, str]], S],
    main: Callable[[S], Coroutine[Any, Any, None]],
) -> int:
    """Read the settings, configure logging, run ``main`` until it returns; the exit code.

    ``service``: the package's name (``gateway``, ``router``, ``offline_store``), which also
    names the process's shared metrics (``proto.metrics.SERVICES``).
    """
    identify(SERVICES[service])
    try:
        settings = from_env(os.environ)
    except SettingsError as exc:
        return _fail(service, exc, EXIT_SETTINGS)
    configure_logging(settings.log_level)
    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            runner.run(main(settings))
    except SettingsError as exc:
        return _fail(service, exc, EXIT_SETTINGS)
    except DependencyUnavailable as exc:
        return _fail(service, exc, EXIT_UNAVAILABLE)
    return EXIT_OK


def loop_factory(event_loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the service's event loop (``SWITCHBOARD_EVENT_LOOP``); None: asyncio's own.

    uvloop is imported only when chosen (it is not built for Windows).

    Raises:
        SettingsError: uvloop is chosen and not installed.
    """
    if event_loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        raise SettingsError(
            f"{EVENT_LOOP}=uvloop, but uvloop is not installed here: install it, or set "
            f"{EVENT_LOOP}=asyncio"
        ) from None
    return uvloop.new_event_loop


def _fail(service: str, exc: Exception, code: int) -> int:
    print(f"{service}: {exc}", file=sys.stderr)
    return code


def unavailable(
    name: str, url: str, exc: BaseException, hint: str
) -> DependencyUnavailable:
    """The startup error for a dependency at ``url`` that failed with ``exc``: where it was
    looked for, why it failed (the first line, its password masked) and ``hint``."""
    reason = str(exc).strip() or type(exc).__name__
    why = mask_password(reason.splitlines()[0], url)
    return DependencyUnavailable(name, location(url), f"{why}; {hint}")


def mask_password(text: str, url: str) -> str:
    """``text`` with the password of ``url`` replaced by ``***``, should it appear in it."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return text
    for secret in {password, unquote(password)} if password else ():
        text = text.replace(secret, "***")
    return text
