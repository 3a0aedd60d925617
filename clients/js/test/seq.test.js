// The JavaScript client's sync cursor: what it sends as `since` at each `init`, where it keeps
// the highest `seq`, what `synced` does. Against a stand-in gateway on a local socket (the `ws`
// package's server), which records the frames it gets and answers as a gateway would.
import assert from "node:assert/strict";
import { test } from "node:test";

import WebSocket, { WebSocketServer } from "ws";

import { LocalStorageSeqStore, SwitchboardClient, tokenSubject } from "../switchboard.js";

/** An unsigned token of `uid` (the stand-in verifies nothing). */
const tokenOf = (uid) => `e30.${Buffer.from(JSON.stringify({ sub: uid })).toString("base64url")}.x`;

/** A Storage-like object in memory. */
function memoryStorage() {
  const items = new Map();
  return {
    items,
    getItem: (key) => (items.has(key) ? items.get(key) : null),
    setItem: (key, value) => items.set(key, String(value)),
  };
}

async function standIn(pushes = []) {
  const server = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((resolve) => server.once("listening", resolve));
  const inits = [];
  const sockets = [];
  server.on("connection", (socket) => {
    sockets.push(socket);
    socket.once("message", (data) => {
      inits.push(JSON.parse(String(data)));
      socket.send(JSON.stringify({ type: "ready", uid: "bob" }));
      for (const frame of pushes.shift() ?? []) socket.send(JSON.stringify(frame));
    });
  });
  return {
    url: `ws://127.0.0.1:${server.address().port}/ws`,
    inits,
    dropAll: () => sockets.splice(0).forEach((socket) => socket.terminate()),
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

async function until(predicate, withinMs = 5000) {
  const deadline = Date.now() + withinMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const message = (mid, seq) => ({ type: "message", mid, from: "alice", to: "bob", body: seq, ts: 1, seq });

test("the uid of a token is read without verifying it", () => {
  assert.equal(tokenSubject(tokenOf("bob")), "bob");
  assert.equal(tokenSubject("not a token"), null);
});

test("a localStorage store keeps the seq under its key", () => {
  const storage = memoryStorage();
  const store = new LocalStorageSeqStore("switchboard.seq.bob", storage);
  assert.equal(store.load(), null);
  store.save(5);
  assert.equal(storage.getItem("switchboard.seq.bob"), "5");
  assert.equal(new LocalStorageSeqStore("switchboard.seq.bob", storage).load(), 5);
  storage.setItem("switchboard.seq.bob", "garbage");
  assert.equal(store.load(), null);
});

test("init carries the stored seq as since, from a given store", async () => {
  const gateway = await standIn();
  const client = new SwitchboardClient({ urls: gateway.url, token: tokenOf("bob"), WebSocket, seqStore: { load: () => 41, save() {} } });
  await client.start();
  await client.close();
  const fresh = new SwitchboardClient({ urls: gateway.url, token: tokenOf("bob"), WebSocket });
  await fresh.start(); // Node without localStorage: memory, nothing known yet
  await fresh.close();
  await gateway.close();
  assert.deepEqual(gateway.inits.map((init) => init.since), [41, undefined]);
});

test("localStorage by default, a key per uid; every reconnect sends the highest seq handled", async () => {
  const storage = memoryStorage();
  globalThis.localStorage = /** @type {any} */ (storage);
  const gateway = await standIn([
    [message("m1", 4), message("m2", 5), { seq: 6, type: "receipt", by: "alice", mid: "m0" }],
    [{ type: "synced", seq: 2 }],
  ]);
  try {
    const client = new SwitchboardClient({ urls: gateway.url, token: tokenOf("bob"), WebSocket, backoffBaseMs: 10 });
    const receipts = [];
    const heads = [];
    client.on("receipt", (receipt) => receipts.push(receipt));
    client.on("synced", (head) => heads.push(head));
    await client.start();
    await until(() => client.seq === 6);
    assert.equal(storage.getItem("switchboard.seq.bob"), "6");
    assert.deepEqual(receipts, [{ by: "alice", mid: "m0", seq: 6 }]);
    gateway.dropAll();
    await until(() => heads.length === 1);
    assert.deepEqual(heads, [2]);
    assert.equal(client.seq, 2); // a head below the cursor (a reset inbox) replaces it
    assert.equal(storage.getItem("switchboard.seq.bob"), "2");
    await client.close();
    assert.deepEqual(gateway.inits.map((init) => init.since), [undefined, 6]);
  } finally {
    delete globalThis.localStorage;
    await gateway.close();
  }
});
