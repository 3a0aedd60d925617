// Pure parts of the client: reconnect delays and the memory of seen mids. No network.
import assert from "node:assert/strict";
import { test } from "node:test";

import { GOING_AWAY, reconnectDelayMs, SeenMids, TERMINAL_CLOSE_CODES } from "../switchboard.js";

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
