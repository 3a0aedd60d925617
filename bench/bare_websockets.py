"""``python -m bench.bare_websockets --port P``: a WebSocket server that does nothing else.

The floor under any server built on the websockets library: each connection is accepted, read
and never answered. Compression is off, as in Switchboard's gateway, so that the memory per
connection compares like with like. Prints ``ready`` once it listens; SIGTERM stops it.
"""

import argparse
import asyncio
import signal

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


async def drain(websocket: ServerConnection) -> None:
    try:
        async for _ in websocket:
            pass
    except ConnectionClosed:
        pass


async def main(port: int) -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with serve(drain, "127.0.0.1", port, compression=None):
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.bare_websockets")
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
