// Pure parts of the client: reconnect delays, the order of the URLs and the memory of seen
// mids. No network.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  GOING_AWAY,
  openDeadlineMs,
  reconnectDelayMs,
  refreshDelayMs,
  refreshRetryDelayMs,
  SeenMids,
  SwitchboardClient,
  TERMINAL_CLOSE_CODES,
  tokenExpiryMs,
  urlOrder,
} from "../switchboard.js";

/** An unsigned token with this payload: the client reads exp, it never verifies. */
function tokenWith(payload) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${encode({ alg: "HS256", typ: "JWT" })}.${encode(payload)}.c2ln`;
}

test("delays grow exponentially with full jitter, capped", () => {
  const top = () => 0.999999;
  assert.ok(reconnectDelayMs(0, null, 100, 5000, top) < 100);
  assert.ok(reconnectDelayMs(3, null, 100, 5000, top) > 799);
  assert.ok(reconnectDelayMs(50, null, 100, 5000, top) <= 5000);
  assert.equal(reconnectDelayMs(4, 1006, 100, 5000, () => 0), 0);
  assert.equal(reconnectDelayMs(4, null, 100, 5000, () => 0.5), 800);
});

test("the open deadline doubles after each failed attempt, up to its cap", () => {
  assert.deepEqual(
    [0, 1, 2, 3, 4].map((failed) => openDeadlineMs(failed, 5000, 20_000)),
    [5000, 10_000, 20_000, 20_000, 20_000],
  );
  assert.equal(openDeadlineMs(10_000, 5000, 20_000), 20_000);
});

test("each failed attempt waits longer, and a ready connection starts over", async () => {
  const failed = { code: null, reason: "", wasReady: false };
  const droppedAfterReady = { code: null, reason: "", wasReady: true };
  const invalidToken = { code: 4003, reason: "", wasReady: false }; // terminal: the client stops
  const outcomes = [failed, failed, failed, failed, droppedAfterReady, failed, invalidToken];
  const deadlines = [];
  const client = new SwitchboardClient({
    urls: URLS,
    token: "t",
    WebSocket: class {},
    openTimeoutMs: 5000,
    openTimeoutMaxMs: 20_000,
    random: () => 0, // no reconnect delay
  });
  client._connection = async (url, deadlineMs) => {
    deadlines.push(deadlineMs);
    return outcomes.shift();
  };
  await client._reconnectForever();
  assert.deepEqual(deadlines, [5000, 10_000, 20_000, 20_000, 20_000, 5000, 10_000]);
});

test("a going-away close reconnects at once, then backs off", () => {
  assert.equal(reconnectDelayMs(0, GOING_AWAY, 100, 5000, () => 0.9), 0);
  assert.ok(reconnectDelayMs(1, GOING_AWAY, 100, 5000, () => 0.9) > 0);
});

const URLS = [0, 1, 2, 3].map((n) => `ws://gateway-${n}:8001/ws`);

/** A random source that returns these draws in turn. */
const draws = (...values) => () => values.shift();

/** Park–Miller: a seeded source of draws in [0, 1), the same on every run. */
function seeded(seed) {
  let state = seed;
  return () => {
    state = (state * 48271) % 2147483647;
    return (state - 1) / 2147483646;
  };
}

test("the URLs are tried in a permutation drawn from the random source", () => {
  // Fisher-Yates from the last place: 0 always swaps with the first.
  assert.deepEqual(urlOrder(URLS, draws(0, 0, 0)), [URLS[1], URLS[2], URLS[3], URLS[0]]);
  // The top of [0, 1) keeps each URL in its place.
  assert.deepEqual(urlOrder(URLS, draws(0.999, 0.999, 0.999)), URLS);
  const random = seeded(7);
  for (let n = 0; n < 100; n += 1) {
    assert.deepEqual([...urlOrder(URLS, random)].sort(), [...URLS].sort());
  }
  assert.deepEqual(urlOrder(URLS.slice(0, 1), draws()), URLS.slice(0, 1));
});

test("the clients of a lost gateway spread over the others", () => {
  // Each client reconnects to the URL after its current one in its own order: the successors
  // of one gateway are every other gateway alike, not one of them for all.
  const random = seeded(11);
  const successors = new Map();
  for (let n = 0; n < 3000; n += 1) {
    const order = urlOrder(URLS, random);
    const next = order[(order.indexOf(URLS[0]) + 1) % order.length];
    successors.set(next, (successors.get(next) ?? 0) + 1);
  }
  assert.deepEqual([...successors.keys()].sort(), URLS.slice(1));
  for (const url of URLS.slice(1)) {
    const share = successors.get(url) / 3000;
    assert.ok(share > 0.28 && share < 0.39, `${url}: ${share}`);
  }
});

test("a client shuffles its URLs unless told not to", () => {
  const WebSocket = class {};
  const shuffled = new SwitchboardClient({ urls: URLS, token: "t", WebSocket, random: draws(0, 0, 0) });
  assert.deepEqual(shuffled.urls, [URLS[1], URLS[2], URLS[3], URLS[0]]);
  const inOrder = new SwitchboardClient({ urls: URLS, token: "t", WebSocket, shuffleUrls: false });
  assert.deepEqual(inOrder.urls, URLS);
  assert.deepEqual(new SwitchboardClient({ urls: URLS[0], token: "t", WebSocket }).urls, [URLS[0]]);
});

test("terminal close codes are invalid token and kicked", () => {
  assert.deepEqual([...TERMINAL_CLOSE_CODES].sort(), [4003, 4005]);
});

test("seen mids are bounded and forget the oldest first", () => {
  const seen = new SeenMids(3);
  for (const mid of ["a", "b", "c"]) seen.add(mid);
  seen.add("a"); // used again: now the newest
  seen.add("d");
  assert.equal(seen.size, 3);
  assert.ok(!seen.has("b"));
  assert.ok(seen.has("a") && seen.has("c") && seen.has("d"));
  seen.markHandled("c");
  assert.ok(seen.isHandled("c") && !seen.isHandled("d"));
});

test("the token's exp is read without verifying it", () => {
  assert.equal(tokenExpiryMs(tokenWith({ sub: "ann", exp: 1_800_000_000 })), 1_800_000_000_000);
  assert.equal(tokenExpiryMs(tokenWith({ sub: "zoë", exp: 1.5, name: "Zoë ✓" })), 1500);
  assert.equal(tokenExpiryMs(tokenWith({ sub: "ann" })), null);
  assert.equal(tokenExpiryMs(tokenWith({ sub: "ann", exp: "soon" })), null);
  assert.equal(tokenExpiryMs("not a token"), null);
});

test("a token is refreshed ahead of exp, or half-way when it is short-lived", () => {
  assert.equal(refreshDelayMs(600_000, 0, 30_000), 570_000);
  assert.equal(refreshDelayMs(3_000, 0, 1_000), 2_000);
  assert.equal(refreshDelayMs(2_000, 0, 1_000), 1_000);
  assert.equal(refreshDelayMs(1_000, 2_000, 1_000), 0);
  assert.equal(refreshRetryDelayMs(10_000, 0), 5_000);
  assert.equal(refreshRetryDelayMs(1_000, 0), 1_000);
});
