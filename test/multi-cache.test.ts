import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FerryError } from '../src/errors.js';
import { ModelCache, type Loaded } from '../src/multi/index.js';

/** A cache over fake models `{ key }` whose sizes come from `sizes`, recording loads and closes. */
function fakeCache(budgetBytes: number, sizes: Record<string, number>, opts: { fail?: Set<string>; gate?: { key: string; until: Promise<void> } } = {}) {
  const loads: string[] = [];
  const closed: string[] = [];
  const cache = new ModelCache<{ key: string }>({
    budgetBytes,
    async load(key): Promise<Loaded<{ key: string }>> {
      loads.push(key);
      if (opts.gate?.key === key) await opts.gate.until;
      if (opts.fail?.has(key)) throw new FerryError('MODEL_ERROR', `cannot load ${key}`);
      return { model: { key }, sizeBytes: sizes[key] ?? 1 };
    },
    close(model) {
      closed.push(model.key);
      return Promise.resolve();
    },
  });
  const get = (key: string): Promise<string> => cache.use(key, (m) => Promise.resolve(m.key));
  return { cache, loads, closed, get };
}

test('the cache evicts least recently used models first and accounts bytes, not counts (the worked example)', async () => {
  const { cache, closed, get } = fakeCache(1000, { a: 400, b: 400, c: 400, big: 900 });
  await get('a');
  await get('b');
  await get('a'); // a is now more recent than b
  await get('c');
  assert.deepEqual(cache.keys(), ['a', 'c']);
  assert.deepEqual(closed, ['b']);
  assert.equal(cache.stats().bytes, 800);
  // One 900-byte model pushes out both 400-byte ones: the budget is bytes.
  await get('big');
  assert.deepEqual(cache.keys(), ['big']);
  assert.deepEqual(closed, ['b', 'a', 'c']);
  const s = cache.stats();
  assert.deepEqual({ models: s.models, bytes: s.bytes, hits: s.hits, misses: s.misses, loads: s.loads, evictions: s.evictions }, { models: 1, bytes: 900, hits: 1, misses: 4, loads: 4, evictions: 3 });
});

test('a model larger than the whole budget is refused and closed, and nothing else is evicted for it', async () => {
  const { cache, closed, get } = fakeCache(500, { a: 100, huge: 501 });
  await get('a');
  await assert.rejects(get('huge'), (err: FerryError) => err.code === 'INVALID_PARAMETER_VALUE' && err.status === 400 && /huge/.test(err.message));
  assert.deepEqual(cache.keys(), ['a']);
  assert.deepEqual(closed, ['huge']);
});

test('concurrent misses for one model load it once; hits on other models do not wait for the load', async () => {
  let open!: () => void;
  const until = new Promise<void>((resolve) => (open = resolve));
  const { cache, loads, get } = fakeCache(10_000, {}, { gate: { key: 'm', until } });
  await get('warm');
  const waiting = Array.from({ length: 10 }, () => get('m'));
  await new Promise((r) => setImmediate(r));
  // While m's load is stuck, a model already held answers.
  assert.equal(await get('warm'), 'warm');
  assert.deepEqual(loads, ['warm', 'm']);
  open();
  assert.deepEqual(await Promise.all(waiting), Array.from({ length: 10 }, () => 'm'));
  assert.deepEqual(loads, ['warm', 'm']);
  const s = cache.stats();
  assert.deepEqual({ loads: s.loads, misses: s.misses, hits: s.hits }, { loads: 2, misses: 11, hits: 1 });
});

test('a failing load rejects its waiters only; other models load, and the next request retries it', async () => {
  const fail = new Set(['bad']);
  const { cache, loads, get } = fakeCache(10_000, {}, { fail });
  const results = await Promise.allSettled([get('bad'), get('bad'), get('good')]);
  assert.equal(results[0]?.status, 'rejected');
  assert.equal(results[1]?.status, 'rejected');
  assert.deepEqual(results[2], { status: 'fulfilled', value: 'good' });
  assert.deepEqual(loads, ['bad', 'good']);
  assert.equal(cache.stats().loadFailures, 1);
  fail.delete('bad');
  assert.equal(await get('bad'), 'bad');
  assert.deepEqual(loads, ['bad', 'good', 'bad']);
});

test('a model evicted while a request runs on it is closed only when that request ends', async () => {
  const { cache, closed, get } = fakeCache(100, { a: 60, b: 60 });
  let finish!: () => void;
  const running = cache.use('a', () => new Promise<void>((resolve) => (finish = resolve)));
  await new Promise((r) => setImmediate(r));
  await get('b'); // evicts a from the accounting
  assert.deepEqual(cache.keys(), ['b']);
  assert.equal(cache.stats().bytes, 60);
  assert.deepEqual(closed, []);
  finish();
  await running;
  assert.deepEqual(closed, ['a']);
});
