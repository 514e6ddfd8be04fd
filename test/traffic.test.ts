/** EntityTraffic: per-replica concurrency bounds, the wait buffer (FIFO, 429 when full, 503 at the deadline). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ReplicaChannel } from '../src/channel/index.js';
import { FerryError } from '../src/errors.js';
import { EntityTraffic, type Backend } from '../src/gateway/index.js';

const channel = {} as ReplicaChannel;
const backend = (id: string): Backend => ({ id, channel, outstanding: 0 });

function traffic(opts: Partial<{ max: number; queued: number; timeoutMs: number }> = {}): { t: EntityTraffic; demands: () => number } {
  let demands = 0;
  const t = new EntityTraffic({
    name: 'ep/e', maxConcurrencyPerReplica: opts.max ?? 2, maxQueued: opts.queued ?? 3, queueTimeoutMs: opts.timeoutMs ?? 10_000,
    onDemand: () => demands++,
  });
  return { t, demands: () => demands };
}

const isCode = (code: string) => (err: unknown): boolean => err instanceof FerryError && err.code === code && err.retryAfterS === 1;

test('a replica never carries more than its limit; the least loaded one with room is used', async () => {
  const { t } = traffic({ max: 2 });
  const a = backend('a');
  const b = backend('b');
  t.addBackend(a);
  t.addBackend(b);
  const got = [await t.acquire(), await t.acquire(), await t.acquire(), await t.acquire()];
  assert.equal(a.outstanding, 2);
  assert.equal(b.outstanding, 2);
  const fifth = t.acquire();
  assert.equal(t.queued, 1, 'the fifth waits: every replica is at its limit');
  t.release(got[0] as Backend);
  assert.equal(await fifth, got[0]);
  assert.equal((got[0] as Backend).outstanding, 2);
  assert.equal(t.queued, 0);
});

test('waiting requests are served in arrival order when a replica turns ready, and poke the autoscaler', async () => {
  const { t, demands } = traffic({ max: 1, queued: 5 });
  const order: number[] = [];
  const waits = [0, 1, 2].map((i) => t.acquire().then((b) => {
    order.push(i);
    return b;
  }));
  assert.equal(t.queued, 3);
  assert.equal(demands(), 3);
  const a = backend('a');
  t.addBackend(a);
  const first = await waits[0];
  assert.deepEqual(order, [0]);
  t.release(first as Backend);
  t.release((await waits[1]) as Backend);
  await waits[2];
  assert.deepEqual(order, [0, 1, 2]);
});

test('a full buffer refuses at once (429); a request waiting past the deadline gets 503', async () => {
  const { t } = traffic({ queued: 2, timeoutMs: 30 });
  const w1 = t.acquire();
  const w2 = t.acquire();
  await assert.rejects(t.acquire(), isCode('REQUEST_LIMIT_EXCEEDED'));
  await assert.rejects(w1, isCode('TEMPORARILY_UNAVAILABLE'));
  await assert.rejects(w2, isCode('TEMPORARILY_UNAVAILABLE'));
  assert.equal(t.queued, 0);
});

test('exclude skips the replica that just failed; removeBackend and rejectWaiting', async () => {
  const { t } = traffic({ max: 5 });
  const a = backend('a');
  const b = backend('b');
  t.addBackend(a);
  t.addBackend(b);
  for (let i = 0; i < 20; i++) {
    const got = await t.acquire(a);
    assert.equal(got, b);
    t.release(got);
  }
  assert.equal(t.removeBackend(b), true);
  assert.equal(t.removeBackend(b), false);
  const waiting = t.acquire(a);
  assert.equal(t.queued, 1, 'the only replica left is excluded');
  t.rejectWaiting(new FerryError('TEMPORARILY_UNAVAILABLE', 'going away', { retryAfterS: 1 }));
  await assert.rejects(waiting, isCode('TEMPORARILY_UNAVAILABLE'));
  assert.equal(t.queued, 0);
});

test('inFlight counts begin..end; takeAverageConcurrency is time-weighted: 2 in flight for half the window, 0 for the other half → ~1', async () => {
  const { t } = traffic({ max: 5 });
  const a = backend('a');
  t.addBackend(a);
  t.takeAverageConcurrency();
  t.begin();
  t.begin();
  assert.equal(t.inFlight, 2);
  await new Promise((r) => setTimeout(r, 80));
  t.end();
  t.end();
  await new Promise((r) => setTimeout(r, 80));
  const avg = t.takeAverageConcurrency();
  assert.ok(avg > 0.7 && avg < 1.3, `average ${avg}`);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(t.takeAverageConcurrency(), 0, 'a new window starts at every call');
});

test('outlier ejection: 3 transport failures in a row take a replica out of the pick while others can serve', async () => {
  const { t } = traffic({ max: 100 });
  const a = backend('a');
  const b = backend('b');
  t.addBackend(a);
  t.addBackend(b);
  t.markFailure(a);
  t.markFailure(a);
  t.markSuccess(a);
  t.markFailure(a);
  t.markFailure(a);
  for (let i = 0; i < 10; i++) t.release(await t.acquire());
  assert.ok(a.outstanding === 0 && (a.ejectedUntilMs ?? 0) === 0, 'two failures after a success do not eject');
  t.markFailure(a);
  assert.ok((a.ejectedUntilMs ?? 0) > performance.now(), 'the third in a row ejects');
  for (let i = 0; i < 20; i++) {
    const got = await t.acquire();
    assert.equal(got, b);
    t.release(got);
  }
  for (let i = 0; i < 3; i++) t.markFailure(b);
  const got = await t.acquire();
  assert.ok(got === a || got === b, 'with every replica ejected, one is still used rather than none');
  t.release(got);
});

test('retry budget: at most 10 + 20% of the window\'s requests', () => {
  const { t } = traffic();
  for (let i = 0; i < 100; i++) t.countRequest();
  let granted = 0;
  while (t.tryRetry()) granted++;
  assert.equal(granted, 30);
});
