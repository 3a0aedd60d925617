"""The classic single-process chat server: ``uid -> connections`` in memory, over websockets.

``python -m bench.peers.ws_relay --port P`` prints ``ready`` once it listens, and stops on
SIGTERM or SIGINT. It is the upper bound of one process: no broker, no store, no
acknowledgement; a message for a uid with no connection here is dropped.

Protocol, JSON text frames::

    client -> relay                                 relay -> client
    {"uid": UID}               (first frame)        {"type": "ready"}
    {"type": "send", "to": UID, "body": ANY}        to every connection of UID:
                                                    {"type": "message", "from": UID, "body": ANY}
    {"type": "join", "room": ROOM}                  {"type": "joined", "room": ROOM}
    {"type": "room_send", "room": ROOM, "body": ANY}
                                                    to every connection in ROOM:
                                        {"type": "message", "from": UID, "room": ROOM, "body": ANY}
    (anything else)                                 {"type": "error", "message": TEXT}

Its best configuration, for a fair comparison: no compression, msgspec decoding, the body
forwarded byte for byte, and websockets' ``broadcast`` (a synchronous write to each socket, no
coroutine per frame).
"""

import argparse
import asyncio
import signal

import msgspec
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

READY = '{"type":"ready"}'
HELLO_CLOSE_CODE = 1008  # policy violation: the first frame must name the uid


class Hello(msgspec.Struct, frozen=True):
    uid: str


class Frame(msgspec.Struct, frozen=True, tag_field="type"):
    """Base of the frames after the hello."""


class Send(Frame, tag="send", frozen=True):
    to: str
    body: msgspec.Raw


class Join(Frame, tag="join", frozen=True):
    room: str


class RoomSend(Frame, tag="room_send", frozen=True):
    room: str
    body: msgspec.Raw


decode_hello = msgspec.json.Decoder(Hello).decode
decode_frame = msgspec.json.Decoder(Send | Join | RoomSend).decode
encode = msgspec.json.encode


class Relay:
    """Who is connected, and which connections are in which room."""

    def __init__(self) -> None:
        self.connections: dict[str, set[ServerConnection]] = {}
        self.rooms: dict[str, set[ServerConnection]] = {}

    async def serve_connection(self, websocket: ServerConnection) -> None:
        try:
            uid = decode_hello(await websocket.recv()).uid
        except (msgspec.DecodeError, ConnectionClosed):
            await websocket.close(HELLO_CLOSE_CODE, "the first frame must be {uid}")
            return
        sender = encode(uid)  # the uid as a JSON string, encoded once
        mine = self.connections.setdefault(uid, set())
        mine.add(websocket)
        rooms: set[str] = set()
        try:
            await websocket.send(READY)
            async for text in websocket:
                try:
                    frame = decode_frame(text)
                except msgspec.DecodeError as exc:
                    error = {"type": "error", "message": str(exc)}
                    await websocket.send(encode(error), text=True)
                    continue
                match frame:
                    case Send():
                        targets = self.connections.get(frame.to)
                        if targets:
                            message = b'{"type":"message","from":%b,"body":%b}' % (
                                sender,
                                frame.body,
                            )
                            broadcast(targets, message, text=True)
                    case RoomSend():
                        members = self.rooms.get(frame.room)
                        if members:
                            message = (
                                b'{"type":"message","from":%b,"room":%b,"body":%b}'
                                % (sender, encode(frame.room), frame.body)
                            )
                            broadcast(members, message, text=True)
                    case Join():
                        self.rooms.setdefault(frame.room, set()).add(websocket)
                        rooms.add(frame.room)
                        await websocket.send(
                            encode({"type": "joined", "room": frame.room}), text=True
                        )
        except ConnectionClosed:
            pass
        finally:
            mine.discard(websocket)
            if not mine:
                self.connections.pop(uid, None)
            for room in rooms:
                members = self.rooms.get(room)
                if members is not None:
                    members.discard(websocket)
                    if not members:
                        del self.rooms[room]


async def main(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    relay = Relay()
    async with serve(relay.serve_connection, "127.0.0.1", port, compression=None):
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.peers.ws_relay")
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
