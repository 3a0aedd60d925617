// Pure parts of the client: reconnect delays and the memory of seen mids. No network.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  GOING_AWAY,
  reconnectDelayMs,
  refreshDelayMs,
  refreshRetryDelayMs,
  SeenMids,
  TERMINAL_CLOSE_CODES,
  tokenExpiryMs,
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

test("a going-away close reconnects at once, then backs off", () => {
  assert.equal(reconnectDelayMs(0, GOING_AWAY, 100, 5000, () => 0.9), 0);
  assert.ok(reconnectDelayMs(1, GOING_AWAY, 100, 5000, () => 0.9) > 0);
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
