/** The one capped exponential backoff (src/backoff.ts): the worked example of its comment. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffDelayMs } from '../src/backoff.js';

test('1 s doubling to a 30 s cap: 1, 2, 4, 8, 16, 30, 30 s; retry 0 counts as the first; huge retries stay at the cap', () => {
  const b = { baseMs: 1000, maxMs: 30_000 };
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7].map((n) => backoffDelayMs(n, b)), [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
  assert.equal(backoffDelayMs(0, b), 1000);
  assert.equal(backoffDelayMs(5000, b), 30_000);
});
