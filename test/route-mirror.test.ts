/**
 * The primary's side of gateway workers' routes (src/gateway/route-mirror.ts), in process: the
 * table as data, the holds that keep a leaving replica's drain waiting for every worker, and rate
 * limits decided by the primary's buckets.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ReplicaChannel } from '../src/channel/index.js';
import { EntityTraffic, RateLimiter, RoutingTable, statsKey, type Backend, type EndpointRoute } from '../src/gateway/index.js';
import { RouteMirror } from '../src/gateway/route-mirror.js';
import type { PrimaryToWorker } from '../src/gateway/worker-protocol.js';

const channel = { close: () => undefined } as unknown as ReplicaChannel;
const backend = (id: string): Backend => ({ id, channel, outstanding: 0 });
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

function setup(): { table: RoutingTable; traffic: EntityTraffic; sent: Map<number, PrimaryToWorker[]>; mirror: RouteMirror; route: (t: EntityTraffic, limiter?: RateLimiter) => EndpointRoute } {
  // Called only once `mirror` exists (the table and traffic change after setup).
  const changed = (): void => mirror.changed();
  const table = new RoutingTable(changed);
  const traffic = new EntityTraffic({ maxConcurrencyPerReplica: 4, maxQueued: 10, queueTimeoutMs: 1000, name: 'lin/a', onDemand: () => undefined, onBackendsChange: changed });
  const sent = new Map<number, PrimaryToWorker[]>();
  const mirror = new RouteMirror({
    table, inferenceTableOn: (name) => name === 'logged',
    send: (w, msg) => sent.set(w, [...(sent.get(w) ?? []), msg]),
    addressOf: (b) => ({ kind: 'unix', socketPath: `/run/${b.id}.sock` }),
  });
  const route = (t: EntityTraffic, limiter?: RateLimiter): EndpointRoute => {
    const entity = { name: 'a', modelName: 'lin', modelVersion: '1', trafficPercentage: 100, traffic: t, statsKey: statsKey('lin', 'a', '1') };
    return { name: 'lin', entities: [entity], timeoutMs: 1000, shadows: [{ entity, mirrorPercentage: 5 }], fallback: false, rateLimiter: limiter, maxBodyBytes: undefined };
  };
  return { table, traffic, sent, mirror, route };
}

test('a worker that joins gets the whole table; every change reaches every worker once per event-loop turn', async () => {
  const { table, traffic, sent, mirror, route } = setup();
  traffic.addBackend(backend('r1'));
  table.set(route(traffic));
  mirror.addWorker(1);
  const first = sent.get(1)?.[0];
  assert.equal(first?.type, 'routes');
  assert.deepEqual(first.type === 'routes' ? first.routes : undefined, [{
    name: 'lin', timeoutMs: 1000, fallback: false, maxBodyBytes: undefined, rateLimits: undefined, inferenceTable: false,
    shadows: [{ entity: 0, mirrorPercentage: 5 }],
    entities: [{
      key: 1, name: 'a', modelName: 'lin', modelVersion: '1', trafficPercentage: 100, statsKey: 'lin/a/1', family: false,
      backends: [{ key: 2, id: 'r1', address: { kind: 'unix', socketPath: '/run/r1.sock' } }],
    }],
  }]);
  mirror.addWorker(2);
  traffic.addBackend(backend('r2'));
  traffic.addBackend(backend('r3'));
  await tick();
  for (const w of [1, 2]) {
    const last = sent.get(w)?.at(-1);
    assert.equal(last?.type === 'routes' ? last.routes[0]?.entities[0]?.backends.map((b) => b.id).join(',') : undefined, 'r1,r2,r3', `worker ${w}`);
  }
  assert.equal(sent.get(1)?.length, 2, 'two changes in one turn: one message');
});

test('a replica that leaves stays held until every worker released it, so the controller\'s drain waits for the workers', async () => {
  const { table, traffic, sent, mirror, route } = setup();
  const r1 = backend('r1');
  const r2 = backend('r2');
  traffic.addBackend(r1);
  traffic.addBackend(r2);
  table.set(route(traffic));
  mirror.addWorker(1);
  mirror.addWorker(2);
  traffic.removeBackend(r1);
  assert.equal(r1.outstanding, 2, 'held at once, before the drain loop looks');
  await tick();
  const msg = sent.get(1)?.at(-1);
  assert.ok(msg?.type === 'routes');
  assert.deepEqual(msg.removed, [2]);
  assert.deepEqual(msg.routes[0]?.entities[0]?.backends.map((b) => b.id), ['r2']);
  mirror.released(1, [2]);
  mirror.released(1, [2]);
  assert.equal(r1.outstanding, 1, 'a second release by the same worker counts nothing');
  mirror.removeWorker(2); // crashed: holds nothing any more
  assert.equal(r1.outstanding, 0);

  // A route swap: the old entity's replicas leave with it.
  const next = new EntityTraffic({ ...traffic.opts, name: 'lin/b' });
  table.set(route(next));
  assert.equal(r2.outstanding, 1);
  mirror.released(1, [3]);
  assert.equal(r2.outstanding, 0);
  table.delete('lin');
  await tick();
  const gone = sent.get(1)?.at(-1);
  assert.deepEqual(gone?.type === 'routes' ? gone.routes : undefined, []);
});

test('rate limits are decided by the primary\'s buckets: N + k admissions from any worker refuse exactly k', async () => {
  const { table, traffic, mirror, route } = setup();
  table.set(route(traffic, new RateLimiter('lin', [{ calls: 5, renewalPeriod: 'minute', key: 'endpoint' }])));
  const answers = await Promise.all(Array.from({ length: 8 }, () => mirror.admit('lin', 'alice')));
  assert.equal(answers.filter((a) => a === undefined).length, 5);
  const refused = answers.filter((a) => a !== undefined);
  assert.equal(refused.length, 3);
  assert.equal(refused[0]?.code, 'REQUEST_LIMIT_EXCEEDED');
  assert.equal(refused[0]?.retryAfterS, 12);
  assert.equal(await mirror.admit('gone', 'alice'), undefined, 'an endpoint without a route has no limits here');
});
