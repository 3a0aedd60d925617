"""Wiring of the offline store: open PostgreSQL and RabbitMQ, run a consumer per queue and the
retention sweep, stop.

``<ns>.offline`` brings what is to be kept, ``<ns>.offline.control`` replay requests (and
with history on sync requests, ``syncs.py``),
``<ns>.offline.acks`` acknowledged rows, ``<ns>.offline.groups`` group commands and rebuild
requests and, with ``SWITCHBOARD_HISTORY`` on, ``<ns>.inbox`` the 1:1 and group messages to number
(``inbox_writer.py``), ``<ns>.offline.reads`` the read markers (``readers.py``) and
``<ns>.offline.queries`` history and conversations (``query_server.py``); consumers.py, groups.py,
readers.py and query_server.py say what each consumer does.

Every way a message reaches ``<ns>.offline`` and ``<ns>.inbox`` (who sends it, on which exchange,
with which routing key) is declared once, in ``proto/topology.py``: ``store_paths``.
"""

import asyncio
from contextlib import AsyncExitStack

import structlog

from offline_store import migrator, observability
from offline_store.bus import open_bus
from offline_store.consumers import ControlServer, UndeliveredWriter
from offline_store.group_commands import command_max_bytes
from offline_store.group_store import GroupStore
from offline_store.groups import GroupServer
from offline_store.inbox_tables import InboxTables, creation_statements
from offline_store.inbox_writer import InboxWriter
from offline_store.marker_tables import MarkerTables
from offline_store.query_server import QueryServer
from offline_store.query_tables import QueryTables
from offline_store.readers import ReadServer
from offline_store.retention import RetentionSweep
from offline_store.settings import Settings
from offline_store.store import open_store
from offline_store.sync_tables import SyncTables
from offline_store.syncs import SyncServer
from proto.logs import READY_EVENT
from runtime.batch_loop import Backoff, BatchLoop
from runtime.health import METRICS_HOST, Health, serve_health
from runtime.shutdown import stop_on_signals

log = structlog.get_logger()

SERVICE = "offline_store"


async def main(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then finish in-flight batches and close."""
    names = settings.names
    structlog.contextvars.bind_contextvars(namespace=names.namespace)
    stop = stop_on_signals(settings.shutdown_timeout_s)
    health = Health()
    async with AsyncExitStack() as stack:  # unwinds in reverse order
        await stack.enter_async_context(
            serve_health(METRICS_HOST, settings.metrics_port, health)
        )
        store = await stack.enter_async_context(
            open_store(settings, creation_statements(names) if settings.history else ())
        )
        health.add_check("postgresql", store.ping)
        groups = GroupStore(store.pool, names)
        await groups.create_tables()
        async with store.pool.acquire() as connection:
            await migrator.check_at_startup(connection, names)
        bus = await stack.enter_async_context(open_bus(settings))
        health.watch_broker(bus.connection)
        # Set at shutdown: a batch failing then is given back to the queue, not retried here.
        stopping = asyncio.Event()
        writer = UndeliveredWriter(
            store,
            bus,
            settings.max_amqp_message_bytes,
            Backoff(settings.retry_backoff_max_s, stopping),
        )
        sync_tables = SyncTables(store.pool, names)
        control = ControlServer(
            store,
            bus,
            settings.replay_page,
            settings.max_amqp_message_bytes,
            Backoff(settings.retry_backoff_max_s, stopping),
            SyncServer(
                sync_tables,
                bus,
                settings.sync_page,
                settings.sync_grace_s,
                settings.history_days,
                settings.max_amqp_message_bytes,
            )
            if settings.history
            else None,
        )
        # Its own backoff: a failing ack batch never pauses replays.
        acks = ControlServer(
            store,
            bus,
            settings.replay_page,
            settings.max_amqp_message_bytes,
            Backoff(settings.retry_backoff_max_s, stopping),
        )
        group_server = GroupServer(
            groups,
            bus,
            command_max_bytes(
                settings.max_command_bytes, settings.max_amqp_message_bytes
            ),
            settings.max_amqp_message_bytes,
            Backoff(settings.retry_backoff_max_s, stopping),
        )
        history = QueryTables(store.pool, names) if settings.history else None
        sweep = RetentionSweep(
            store,
            settings.sweep_interval_s,
            settings.batch_max,
            groups,
            history,
            settings.history_days,
        )
        loops = [
            BatchLoop(writer.store_batch, settings.batch_max),
            BatchLoop(control.serve_batch, settings.batch_max),
            BatchLoop(acks.serve_batch, settings.batch_max),
            BatchLoop(group_server.serve_batch, settings.batch_max),
        ]
        inbox: InboxWriter | None = None
        if settings.history:
            inbox = InboxWriter(
                InboxTables(store.pool, names, settings.max_rows_per_uid),
                sync_tables,
                bus,
                settings.max_amqp_message_bytes,
                Backoff(settings.retry_backoff_max_s, stopping),
            )
            loops.append(BatchLoop(inbox.write_batch, settings.batch_max))
            reads = ReadServer(
                MarkerTables(store.pool, names),
                bus,
                settings.max_amqp_message_bytes,
                Backoff(settings.retry_backoff_max_s, stopping),
            )
            loops.append(BatchLoop(reads.serve_batch, settings.batch_max))
        queries: BatchLoop | None = None
        query_server: QueryServer | None = None
        if history is not None:
            query_server = QueryServer(
                history,
                bus,
                settings.history_days,
                settings.max_command_bytes,
                settings.max_amqp_message_bytes,
                Backoff(settings.retry_backoff_max_s, stopping),
            )
            queries = BatchLoop(query_server.serve_batch, settings.batch_max)
            loops.append(queries)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(batch_loop.run()) for batch_loop in loops[:4]]
            if inbox is not None:
                tasks.append(tg.create_task(run_then_drain(loops[4], inbox)))
                tasks.append(tg.create_task(loops[5].run()))
            if queries is not None:
                assert query_server is not None
                tasks.append(tg.create_task(run_then_drain(queries, query_server)))
            sampler = tg.create_task(observability.sample_backlog(store))
            sweeper = tg.create_task(sweep.run())
            await bus.consume(names.offline_queue, loops[0].accept)
            await bus.consume(names.store_control_queue, loops[1].accept)
            # Acks have a queue and a loop of their own: a flood of them never delays a replay.
            await bus.consume(names.store_acks_queue, loops[2].accept)
            # Group commands have their own loop: a rebuild's pages never delay a replay.
            await bus.consume(names.store_groups_queue, loops[3].accept)
            if inbox is not None:
                # 1:1 and group messages, written and numbered before they are delivered.
                await bus.consume(names.inbox_queue, loops[4].accept)
                # Read markers: writes, apart from the history queries (neither delays the
                # other).
                await bus.consume(names.store_reads_queue, loops[5].accept)
            if queries is not None:
                # History and conversations, apart from the sync windows of a login.
                await bus.consume(names.store_queries_queue, queries.accept)
            health.is_serving = True
            log.info(READY_EVENT, service=SERVICE)
            await stop.wait()
            health.is_draining = True
            log.info("shutdown_started", service=SERVICE)
            sampler.cancel()
            sweeper.cancel()
            stopping.set()
            await bus.stop_consuming()
            for batch_loop in loops:
                batch_loop.close()
            _, pending = await asyncio.wait(tasks, timeout=settings.shutdown_timeout_s)
            for task in pending:
                log.warning("shutdown_timed_out", service=SERVICE)
                task.cancel()
            # The kept reading connections go back before the pool closes.
            await sync_tables.held.close()
            if history is not None:
                await history.close()
    log.info("service_stopped", service=SERVICE)


async def run_then_drain(
    batch_loop: BatchLoop, server: InboxWriter | QueryServer
) -> None:
    """A loop whose batches go on after it returns (the inbox's, the queries'), then those
    batches: they still wait for their confirms."""
    await batch_loop.run()
    await server.drain()
