// The JavaScript client against a real Switchboard stack of three gateways.
//
// Started by tests/clients/test_js_client.py, which passes the stack in the environment:
// SWITCHBOARD_TEST_GATEWAYS (JSON list of {url, pid}) and SWITCHBOARD_TEST_JWT_SECRET.
// Tests run in order; the last two stop gateways 0 and 1 for good.
import assert from "node:assert/strict";
import { createHmac, randomUUID } from "node:crypto";
import { test } from "node:test";

import WebSocket from "ws";

import { ClientClosed, RequestFailed, SwitchboardClient } from "../switchboard.js";

const gateways = JSON.parse(process.env.SWITCHBOARD_TEST_GATEWAYS ?? "[]");
const secret = process.env.SWITCHBOARD_TEST_JWT_SECRET ?? "";
const timeFactor = Number(process.env.SWITCHBOARD_TEST_TIME_FACTOR ?? "1");
const skip = gateways.length < 3 ? "needs a stack: run tests/clients/test_js_client.py" : false;

/** HS256 JWT, as a login service would sign it, valid for `ttlS` seconds. */
function makeToken(uid, key = secret, ttlS = 600) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const head = `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ sub: uid, exp: Math.floor(Date.now() / 1000) + ttlS })}`;
  return `${head}.${createHmac("sha256", key).update(head).digest("base64url")}`;
}

/** A unique uid per test, so that tests sharing the stack never see each other's messages. */
const uid = (name) => `${name}-${randomUUID().slice(0, 8)}`;

const open = [];
function clientFor(user, order, options = {}) {
  const client = new SwitchboardClient({
    urls: order.map((i) => gateways[i].url),
    token: () => makeToken(user),
    WebSocket,
    backoffBaseMs: 100,
    backoffMaxMs: 1000,
    shuffleUrls: false, // in the order given: the tests say which gateway comes next
    ...options,
  });
  open.push(client);
  return client;
}

/** Every message a client's application sees, and a way to wait for the next ones. */
function inbox(client) {
  const seen = [];
  let wake = () => {};
  client.on("message", (message) => {
    seen.push(message);
    wake();
  });
  let read = 0;
  return {
    seen,
    /** The next `count` messages not returned yet (they may have arrived already). */
    async next(count = 1, withinMs = 10_000) {
      const deadline = Date.now() + withinMs * timeFactor;
      while (seen.length < read + count) {
        if (Date.now() > deadline) throw new Error(`got ${seen.length - read} of ${count} messages`);
        await new Promise((resolve) => {
          wake = resolve;
          setTimeout(resolve, 100);
        });
      }
      read += count;
      return seen.slice(read - count, read);
    },
  };
}

async function until(predicate, withinMs = 5000) {
  const deadline = Date.now() + withinMs * timeFactor;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 20)); // poll; the deadline synchronises
  }
}

test.afterEach(async () => {
  await Promise.all(open.splice(0).map((client) => client.close()));
});

test("messages cross gateways both ways and are acknowledged", { skip }, async () => {
  const [a, b] = [uid("alice"), uid("bob")];
  const alice = clientFor(a, [0]);
  const bob = clientFor(b, [1]);
  const aliceInbox = inbox(alice);
  const bobInbox = inbox(bob);
  await Promise.all([alice.start(), bob.start()]);
  assert.equal(alice.uid, a);

  const mid = await alice.send({ to: b, body: { text: "hi bob" } });
  const [message] = await bobInbox.next();
  assert.deepEqual([message.mid, message.from, message.to, message.body], [mid, a, b, { text: "hi bob" }]);

  const reply = await bob.send({ to: a, body: ["hi", 1.5, null] });
  const [back] = await aliceInbox.next();
  assert.deepEqual([back.mid, back.body], [reply, ["hi", 1.5, null]]);
  assert.ok(mid < reply);
  await until(() => bob.seen.isHandled(mid)); // acknowledged after the listener ran

  // Acknowledged: a new connection of bob gets nothing replayed.
  await bob.close();
  const again = clientFor(b, [0]);
  const againInbox = inbox(again);
  await again.start();
  const sentinel = await alice.send({ to: b, body: "sentinel" });
  const [first] = await againInbox.next();
  assert.equal(first.mid, sentinel);
});

test("messages sent while offline arrive at login, in order", { skip }, async () => {
  const [a, c] = [uid("alice"), uid("carol")];
  const alice = clientFor(a, [0]);
  await alice.start();
  const mids = [];
  for (const n of [0, 1, 2]) mids.push(await alice.send({ to: c, body: n }));
  const carol = clientFor(c, [1]);
  const carolInbox = inbox(carol);
  await carol.start();
  const received = await carolInbox.next(3);
  assert.deepEqual(received.map((m) => m.mid), mids);
  assert.deepEqual(received.map((m) => m.body), [0, 1, 2]);
});

test("transient sends reach online peers only and are never acknowledged", { skip }, async () => {
  const [a, b] = [uid("alice"), uid("bob")];
  const alice = clientFor(a, [0]);
  const bob = clientFor(b, [1]);
  const bobInbox = inbox(bob);
  const acked = [];
  const sendAcks = bob._sendAcks.bind(bob);
  bob._sendAcks = (mids) => {
    acked.push(...mids);
    sendAcks(mids);
  };
  await Promise.all([alice.start(), bob.start()]);

  const typing = await alice.send({ to: b, body: { typing: true }, transient: true });
  const [message] = await bobInbox.next();
  assert.deepEqual([message.mid, message.transient], [typing, true]);
  const durable = await alice.send({ to: b, body: "hello" });
  const [second] = await bobInbox.next();
  assert.equal(second.mid, durable);
  await until(() => acked.includes(durable));
  assert.ok(!acked.includes(typing)); // handled, but a transient message takes no ack
  assert.ok(bob.seen.isHandled(typing));

  // Sent while bob is offline: never stored, so bob's next connection gets only the durable one.
  await bob.close();
  await alice.send({ to: b, body: { typing: true }, transient: true });
  const later = await alice.send({ to: b, body: "later" });
  const again = clientFor(b, [0]);
  const againInbox = inbox(again);
  await again.start();
  const [first] = await againInbox.next();
  assert.equal(first.mid, later);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(againInbox.seen.length, 1);
});

test("presence asks about any number of uids, 100 per frame", { skip }, async () => {
  const [a, b] = [uid("alice"), uid("bob")];
  const alice = clientFor(a, [0]);
  const bob = clientFor(b, [1]);
  await Promise.all([alice.start(), bob.start()]);
  const strangers = Array.from({ length: 250 }, (_, n) => uid(`nobody${n}`));
  const online = await alice.presence([...strangers.slice(0, 180), b, ...strangers.slice(180)]);
  assert.deepEqual(online, [b]);
  assert.deepEqual(await alice.presence([]), []);
});

test("a rejected send rejects with the error code", { skip }, async () => {
  const alice = clientFor(uid("alice"), [0]);
  await alice.start();
  await assert.rejects(alice.send({ to: "x".repeat(200), body: "too long a uid" }), (error) => {
    assert.ok(error instanceof RequestFailed);
    assert.equal(error.code, "invalid_field");
    return true;
  });
  assert.ok(await alice.send({ to: uid("bob"), body: "still connected" }));
});

test("an invalid token is terminal: no reconnect", { skip }, async () => {
  const mallory = clientFor("mallory", [0], { token: () => makeToken("mallory", "x".repeat(40)) });
  const states = [];
  mallory.on("state", (state) => states.push(state));
  await assert.rejects(mallory.start(), (error) => error instanceof ClientClosed && error.closeCode === 4003);
  assert.equal(mallory.state, "closed");
  assert.equal(mallory.stats.reconnects, 0);
  assert.deepEqual(states, ["connecting", "closed"]);
});

test("the token function refreshes the connection before exp: no 4004, no reconnect", { skip }, async () => {
  const [a, b] = [uid("alice"), uid("bob")];
  let issued = 0;
  // 2 to 3 s left (exp is whole seconds): without a refresh the gateway closes with 4004.
  const shortLived = () => {
    issued += 1;
    return makeToken(a, secret, 3);
  };
  const alice = clientFor(a, [2], { token: shortLived, refreshBeforeMs: 1000 });
  const bob = clientFor(b, [2]);
  const aliceInbox = inbox(alice);
  const refreshErrors = [];
  alice.on("refreshError", (error) => refreshErrors.push(error));
  await Promise.all([alice.start(), bob.start()]);

  await until(() => alice.stats.refreshes >= 2, 10_000);
  assert.ok(issued >= 3);
  assert.deepEqual(refreshErrors, []);
  assert.equal(alice.stats.reconnects, 0);
  assert.deepEqual(alice.stats.gateways, [gateways[2].url]);
  const mid = await bob.send({ to: a, body: "still the same connection" });
  assert.equal((await aliceInbox.next())[0].mid, mid);
});

test("a going-away close reconnects at once to the next gateway", { skip }, async () => {
  const [a, b] = [uid("alice"), uid("bob")];
  // A huge backoff: only the going-away rule can make this reconnect quick.
  const bob = clientFor(b, [0, 1], { backoffBaseMs: 3_600_000, backoffMaxMs: 3_600_000 });
  const alice = clientFor(a, [2]);
  const bobInbox = inbox(bob);
  const states = [];
  bob.on("state", (state) => states.push(state));
  await Promise.all([bob.start(), alice.start()]);

  process.kill(gateways[0].pid, "SIGTERM"); // the gateway closes its sockets with 1001
  await until(() => states.length >= 4, 5000);
  assert.deepEqual(states, ["connecting", "ready", "reconnecting", "ready"]);
  assert.equal(bob.url, gateways[1].url);

  const mid = await alice.send({ to: b, body: "after the move" });
  assert.equal((await bobInbox.next())[0].mid, mid);
});

test("a dead gateway is noticed by ping; an unconfirmed send is resent once", { skip }, async () => {
  const [a, b] = [uid("alice"), uid("bob")];
  const alice = clientFor(a, [1, 2], { pingIntervalMs: 500, pongTimeoutMs: 1000 });
  const bob = clientFor(b, [2]);
  const bobInbox = inbox(bob);
  await Promise.all([alice.start(), bob.start()]);

  // A frozen gateway keeps its sockets open but never answers: no receipt, no pong.
  process.kill(gateways[1].pid, "SIGSTOP");
  const frozenAt = Date.now();
  const sending = alice.send({ to: b, body: "during the outage" });
  await until(() => alice.state === "reconnecting", 5000);
  assert.ok(Date.now() - frozenAt < (500 + 1000 + 1000) * timeFactor, "noticed within ping + pong timeout");
  process.kill(gateways[1].pid, "SIGKILL");

  const mid = await sending;
  assert.equal(alice.url, gateways[2].url);
  assert.ok(alice.stats.resentRequests >= 1);
  assert.equal((await bobInbox.next())[0].mid, mid);
  const sentinel = await alice.send({ to: b, body: "sentinel" });
  assert.equal((await bobInbox.next())[0].mid, sentinel); // no second copy in between
  assert.equal(bobInbox.seen.filter((m) => m.mid === mid).length, 1);
});
