"""The gateway's settings, read once from the environment.

The fields every service shares, and their readers, are in ``runtime/settings.py``.
"""

import ipaddress
import os
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import jwt

from gateway import tokens
from gateway.session import DEFAULT_MAX_ROOMS_PER_CONNECTION
from proto import env
from proto.errors import SettingsError
from proto.topology import QUEUE_TYPES
from runtime import settings as shared
from runtime.settings import ServiceSettings

GATEWAY_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
DEFAULT_SYNC_WINDOW = 500
"""Half of the default ``SWITCHBOARD_OUTBOX_FRAMES``: a sync of 10,000 takes about 30 windows."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings(ServiceSettings):
    jwt_secret: str
    gateway_id: str
    host: str
    port: int
    init_timeout_s: float
    idle_timeout_s: float
    ping_interval_s: float
    ack_timeout_s: float
    orphan_ttl_s: float
    gateway_queue_expires_s: float
    gateway_queue_type: str
    """``classic`` or ``quorum``: this gateway's own queue (``SWITCHBOARD_GATEWAY_QUEUE_TYPE``)."""
    heartbeat_interval_s: float
    max_frame_bytes: int
    outbox_frames: int
    consumer_check_s: float
    """How often the broker is asked whether this gateway's consumer is still there."""
    http_port: int | None
    """Port of the backend HTTP API (``POST /api/<command>``); None: no HTTP API."""
    http_host: str
    """Address of the HTTP API (``SWITCHBOARD_HTTP_HOST``), apart from the WebSocket's."""
    api_amqp_url: str
    """The HTTP API's own AMQP connection, whose user may publish ``api.*``."""
    command_timeout_s: float
    api_key: str = field(repr=False)
    """The backends' bearer token; empty when there is no HTTP API."""
    public_room_prefix: str = ""
    """Rooms whose name starts with it may be joined without a ``rooms`` claim; empty: none."""
    max_rooms_per_connection: int = DEFAULT_MAX_ROOMS_PER_CONNECTION
    jwt_algorithm: str = tokens.DEFAULT_ALGORITHM
    """The one algorithm ``init`` tokens may use; ``jwt_secret`` holds its key (an HMAC
    secret, or the PEM public key read from ``SWITCHBOARD_JWT_PUBLIC_KEY``), unless the keys
    come from ``jwks_url``."""
    jwt_audience: tuple[str, ...] = ()
    """``aud`` values a token must hold one of; empty: a token must hold none."""
    jwt_issuer: str | None = None
    """The ``iss`` a token must hold; None: not checked."""
    jwt_leeway_s: float = 0.0
    """Clock skew allowed on ``exp`` and ``nbf``."""
    jwks_url: str | None = None
    """The identity provider's JWKS; None: the key is ``jwt_secret``."""
    jwks_refresh_s: float = 300.0
    """How often the key set is fetched again (keys the provider dropped stop verifying)."""
    jwks_min_fetch_interval_s: float = 10.0
    """The least time between two fetches asked for by tokens with an unknown ``kid``."""
    jwks_timeout_s: float = 5.0
    """Deadline of one fetch of the key set."""
    allowed_origins: tuple[str, ...] | None = None
    """Origin header values accepted at the handshake; None: any origin (and none)."""
    rate_limit_per_s: float = 50.0
    """Frames per second one connection may send, on average."""
    rate_limit_burst: int = 100
    """Frames one connection may send at once before the rate applies."""
    rate_limit_bytes_per_s: float = 262_144.0
    """Bytes per second one connection may send, on average; 0: no limit."""
    rate_limit_bytes_burst: int = 1_048_576
    """Bytes one connection may send at once; at least ``max_frame_bytes``."""
    compression: str | None = None
    """``"deflate"``: negotiate permessage-deflate with clients that offer it (about 30 KiB more
    per connection); None: never."""
    max_unacked_per_connection: int = 100
    """Messages one connection may leave unacknowledged (live and replayed): live messages past
    it go to the offline store, replay windows wait for acks. Below ``prefetch``, so that one
    client cannot hold every AMQP delivery of the gateway."""
    sync_gap_wait_s: float = 0.5
    """History on: how long a live copy that came out of order waits for the missing ``seq``
    before the gateway asks the store for a window."""
    sync_window: int = DEFAULT_SYNC_WINDOW
    """History on: messages a connection may leave unacknowledged until ``synced``. Sync
    entries pin no AMQP delivery (history keeps them), so the cap that protects the prefetch
    does not apply; larger windows take fewer round trips to the store. The gateway keeps as
    many entries ahead (``syncing.py``). At most half of ``outbox_frames``, so that a window
    never fills the outbox of a client that reads."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        common = shared.service_fields(environ)
        gateway_id = env.text(environ, env.GATEWAY_ID, default_gateway_id())
        if not GATEWAY_ID_PATTERN.fullmatch(gateway_id):
            raise SettingsError(
                f"{env.GATEWAY_ID} must match {GATEWAY_ID_PATTERN.pattern}, got {gateway_id!r}"
            )
        orphan_ttl_s = env.seconds(environ, env.ORPHAN_TTL_S, 30.0)
        expires_s = env.seconds(environ, env.GATEWAY_QUEUE_EXPIRES_S, 600.0)
        if expires_s <= orphan_ttl_s:
            raise SettingsError(
                f"{env.GATEWAY_QUEUE_EXPIRES_S} must be longer than {env.ORPHAN_TTL_S}"
            )
        host = env.text(environ, env.GATEWAY_HOST, "0.0.0.0")
        http_port = (
            env.integer(environ, env.HTTP_PORT, 0, minimum=0, maximum=65535)
            if environ.get(env.HTTP_PORT, "")
            else None
        )
        prefetch = common["prefetch"]
        max_unacked = env.integer(
            environ, env.MAX_UNACKED_PER_CONNECTION, 100, minimum=1
        )
        if max_unacked >= prefetch:
            raise SettingsError(
                f"{env.MAX_UNACKED_PER_CONNECTION} must be less than {env.PREFETCH} "
                f"({prefetch}), got {max_unacked}"
            )
        outbox_frames = env.integer(environ, env.OUTBOX_FRAMES, 1000, minimum=1)
        most_sync_window = max(1, outbox_frames // 2)
        sync_window = env.integer(
            environ,
            env.SYNC_WINDOW,
            min(DEFAULT_SYNC_WINDOW, most_sync_window),
            minimum=1,
        )
        if sync_window > most_sync_window:
            raise SettingsError(
                f"{env.SYNC_WINDOW} must be at most half of {env.OUTBOX_FRAMES} "
                f"({outbox_frames}), got {sync_window}"
            )
        jwks = jwks_url(environ)
        jwt_algorithm = env.choice(
            environ,
            env.JWT_ALGORITHM,
            tokens.ALGORITHMS,
            # Identity providers sign with RS256 unless told otherwise.
            tokens.DEFAULT_ALGORITHM if jwks is None else "RS256",
        )
        jwks_timeout_s = env.seconds(environ, env.JWKS_TIMEOUT_S, 5.0)
        max_frame_bytes = env.integer(environ, env.MAX_FRAME_BYTES, 65536, minimum=256)
        bytes_per_s = env.rate_or_off(environ, env.RATE_LIMIT_BYTES_PER_S, 262_144.0)
        bytes_burst = env.integer(
            environ, env.RATE_LIMIT_BYTES_BURST, max(1_048_576, max_frame_bytes)
        )
        if bytes_per_s and bytes_burst < max_frame_bytes:
            raise SettingsError(
                f"{env.RATE_LIMIT_BYTES_BURST} must be at least {env.MAX_FRAME_BYTES} "
                f"({max_frame_bytes}), got {bytes_burst}: a largest frame would never pass"
            )
        return cls(
            **common,
            jwt_secret="" if jwks is not None else jwt_key(environ, jwt_algorithm),
            jwt_algorithm=jwks_algorithm(jwt_algorithm) if jwks else jwt_algorithm,
            jwt_audience=env.text_list(environ, env.JWT_AUDIENCE),
            jwt_issuer=environ.get(env.JWT_ISSUER, "") or None,
            jwt_leeway_s=env.seconds_between(
                environ, env.JWT_LEEWAY_S, 0.0, 0.0, MAX_JWT_LEEWAY_S
            ),
            jwks_url=jwks,
            jwks_refresh_s=env.seconds(environ, env.JWKS_REFRESH_S, 300.0),
            jwks_min_fetch_interval_s=env.seconds_between(
                environ,
                env.JWKS_MIN_FETCH_INTERVAL_S,
                max(10.0, jwks_timeout_s),
                jwks_timeout_s,
                3600.0,
            ),
            jwks_timeout_s=jwks_timeout_s,
            allowed_origins=allowed_origins(environ),
            rate_limit_per_s=env.rate(environ, env.RATE_LIMIT_PER_S, 50.0),
            rate_limit_burst=env.integer(environ, env.RATE_LIMIT_BURST, 100, minimum=1),
            rate_limit_bytes_per_s=bytes_per_s,
            rate_limit_bytes_burst=bytes_burst,
            compression=compression(environ),
            gateway_id=gateway_id,
            host=host,
            port=env.integer(environ, env.GATEWAY_PORT, 8000, minimum=0, maximum=65535),
            init_timeout_s=env.seconds(environ, env.INIT_TIMEOUT_S, 5.0),
            idle_timeout_s=env.seconds(environ, env.IDLE_TIMEOUT_S, 60.0),
            ping_interval_s=env.seconds(environ, env.PING_INTERVAL_S, 20.0),
            ack_timeout_s=env.seconds(environ, env.ACK_TIMEOUT_S, 30.0),
            orphan_ttl_s=orphan_ttl_s,
            gateway_queue_expires_s=expires_s,
            gateway_queue_type=env.choice(
                environ, env.GATEWAY_QUEUE_TYPE, QUEUE_TYPES, "classic"
            ),
            heartbeat_interval_s=env.seconds(environ, env.HEARTBEAT_INTERVAL_S, 5.0),
            max_frame_bytes=max_frame_bytes,
            outbox_frames=outbox_frames,
            consumer_check_s=env.seconds(environ, env.CONSUMER_CHECK_S, 5.0),
            http_port=http_port,
            http_host=env.text(environ, env.HTTP_HOST, host),
            api_amqp_url=api_amqp_url(environ, http_port, common["amqp_url"]),
            command_timeout_s=env.seconds(environ, env.COMMAND_TIMEOUT_S, 5.0),
            api_key=""
            if http_port is None
            else env.secret(
                environ, env.API_KEY, allow_placeholder=env.is_development(environ)
            ),
            public_room_prefix=env.text(environ, env.PUBLIC_ROOM_PREFIX, ""),
            max_rooms_per_connection=env.integer(
                environ,
                env.MAX_ROOMS_PER_CONNECTION,
                DEFAULT_MAX_ROOMS_PER_CONNECTION,
                minimum=1,
            ),
            max_unacked_per_connection=max_unacked,
            sync_gap_wait_s=env.seconds(environ, env.SYNC_GAP_WAIT_S, 0.5),
            sync_window=sync_window,
        )

    @property
    def token_rules(self) -> tokens.TokenRules:
        """What every token must meet: algorithm, audience, issuer, leeway."""
        return tokens.TokenRules(
            self.jwt_algorithm, self.jwt_audience, self.jwt_issuer, self.jwt_leeway_s
        )


MAX_JWT_LEEWAY_S = 300.0
"""More skew than five minutes is a broken clock, not a skew."""


def jwt_key(environ: Mapping[str, str], algorithm: str) -> str:
    """The key that verifies tokens: the HMAC secret, or the PEM public key file's text."""
    if algorithm in tokens.HMAC_ALGORITHMS:
        # As long as the hash's output (RFC 7518 section 3.2): 32, 48 or 64 bytes.
        return env.secret(
            environ,
            env.JWT_SECRET,
            min_length=int(algorithm[2:]) // 8,
            allow_placeholder=env.is_development(environ),
        )
    path = environ.get(env.JWT_PUBLIC_KEY, "")
    if not path:
        raise SettingsError(
            f"{env.JWT_PUBLIC_KEY} must be set (the path of a PEM public key file) "
            f"when {env.JWT_ALGORITHM} is {algorithm}"
        )
    try:
        with open(path, encoding="ascii") as pem_file:
            pem = pem_file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(
            f"{env.JWT_PUBLIC_KEY} must be a readable PEM file, got {path!r}: "
            f"{type(exc).__name__}"
        ) from None
    try:
        jwt.get_algorithm_by_name(algorithm).prepare_key(pem)
    except NotImplementedError:
        raise SettingsError(
            f"{env.JWT_ALGORITHM}={algorithm} needs the cryptography package "
            "(pip install 'pyjwt[crypto]')"
        ) from None
    except (ValueError, TypeError, jwt.InvalidKeyError):
        raise SettingsError(
            f"{env.JWT_PUBLIC_KEY} must be a PEM public key for {algorithm}, "
            f"got an unusable key in {path!r}"
        ) from None
    return pem


def jwks_url(environ: Mapping[str, str]) -> str | None:
    """``SWITCHBOARD_JWKS_URL``: an https URL (http only to a loopback address); None: unset.

    Raises:
        SettingsError: not such a URL, or set beside ``SWITCHBOARD_JWT_PUBLIC_KEY``.
    """
    url = environ.get(env.JWKS_URL, "")
    if not url:
        return None
    if environ.get(env.JWT_PUBLIC_KEY, ""):
        raise SettingsError(
            f"set {env.JWKS_URL} or {env.JWT_PUBLIC_KEY}, not both: keys come from one place"
        )
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        parts, host = None, ""
    if parts is None or not host or parts.scheme not in ("https", "http"):
        raise SettingsError(f"{env.JWKS_URL} must be an https URL, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(host):
        # Keys fetched in clear text can be swapped on the way: anyone could sign tokens.
        raise SettingsError(
            f"{env.JWKS_URL} must be https (http only to a loopback address), got {url!r}"
        )
    return url


def jwks_algorithm(algorithm: str) -> str:
    """The algorithm of a JWKS: a public key one, never an HMAC secret."""
    if algorithm not in tokens.PUBLIC_KEY_ALGORITHMS:
        raise SettingsError(
            f"{env.JWT_ALGORITHM} must be one of "
            f"{', '.join(tokens.PUBLIC_KEY_ALGORITHMS)} with {env.JWKS_URL}, "
            f"got {algorithm!r}"
        )
    return algorithm


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_origins(environ: Mapping[str, str]) -> tuple[str, ...] | None:
    """``SWITCHBOARD_ALLOWED_ORIGINS`` as a tuple; None when unset (any origin)."""
    raw = environ.get(env.ALLOWED_ORIGINS, "")
    if not raw.strip():
        return None
    origins = tuple(origin.strip() for origin in raw.split(",") if origin.strip())
    for origin in origins:
        if "://" not in origin or origin.endswith("/"):
            raise SettingsError(
                f"{env.ALLOWED_ORIGINS} must list origins such as "
                f"https://chat.example.com, got {origin!r}"
            )
    return origins


def compression(environ: Mapping[str, str]) -> str | None:
    """``SWITCHBOARD_COMPRESSION``: ``off`` (the default) or ``deflate``."""
    chosen = env.choice(environ, env.COMPRESSION, ("off", "deflate"), "off")
    return None if chosen == "off" else chosen


def default_gateway_id() -> str:
    """The host name (a pod's name) and a random suffix: a restarted process gets a new queue."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:50] or "gateway"
    return f"{host}-{secrets.token_hex(4)}"


def api_amqp_url(
    environ: Mapping[str, str], http_port: int | None, amqp_url: str
) -> str:
    """The HTTP API's own broker URL: a backend user that may publish ``api.*``, which the
    gateway's user may not. Required with the HTTP API; falls back to the gateway's URL only
    without it or in development (``SWITCHBOARD_DEVELOPMENT=on``)."""
    if http_port is None or env.is_development(environ):
        return env.url(environ, env.API_AMQP_URL, amqp_url)
    if not environ.get(env.API_AMQP_URL, ""):
        raise SettingsError(
            f"{env.API_AMQP_URL} must be set with {env.HTTP_PORT}: the HTTP API publishes "
            "api.* commands as the backend's RabbitMQ user, never as the gateway's "
            f"(docs/operations.md), or {env.DEVELOPMENT}=on for local development only"
        )
    return env.url(environ, env.API_AMQP_URL, amqp_url)
