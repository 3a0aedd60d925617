// The JavaScript client's history, conversations, read markers and receipts against a real
// Switchboard stack of two gateways with SWITCHBOARD_HISTORY=on.
//
// Started by tests/clients/test_js_client.py, which passes the stack in the environment:
// SWITCHBOARD_TEST_GATEWAYS (JSON list of {url, pid}) and SWITCHBOARD_TEST_JWT_SECRET.
import assert from "node:assert/strict";
import { createHmac, randomUUID } from "node:crypto";
import { test } from "node:test";

import WebSocket from "ws";

import { MemorySeqStore, RequestFailed, SwitchboardClient } from "../switchboard.js";

const gateways = JSON.parse(process.env.SWITCHBOARD_TEST_GATEWAYS ?? "[]");
const secret = process.env.SWITCHBOARD_TEST_JWT_SECRET ?? "";
const timeFactor = Number(process.env.SWITCHBOARD_TEST_TIME_FACTOR ?? "1");

function makeToken(uid) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const head = `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ sub: uid, exp: Math.floor(Date.now() / 1000) + 600 })}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

/** A unique uid per test: every uid's inbox starts at seq 1. */
const uid = (name) => `${name}-${randomUUID().slice(0, 8)}`;

const open = [];
function clientFor(user, order, options = {}) {
  const client = new SwitchboardClient({
    urls: order.map((i) => gateways[i].url),
    token: () => makeToken(user),
    WebSocket,
    backoffBaseMs: 100,
    shuffleUrls: false, // in the order given: the tests say which gateway comes next
    ...options,
  });
  open.push(client);
  return client;
}

/** Collects what a client emits for `event`. */
function collect(client, event) {
  const seen = [];
  client.on(event, (value) => {
    seen.push(value);
  });
  return seen;
}

async function until(predicate, withinMs = 10_000) {
  const deadline = Date.now() + withinMs * timeFactor;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 20)); // poll; the deadline synchronises
  }
}

test.afterEach(async () => {
  await Promise.all(open.splice(0).map((client) => client.close()));
});

test("history pages back, conversations count unread, read moves the marker", async () => {
  assert.ok(gateways.length >= 2, "needs a stack: run tests/clients/test_js_client.py");
  const [a, b] = [uid("alice"), uid("bob")];
  const alice = clientFor(a, [0]);
  const bob = clientFor(b, [1]);
  const aliceGot = collect(alice, "message");
  const bobGot = collect(bob, "message");
  await Promise.all([alice.start(), bob.start()]);

  const sent = [];
  for (const n of [0, 1, 2]) sent.push(await alice.send({ to: b, body: { n } }));
  await until(() => bobGot.length === 3);
  assert.deepEqual(bobGot.map((m) => m.seq), [1, 2, 3]);
  const reply = await bob.send({ to: a, body: "ok" });
  await until(() => aliceGot.length === 1); // delivered once written in the inboxes

  const newest = await bob.history({ with: a, limit: 2 });
  assert.deepEqual(newest.messages.map((m) => m.mid), [sent[2], reply]);
  assert.deepEqual(newest.messages.map((m) => m.seq), [3, 4]);
  assert.equal(newest.more, true);
  assert.equal(newest.messages[0].type, undefined);
  const older = await bob.history({ with: a, before: newest.messages[0].seq });
  assert.deepEqual(older.messages.map((m) => m.body), [{ n: 0 }, { n: 1 }]);
  assert.equal(older.more, false);

  let [talk] = await bob.conversations();
  assert.deepEqual([talk.with, talk.last.mid, talk.unread, talk.read], [a, reply, 3, null]);
  await bob.read(sent[2]);
  [talk] = await bob.conversations();
  assert.deepEqual([talk.unread, talk.read], [0, sent[2]]);
  assert.deepEqual(await bob.conversations({ before: talk.last.seq }), []);

  const elsewhere = await alice.send({ to: uid("carol"), body: "not for bob" });
  await assert.rejects(bob.read(elsewhere), (error) => error instanceof RequestFailed && error.code === "not_found");
});

test("a read sends receipts to the peer and the reader's other device; seq is saved", async () => {
  const [a, b] = [uid("alice"), uid("bob")];
  const saved = [];
  const aliceStore = new MemorySeqStore();
  const alice = clientFor(a, [0], {
    seqStore: { load: () => aliceStore.load(), save: (seq) => (saved.push(seq), aliceStore.save(seq)) },
  });
  const phone = clientFor(b, [1]);
  const laptop = clientFor(b, [0]);
  const aliceReceipts = collect(alice, "receipt");
  const laptopReceipts = collect(laptop, "receipt");
  const phoneGot = collect(phone, "message");
  const laptopGot = collect(laptop, "message");
  await Promise.all([alice.start(), phone.start(), laptop.start()]);

  const mids = [await alice.send({ to: b, body: 0 }), await alice.send({ to: b, body: 1 })];
  await until(() => phoneGot.length === 2 && laptopGot.length === 2);
  await until(() => laptop.seq === 2 && phone.seq === 2); // handled: the cursor rose
  await phone.read(mids[1]);

  // Alice's inbox: her two messages (seq 1 and 2; her sending connection got sent), then the receipt.
  await until(() => aliceReceipts.length === 1 && laptopReceipts.length === 1);
  assert.deepEqual(aliceReceipts, [{ by: b, mid: mids[1], seq: 3 }]);
  assert.deepEqual(laptopReceipts, [{ by: b, mid: mids[1], seq: 3 }]);
  await until(() => alice.seq === 3 && laptop.seq === 3);
  assert.deepEqual(saved, [3]);
});

test("a reconnect syncs what another device took meanwhile, then synced", async () => {
  const [a, b] = [uid("alice"), uid("bob")];
  const store = new MemorySeqStore();
  const alice = clientFor(a, [0]);
  await alice.start();
  const phone = clientFor(b, [1], { seqStore: store });
  const phoneGot = collect(phone, "message");
  await phone.start();
  await alice.send({ to: b, body: 0 });
  await until(() => phoneGot.length === 1 && store.load() === 1);
  await phone.close();

  const laptop = clientFor(b, [0]);
  const laptopGot = collect(laptop, "message");
  await laptop.start();
  const later = [await alice.send({ to: b, body: 1 }), await alice.send({ to: b, body: 2 })];
  await until(() => laptopGot.length === 2 && laptop.seq === 3);
  await laptop.read(later[1]);
  await laptop.close();

  const again = clientFor(b, [1], { seqStore: store });
  const got = collect(again, "message");
  const receipts = collect(again, "receipt");
  const heads = collect(again, "synced");
  await again.start();
  await until(() => heads.length === 1);
  assert.deepEqual(got.map((m) => m.mid), later);
  assert.deepEqual(receipts, [{ by: b, mid: later[1], seq: 4 }]);
  assert.deepEqual(heads, [4]);
  await until(() => store.load() === 4);
});
