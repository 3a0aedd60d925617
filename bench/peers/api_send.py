"""A backend that sends chat messages through Switchboard's ``api.send``, as fast as it may.

``python -m bench.peers.api_send --amqp-url URL --namespace NS --uids U1,U2,... --phase K
--start-ns T --warmup-s W --measure-s S MODE`` publishes from ``T`` (``time.monotonic_ns()``)
until the end of the window (``T + W + S``), on a channel with publisher confirms, keeping
``--in-flight`` commands unanswered, then waits up to ``--drain-s`` for the last answers and
prints one JSON line. ``MODE``:

``reply``
    ``api.send`` to one uid with ``reply_to`` and a correlation id, round robin over the uids
    (message n goes to ``uids[n % len(uids)]``); a command is answered by its reply.
``confirm``
    The same without ``reply_to``: a command is answered by its publisher confirm.
``multicast``
    ``api.send`` with ``"to": [every uid]`` and ``reply_to``; answered by its reply, which
    holds one mid per recipient.

The line: ``{"sent": commands, "answered": N, "refused": R, "recipients": mids (or sends)
answered, "per_s": commands answered in the window / S, "recipients_per_s": recipients
answered in the window / S, "cpu_s": this process's CPU time from the start}``. Each body is
``{"k": K, "n": n, "t": send time}``, as the load processes (``bench/load.py``) count them.
"""

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from proto.names import Names, api_key


class Counts:
    """Commands answered, and recipients reached by them, in the window and in all."""

    def __init__(self, window_start_ns: int, window_end_ns: int) -> None:
        self.window_start_ns = window_start_ns
        self.window_end_ns = window_end_ns
        self.answered = 0
        self.refused = 0
        self.recipients = 0
        self.answered_in_window = 0
        self.recipients_in_window = 0

    def answer(self, recipients: int) -> None:
        self.answered += 1
        self.recipients += recipients
        if self.window_start_ns <= time.monotonic_ns() <= self.window_end_ns:
            self.answered_in_window += 1
            self.recipients_in_window += recipients


def recipients_of(reply: dict[str, Any]) -> int | None:
    """How many recipients a reply names (one mid, or a mid per uid); None for a refusal."""
    if reply.get("type") == "error":
        return None
    if "mids" in reply:
        return len(reply["mids"])
    return 1


async def run(args: argparse.Namespace) -> dict[str, object]:
    names = Names(args.namespace)
    uids: list[str] = args.uids.split(",")
    window_start_ns = args.start_ns + int(args.warmup_s * 1e9)
    end_ns = window_start_ns + int(args.measure_s * 1e9)
    counts = Counts(window_start_ns, end_ns)
    waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def on_reply(message: AbstractIncomingMessage) -> None:
        future = waiting.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(json.loads(message.body))

    connection = await aio_pika.connect(args.amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        inbound = await channel.get_exchange(names.inbound_exchange, ensure=False)
        replies = await channel.declare_queue(exclusive=True)
        await replies.consume(on_reply, no_ack=True)
        loop = asyncio.get_running_loop()
        sent = 0

        def body(n: int, to: bytes) -> bytes:
            return b'{"to":%b,"body":{"k":%d,"n":%d,"t":%d}}' % (
                to,
                args.phase,
                n,
                time.monotonic_ns(),
            )

        everyone = json.dumps(uids).encode()

        async def command(n: int) -> None:
            if args.mode == "multicast":
                payload = body(n, everyone)
            else:
                payload = body(n, json.dumps(uids[n % len(uids)]).encode())
            if args.mode == "confirm":
                message = aio_pika.Message(payload, content_type="application/json")
                await inbound.publish(message, api_key("send"), timeout=args.drain_s)
                counts.answer(1)
                return
            correlation_id = uuid.uuid4().hex
            reply: asyncio.Future[dict[str, Any]] = loop.create_future()
            waiting[correlation_id] = reply
            message = aio_pika.Message(
                payload,
                content_type="application/json",
                reply_to=replies.name,
                correlation_id=correlation_id,
            )
            await inbound.publish(message, api_key("send"), timeout=args.drain_s)
            recipients = recipients_of(await reply)
            if recipients is None:
                counts.refused += 1
            else:
                counts.answer(recipients)

        async def keep_sending() -> None:
            nonlocal sent
            while time.monotonic_ns() < end_ns:
                n = sent
                sent += 1
                await command(n)

        await asyncio.sleep(max(0.0, (args.start_ns - time.monotonic_ns()) / 1e9))
        cpu_start_s = time.process_time()
        senders = [asyncio.create_task(keep_sending()) for _ in range(args.in_flight)]
        # Sending ends with the window; the last answers get the drain time.
        done, pending = await asyncio.wait(
            senders, timeout=(end_ns - time.monotonic_ns()) / 1e9 + args.drain_s
        )
        for task in pending:
            task.cancel()
        for task in done:
            task.result()
    return {
        "sent": sent,
        "answered": counts.answered,
        "refused": counts.refused,
        "recipients": counts.recipients,
        "per_s": counts.answered_in_window / args.measure_s,
        "recipients_per_s": counts.recipients_in_window / args.measure_s,
        "cpu_s": time.process_time() - cpu_start_s,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.peers.api_send")
    parser.add_argument("mode", choices=("reply", "confirm", "multicast"))
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--uids", required=True, help="comma-separated recipients")
    parser.add_argument("--phase", type=int, required=True)
    parser.add_argument("--start-ns", type=int, required=True)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--measure-s", type=float, default=4.0)
    parser.add_argument("--in-flight", type=int, default=500)
    parser.add_argument("--drain-s", type=float, default=30.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)
