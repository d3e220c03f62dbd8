import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff } from "../src/backoff.js";

test("full jitter: the n-th delay lies in [0, min(cap, base * 2**n)]", () => {
  const highest = new Backoff(0.5, 4, () => 0.999999);
  assert.deepEqual([1, 2, 3, 4, 5].map(() => Math.round(highest.nextDelay())), [0, 1, 2, 4, 4]);
  const lowest = new Backoff(0.5, 4, () => 0);
  assert.equal(lowest.nextDelay(), 0);
});

test("Retry-After is a floor, and a success starts the window again", () => {
  const b = new Backoff(0.5, 30, () => 0.5);
  assert.equal(b.nextDelay(3), 3);
  b.nextDelay();
  b.nextDelay();
  b.reset();
  assert.equal(b.nextDelay(), 0.25);
});
