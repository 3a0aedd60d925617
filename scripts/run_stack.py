"""Run a whole Switchboard stack locally: a router, an offline store and two gateways.

Development only (``make run``). Each service runs as ``python -m <package>`` in its own
process group; its output is printed with the service's name in front. When one service
exits, or on Ctrl-C / SIGTERM, the others are stopped with SIGTERM (gateways first, so
that they can hand their connections over), and killed if they outlive the deadline.

It also serves the web chat page (``web/``, and the JavaScript client from ``clients/js/``) on
http://127.0.0.1:8000/, with ``/config.json`` (the gateway URLs) and a development-only
``POST /dev/token {"uid": ...} -> {"token": ...}``. The token endpoint is off unless turned on
(this script turns it on) and refuses to sign with any secret but the development one.
``--web-only --gateway-url URL ...`` serves the page for gateways started elsewhere (tests, and
docker-compose.yml with ``--web-host 0.0.0.0``).
The stack keeps history (``SWITCHBOARD_HISTORY`` is on by default); ``SWITCHBOARD_HISTORY=off``
in the environment runs it as a relay, and the page then shows the conversations of this browser
only.
"""

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dev_token import make_token

from proto import env
from proto.logs import READY_EVENT
from proto.rules import is_identifier

REPO_ROOT = Path(__file__).resolve().parents[1]
STOP_TIMEOUT_S = 20.0
"""Longer than a service's own shutdown deadline (SWITCHBOARD_SHUTDOWN_TIMEOUT_S)."""
HIDDEN_KEYS = frozenset({"event", "level", "timestamp"})
WEB_ROOT = REPO_ROOT / "web"
CLIENT_JS_ROOT = REPO_ROOT / "clients" / "js"
WEB_HOST = "127.0.0.1"
WEB_PORT = 8000
DEVELOPMENT_JWT_SECRET = "switchboard-development-secret-not-for-production"
"""The Makefile's public development secret: the only one /dev/token signs with."""
MAX_TOKEN_REQUEST_BYTES = 4096
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    module: str
    environ: Mapping[str, str] = field(default_factory=dict)
    is_gateway: bool = False


def gateway(gateway_id: str, port: int, metrics_port: int) -> ServiceSpec:
    environ = {
        env.GATEWAY_ID: gateway_id,
        env.GATEWAY_PORT: str(port),
        env.METRICS_PORT: str(metrics_port),
        # Loopback unless asked otherwise: the development secret is no secret.
        env.GATEWAY_HOST: os.environ.get(env.GATEWAY_HOST, "127.0.0.1"),
    }
    return ServiceSpec(gateway_id, "gateway", environ, is_gateway=True)


# /livez, /readyz and /metrics of each process: 9101 (router) to 9104 (gw2).
SERVICES = (
    ServiceSpec("router", "router", {env.METRICS_PORT: "9101"}),
    ServiceSpec("store", "offline_store", {env.METRICS_PORT: "9102"}),
    gateway("gw1", 8001, 9103),
    gateway("gw2", 8002, 9104),
)
WIDTH = max(len(spec.name) for spec in SERVICES)


def render(line: str) -> str:
    """A JSON log line as ``time level event key=value ...``; other lines as they are."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    if not isinstance(entry, dict) or "event" not in entry:
        return line
    clock = str(entry.get("timestamp", ""))[11:23]
    level = str(entry.get("level", ""))
    pairs = " ".join(f"{k}={v}" for k, v in entry.items() if k not in HIDDEN_KEYS)
    return f"{clock} {level:<7} {entry['event']} {pairs}".rstrip()


def is_ready_line(line: str) -> bool:
    try:
        entry = json.loads(line)
    except ValueError:
        return False
    return isinstance(entry, dict) and entry.get("event") == READY_EVENT


def say(text: str) -> None:
    print(f"{'stack':<{WIDTH}} | {text}", flush=True)


class Service:
    """One running service process and the task that copies its output."""

    def __init__(self, spec: ServiceSpec, process: asyncio.subprocess.Process) -> None:
        self.spec = spec
        self.process = process
        self.ready = asyncio.Event()

    async def copy_output(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if is_ready_line(line):
                self.ready.set()
            print(f"{self.spec.name:<{WIDTH}} | {render(line)}", flush=True)

    async def stop(self) -> int:
        """SIGTERM, wait, SIGKILL after the deadline; returns the exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                return await self.process.wait()
        except TimeoutError:
            say(f"{self.spec.name} did not stop within {STOP_TIMEOUT_S:.0f} s: killed")
            self.process.kill()
            return await self.process.wait()


async def start(spec: ServiceSpec) -> Service:
    environ = {
        **os.environ,
        # A local stack: the Makefile's public development secret is accepted.
        env.DEVELOPMENT: "on",
        **spec.environ,
        "PYTHONUNBUFFERED": "1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        spec.module,
        cwd=REPO_ROOT,
        env=environ,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        # Own process group: Ctrl-C reaches this script only, which stops the
        # services in order.
        start_new_session=True,
        limit=1 << 20,
    )
    return Service(spec, process)


@dataclass(frozen=True, slots=True)
class WebSettings:
    host: str
    port: int
    gateway_urls: tuple[str, ...]
    jwt_secret: str
    dev_tokens: bool = False
    """Whether POST /dev/token mints tokens; off unless turned on."""


def static_file(url_path: str) -> Path | None:
    """The file a GET path names: ``/`` is web/index.html, ``/client/*.js`` the JS client."""
    if url_path == "/":
        url_path = "/index.html"
    if url_path.startswith("/client/"):
        root, relative = CLIENT_JS_ROOT, url_path.removeprefix("/client/")
        if "/" in relative or not relative.endswith(".js"):
            return None
    else:
        root, relative = WEB_ROOT, url_path.lstrip("/")
    if any(part.startswith(".") for part in relative.split("/")):
        return None
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root.resolve()) or not candidate.is_file():
        return None
    if candidate.suffix not in CONTENT_TYPES:
        return None
    return candidate


class WebRequestHandler(BaseHTTPRequestHandler):
    """Static files, /config.json and the development token endpoint (development only)."""

    server: "WebServer"
    server_version = "switchboard-dev"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        settings = self.server.settings
        if path == "/config.json":
            config = {
                "gateways": list(settings.gateway_urls),
                "devTokens": settings.dev_tokens,
            }
            self._reply(HTTPStatus.OK, json.dumps(config).encode(), ".json")
            return
        file = static_file(path)
        if file is None:
            self._reply(HTTPStatus.NOT_FOUND, b'{"error":"not_found"}', ".json")
            return
        self._reply(HTTPStatus.OK, file.read_bytes(), file.suffix)

    def do_POST(self) -> None:
        settings = self.server.settings
        if self.path != "/dev/token" or not settings.dev_tokens:
            self._reply(HTTPStatus.NOT_FOUND, b'{"error":"not_found"}', ".json")
            return
        if settings.jwt_secret != DEVELOPMENT_JWT_SECRET:
            # A real secret: tokens come from a login service, never from here.
            self._json(HTTPStatus.FORBIDDEN, {"error": "not_development_secret"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_TOKEN_REQUEST_BYTES:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "invalid_body"})
            return
        try:
            uid = json.loads(self.rfile.read(length)).get("uid")
        except (ValueError, AttributeError):
            uid = None
        if not isinstance(uid, str) or not is_identifier(uid):
            self._json(HTTPStatus.BAD_REQUEST, {"error": "invalid_uid"})
            return
        token = make_token(uid, settings.jwt_secret, time.time())
        self._json(HTTPStatus.OK, {"token": token})

    def _json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        self._reply(status, json.dumps(body).encode(), ".json")

    def _reply(self, status: HTTPStatus, body: bytes, suffix: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPES[suffix])
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
        """Requests are not logged: the services' lines are what matters here."""


class WebServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, settings: WebSettings) -> None:
        super().__init__((settings.host, settings.port), WebRequestHandler)
        self.settings = settings


async def serve_web(server: WebServer, stop: asyncio.Event) -> None:
    """Serve the web page until ``stop`` is set (the server runs in a thread of its own)."""
    settings = server.settings
    serving = asyncio.create_task(asyncio.to_thread(server.serve_forever))
    say(f"web chat page on http://{settings.host}:{server.server_address[1]}/")
    try:
        await stop.wait()
    finally:
        await asyncio.to_thread(server.shutdown)
        await serving
        server.server_close()


def print_banner() -> None:
    urls = "  ".join(
        f"ws://127.0.0.1:{s.environ[env.GATEWAY_PORT]}/ws"
        for s in SERVICES
        if s.is_gateway
    )
    say(f"all services are ready; connect to {urls}")
    say(f"chat in a browser: http://{WEB_HOST}:{WEB_PORT}/")
    say("mint a token with: make token USER=alice")
    say('then send: {"type":"init","token":"<token>"}; stop with Ctrl-C')


async def announce_when_ready(services: list[Service]) -> None:
    for service in services:
        await service.ready.wait()
    print_banner()


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_web_only(settings: WebSettings) -> int:
    await serve_web(WebServer(settings), stop_on_signals())
    return 0


async def run(web: WebSettings) -> int:
    stop = stop_on_signals()
    web_stop = asyncio.Event()
    try:
        server = WebServer(web)
    except OSError as error:
        say(f"cannot serve the web page on port {web.port}: {error}")
        return 1
    web_server = asyncio.create_task(serve_web(server, web_stop))

    services: list[Service] = []
    copiers: list[asyncio.Task[None]] = []
    exits: list[asyncio.Task[int]] = []
    crashed: list[Service] = []
    try:
        for spec in SERVICES:
            service = await start(spec)
            services.append(service)
            copiers.append(asyncio.create_task(service.copy_output()))
            exits.append(asyncio.create_task(service.process.wait()))
        announcer = asyncio.create_task(announce_when_ready(services))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([stopping, *exits], return_when=asyncio.FIRST_COMPLETED)
        announcer.cancel()
        stopping.cancel()
        crashed = [s for s in services if s.process.returncode is not None]
        for service in crashed:
            code = service.process.returncode
            say(f"{service.spec.name} exited with {code}: stopping the stack")
    finally:
        gateways = [s for s in services if s.spec.is_gateway]
        others = [s for s in services if not s.spec.is_gateway]
        codes = []
        for group in (gateways, others):
            codes += await asyncio.gather(*(s.stop() for s in group))
        await asyncio.gather(*copiers)
        web_stop.set()
        await web_server
    if crashed:
        return 1
    failed = [
        (s.spec.name, c) for s, c in zip(gateways + others, codes, strict=True) if c
    ]
    for name, code in failed:
        say(f"{name} exited with {code}")
    return 1 if failed else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run a local Switchboard stack.")
    parser.add_argument(
        "--web-only",
        action="store_true",
        help="serve only the web page, for gateways started elsewhere",
    )
    parser.add_argument("--web-port", type=int, default=WEB_PORT)
    parser.add_argument(
        "--web-host",
        default=WEB_HOST,
        help="address the page listens on (default: loopback; 0.0.0.0 in a container)",
    )
    parser.add_argument(
        "--gateway-url",
        action="append",
        default=[],
        help="a gateway URL for the page (repeat; default: the gateways started here)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    secret = os.environ.get(env.JWT_SECRET, "")
    gateway_urls = tuple(args.gateway_url) or tuple(
        f"ws://127.0.0.1:{s.environ[env.GATEWAY_PORT]}/ws"
        for s in SERVICES
        if s.is_gateway
    )
    web = WebSettings(
        args.web_host, args.web_port, gateway_urls, secret, dev_tokens=True
    )
    if args.web_only:
        return asyncio.run(run_web_only(web))
    missing = [
        s.module
        for s in SERVICES
        if not (REPO_ROOT / s.module / "__main__.py").is_file()
    ]
    if missing:
        print(f"run_stack: no __main__.py in {', '.join(missing)} yet", file=sys.stderr)
        return 1
    if not os.environ.get(env.JWT_SECRET):
        print(
            f"run_stack: set {env.JWT_SECRET} (make run sets a development one)",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(run(web))


if __name__ == "__main__":
    sys.exit(main())
