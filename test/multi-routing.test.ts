/** Model-aware routing for families (rendezvous hashing with bounded load) and model names in requests. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ReplicaChannel } from '../src/channel/index.js';
import { AFFINITY_LOAD_FACTOR, EntityTraffic, modelAffinity, pickAffine, type Backend } from '../src/gateway/index.js';
import { parseModelRef } from '../src/multi/index.js';

const channel = {} as ReplicaChannel;
const backends = (n: number): Backend[] => Array.from({ length: n }, (_, i) => ({ id: `ep.family.r${i}`, channel, outstanding: 0 }));
const always = (): boolean => true;
const home = (bs: Backend[], model: string): Backend | undefined => pickAffine(bs, modelAffinity(model), always);

test('each model has a stable home replica; 4,000 models spread evenly over 4 replicas', () => {
  const bs = backends(4);
  const counts = new Map<string, number>();
  for (let i = 0; i < 4000; i++) {
    const h = home(bs, `ads-${i}/1`) as Backend;
    assert.equal(home(bs, `ads-${i}/1`), h, 'the same model goes to the same replica');
    counts.set(h.id, (counts.get(h.id) ?? 0) + 1);
  }
  for (const b of bs) {
    const c = counts.get(b.id) ?? 0;
    assert.ok(c > 850 && c < 1150, `replica ${b.id} is home to ${c} of 4000 models (expected ~1000)`);
  }
});

test('removing a replica moves only the models it was home to; adding one takes ~1/n from each', () => {
  const bs = backends(5);
  const before = new Map<string, string>();
  for (let i = 0; i < 2000; i++) before.set(`m-${i}`, (home(bs, `m-${i}`) as Backend).id);
  const gone = bs[2] as Backend;
  const fewer = bs.filter((b) => b !== gone);
  let moved = 0;
  for (const [m, id] of before) {
    const now = (home(fewer, m) as Backend).id;
    if (id !== gone.id) assert.equal(now, id, `${m} stays on ${id}`);
    else moved++;
  }
  assert.equal(moved, [...before.values()].filter((id) => id === gone.id).length);
  const more = [...bs, { id: 'ep.family.r5', channel, outstanding: 0 }];
  const taken = [...before].filter(([m, id]) => (home(more, m) as Backend).id !== id);
  assert.ok(taken.every(([m]) => (home(more, m) as Backend).id === 'ep.family.r5'), 'a new replica only takes models, never reshuffles the others');
  assert.ok(taken.length > 2000 / 6 * 0.7 && taken.length < 2000 / 6 * 1.3, `${taken.length} of 2000 models moved to the new replica (expected ~333)`);
});

test('load is bounded: a busy home spills a model to its next-ranked replica; all at the bound → undefined (any replica)', () => {
  const bs = backends(3);
  const model = modelAffinity('hot/1');
  const ranked: Backend[] = [];
  // The ranking, found by taking replicas out one at a time.
  for (let pool = [...bs]; pool.length > 0;) {
    const top = pickAffine(pool, model, always) as Backend;
    ranked.push(top);
    pool = pool.filter((b) => b !== top);
  }
  const [first, second, third] = ranked as [Backend, Backend, Backend];
  // Idle: bound = ceil(1.25 × 1 / 3) = 1; the home takes it.
  assert.equal(pickAffine(bs, model, always), first);
  // Home at 1, others 0: total 1 → bound = ceil(1.25 × 2 / 3) = 1 → the home is full, the second takes it.
  first.outstanding = 1;
  assert.equal(pickAffine(bs, model, always), second);
  // 2, 1, 0: total 3 → bound = ceil(1.25 × 4 / 3) = 2 → the second still has room.
  first.outstanding = 2;
  second.outstanding = 1;
  assert.equal(pickAffine(bs, model, always), second);
  // 3, 3, 0: total 6 → bound = ceil(1.25 × 7 / 3) = 3 → the third.
  first.outstanding = 3;
  second.outstanding = 3;
  assert.equal(pickAffine(bs, model, always), third);
  // 2, 2, 2: total 6 → bound 3 → back to the home.
  first.outstanding = 2;
  second.outstanding = 2;
  third.outstanding = 2;
  assert.equal(pickAffine(bs, model, always), first);
  assert.equal(AFFINITY_LOAD_FACTOR, 1.25);
  // Unusable replicas (full, ejected, just failed) are skipped; none usable → undefined.
  assert.equal(pickAffine(bs, model, (b) => b !== first), second);
  assert.equal(pickAffine(bs, model, () => false), undefined);
  assert.equal(pickAffine([], model, always), undefined);
});

test('EntityTraffic with affinity: a model sticks to its home, spills under load, and waits only when every replica is full', async () => {
  const t = new EntityTraffic({ name: 'ep/family', maxConcurrencyPerReplica: 2, maxQueued: 4, queueTimeoutMs: 10_000, onDemand: () => undefined });
  const bs = backends(2);
  for (const b of bs) t.addBackend(b);
  const a = modelAffinity('m-1/1');
  const homeOf = pickAffine(bs, a, always) as Backend;
  const one = await t.acquire(undefined, a);
  assert.equal(one, homeOf);
  t.release(one);
  assert.equal(await t.acquire(undefined, a).then((b) => (t.release(b), b)), homeOf, 'sequential requests stay home');
  // Concurrent requests: the home takes what the bound allows, the rest spill, then they queue.
  const held = [await t.acquire(undefined, a), await t.acquire(undefined, a), await t.acquire(undefined, a), await t.acquire(undefined, a)];
  assert.deepEqual(bs.map((b) => b.outstanding), [2, 2]);
  const waiting = t.acquire(undefined, a);
  assert.equal(t.queued, 1);
  const freed = held.find((b) => b !== homeOf) as Backend;
  t.release(freed);
  assert.equal(await waiting, freed, 'a waiting request takes whichever replica frees up');
});

test('model names: name, name/version, name@alias; anything else is a 400 naming the field', () => {
  assert.deepEqual(parseModelRef('ads-17', 'X-Ferry-Model'), { name: 'ads-17', version: undefined, alias: undefined });
  assert.deepEqual(parseModelRef('ads-17/3', 'X-Ferry-Model'), { name: 'ads-17', version: 3, alias: undefined });
  assert.deepEqual(parseModelRef('ads.v2_x@champion', 'X-Ferry-Model'), { name: 'ads.v2_x', version: undefined, alias: 'champion' });
  for (const bad of ['', '/3', 'a/0', 'a/x', 'a/3/4', 'a@', '../x', 'a b', 'a@b c', `${'x'.repeat(129)}`]) {
    assert.throws(() => parseModelRef(bad, 'X-Ferry-Model'), (err: Error) => /X-Ferry-Model/.test(err.message) && /name\/<version>/.test(err.message), bad);
  }
});
