"""A whole Switchboard stack in one namespace: gateways, routers and offline stores as processes.

Every test that uses it gets a fresh namespace; closing the stack stops every process (SIGTERM,
exit code 0 expected) and removes the namespace's queues, exchanges, keys and schema.
"""

import asyncio
import socket
import uuid
from dataclasses import dataclass, field

import asyncpg

from proto import env
from proto.names import Names
from tests.support.cleanup import remove_namespace
from tests.support.clients import RawClient
from tests.support.processes import ServiceProcess, start_service
from tests.support.timing import scaled
from tests.support.tokens import TEST_JWT_SECRET, make_token

# Short deadlines so that failure paths resolve within a test's time.
TEST_SETTINGS = {
    env.JWT_SECRET: TEST_JWT_SECRET,
    # The HTTP API's own user, required with SWITCHBOARD_HTTP_PORT: here guest, as the rest.
    env.API_AMQP_URL: env.DEFAULT_AMQP_URL,
    env.HEARTBEAT_INTERVAL_S: "0.5",
    env.GATEWAY_TTL_S: "3",
    env.ORPHAN_TTL_S: "2",
    env.GATEWAY_QUEUE_EXPIRES_S: "60",
    env.CONSUMER_CHECK_S: "1",
    env.SHUTDOWN_TIMEOUT_S: "5",
    env.LOG_LEVEL: "info",
}


def new_namespace() -> str:
    return "t" + uuid.uuid4().hex[:12]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def stop_all(processes: list[ServiceProcess]) -> list[str]:
    """SIGTERM to each running process at once; a problem description per unclean exit."""
    running = [process for process in processes if process.is_running]
    codes = await asyncio.gather(
        *(process.stop() for process in running), return_exceptions=True
    )
    for code in codes:
        if isinstance(code, BaseException):
            raise code  # a hang, once every other process has exited
    return [
        f"{process.name} exited with {code}"
        for process, code in zip(running, codes, strict=True)
        if code != 0
    ]


@dataclass
class Gateway:
    gateway_id: str
    port: int
    process: ServiceProcess

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


@dataclass
class Stack:
    namespace: str
    settings: dict[str, str] = field(default_factory=dict)
    gateways: list[Gateway] = field(default_factory=list)
    routers: list[ServiceProcess] = field(default_factory=list)
    stores: list[ServiceProcess] = field(default_factory=list)
    processes: list[ServiceProcess] = field(default_factory=list)
    clients: list[RawClient] = field(default_factory=list)
    gateway_ids: list[str] = field(default_factory=list)

    @property
    def names(self) -> Names:
        return Names(self.namespace)

    def env(self, **overrides: str) -> dict[str, str]:
        return {
            **TEST_SETTINGS,
            env.NAMESPACE: self.namespace,
            **self.settings,
            **overrides,
        }

    async def start_process(
        self, name: str, module: str, environ: dict[str, str]
    ) -> ServiceProcess:
        """Start one service process and wait until it is ready (the one place that does)."""
        return await start_service(name, module, environ)

    async def start_gateway(
        self, gateway_id: str | None = None, **overrides: str
    ) -> Gateway:
        gateway_id = (
            gateway_id or f"gw{len(self.gateway_ids) + 1}-{uuid.uuid4().hex[:6]}"
        )
        # Recorded before starting, so that cleanup removes its queue whatever happens.
        self.gateway_ids.append(gateway_id)
        port = free_port()
        process = await self.start_process(
            gateway_id,
            "gateway",
            self.env(
                **{env.GATEWAY_ID: gateway_id, env.GATEWAY_PORT: str(port), **overrides}
            ),
        )
        gateway = Gateway(gateway_id, port, process)
        self.gateways.append(gateway)
        self.processes.append(process)
        return gateway

    async def restart_gateway(self, gateway: Gateway) -> Gateway:
        """Start a new process with the gateway's id and port, as a restarted pod would."""
        process = await self.start_process(
            gateway.gateway_id,
            "gateway",
            self.env(
                **{
                    env.GATEWAY_ID: gateway.gateway_id,
                    env.GATEWAY_PORT: str(gateway.port),
                }
            ),
        )
        self.processes.append(process)
        gateway.process = process
        return gateway

    async def start_router(self, **overrides: str) -> ServiceProcess:
        process = await self.start_process(
            f"router{len(self.routers) + 1}", "router", self.env(**overrides)
        )
        self.processes.append(process)
        self.routers.append(process)
        return process

    async def start_store(self, **overrides: str) -> ServiceProcess:
        process = await self.start_process(
            f"store{len(self.stores) + 1}", "offline_store", self.env(**overrides)
        )
        self.processes.append(process)
        self.stores.append(process)
        return process

    async def start(self, gateways: int = 2, routers: int = 1) -> "Stack":
        """Start ``routers`` routers and an offline store, then ``gateways`` gateways (each
        group at once)."""
        await asyncio.gather(
            *(self.start_router() for _ in range(routers)), self.start_store()
        )
        await asyncio.gather(*(self.start_gateway() for _ in range(gateways)))
        return self

    async def connect(
        self,
        gateway: Gateway | int = 0,
        uid: str | None = None,
        token: str | None = None,
    ) -> RawClient:
        """Open a connection to a gateway, and ``init`` it when a uid or token is given."""
        target = self.gateways[gateway] if isinstance(gateway, int) else gateway
        client = await RawClient.open(target.url)
        self.clients.append(client)
        if uid is not None or token is not None:
            await client.init(token or make_token(uid))
        return client

    async def stored_mids(self, uid: str) -> list[str]:
        """The mids the offline store holds for ``uid``, in mid order."""
        pg = await asyncpg.connect(env.DEFAULT_POSTGRES_DSN, timeout=scaled(10))
        try:
            records = await pg.fetch(
                f"SELECT mid FROM {self.names.undelivered_table} WHERE uid = $1"
                " ORDER BY mid",
                uid,
            )
        finally:
            await pg.close()
        return [record["mid"] for record in records]

    async def close(self) -> list[str]:
        """Stop everything; return a problem description per process that did not exit cleanly."""
        await asyncio.gather(*(client.close() for client in self.clients))
        # The gateways first, all at once, as a rollout would; then the routers and stores.
        gateways = {id(gateway.process) for gateway in self.gateways}
        first = [p for p in self.processes if id(p) in gateways]
        then = [p for p in self.processes if id(p) not in gateways]
        problems = await stop_all(first) + await stop_all(then)
        await remove_namespace(self.names, self.gateway_ids)
        return problems

    def output(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.output()}" for p in self.processes)
