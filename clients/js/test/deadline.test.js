// The client against local servers that never let a connection reach `ready`: each connection
// is left once its deadline passes, and the next one gets a longer deadline. No Switchboard
// stack.
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { test } from "node:test";

import WebSocket, { WebSocketServer } from "ws";

import { SwitchboardClient } from "../switchboard.js";

const WITHIN_MS = 10_000;

/** Resolves once `condition()` holds; fails after `WITHIN_MS`. */
async function until(condition, what) {
  const deadline = Date.now() + WITHIN_MS;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A client of `url` that records the deadline each of its connections gets. */
function deadlineClient(url) {
  const deadlines = [];
  const client = new SwitchboardClient({
    urls: [url],
    token: "t",
    WebSocket,
    openTimeoutMs: 50,
    openTimeoutMaxMs: 100,
    backoffBaseMs: 10,
    backoffMaxMs: 10,
  });
  const connection = client._connection.bind(client);
  client._connection = (connectionUrl, deadlineMs) => {
    deadlines.push(deadlineMs);
    return connection(connectionUrl, deadlineMs);
  };
  return { client, deadlines };
}

test("a gateway that never answers init is left with a longer deadline each time", async () => {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve) => server.once("listening", resolve));
  let ended = 0;
  const frames = [];
  server.on("connection", (socket) => {
    socket.on("message", (data) => frames.push(JSON.parse(data.toString()).type));
    socket.on("close", () => {
      ended += 1;
    });
  });
  const { client, deadlines } = deadlineClient(`ws://127.0.0.1:${server.address().port}/ws`);
  const started = client.start();
  try {
    await until(() => ended >= 3, "three connections to end");
  } finally {
    // The next attempt may be connecting: closed, it must not throw (Node's `ws` raises an
    // error event for a socket closed before its handshake).
    await client.close();
    await assert.rejects(started); // closed before any ready
    await new Promise((resolve) => server.close(resolve));
  }
  assert.deepEqual(deadlines.slice(0, 3), [50, 100, 100]);
  assert.deepEqual(frames.slice(0, 3), ["init", "init", "init"]);
  assert.ok(client.stats.reconnects >= 3, `reconnects: ${client.stats.reconnects}`);
});

test("a server that never completes the handshake is left each time, and the process lives", async () => {
  // Accepts TCP connections and answers nothing: the WebSocket handshake never completes, and
  // each socket is closed by its deadline while it is still connecting.
  let accepted = 0;
  const sockets = [];
  const server = createServer((socket) => {
    accepted += 1;
    sockets.push(socket);
    socket.on("error", () => {}); // reset by the client
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { client, deadlines } = deadlineClient(`ws://127.0.0.1:${server.address().port}/ws`);
  const started = client.start();
  try {
    await until(() => deadlines.length >= 4, "four connection attempts");
  } finally {
    await client.close();
    await assert.rejects(started);
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
  assert.deepEqual(deadlines.slice(0, 3), [50, 100, 100]);
  assert.ok(accepted >= 3, `accepted: ${accepted}`);
});
