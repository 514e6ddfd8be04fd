/**
 * A follower's routes (src/control/follower.ts): built from a stored record's serving config with
 * the leader's `buildEndpointRoute`, backends from the discovered replica addresses, kept current
 * as addresses and records change. No sockets: the replicas' channels are never used here.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compileServerConfig } from '../src/config/index.js';
import { RouteFollower, type EndpointConfig, type ServedEntityConfig } from '../src/control/index.js';
import { RoutingTable } from '../src/gateway/index.js';
import type { DiscoveredReplica } from '../src/runtime/index.js';
import type { EndpointRecord, GatewayLoadReport, MetadataStore } from '../src/store/index.js';
import { waitFor } from './support/index.js';

/** A served entity as compiled; the follower reads only its names and version (and family). */
function entity(name: string, version: string): ServedEntityConfig {
  return { name, entityName: 'iris', entityVersion: version, family: undefined } as ServedEntityConfig;
}

function config(routes: Array<[string, number]>, more: Partial<EndpointConfig> = {}): EndpointConfig {
  return {
    configVersion: 1, servedEntities: [entity('a', '1'), entity('b', '2')], shadows: [], requestTimeoutMs: undefined, rollout: undefined,
    routes: routes.map(([servedEntityName, trafficPercentage]) => ({ servedEntityName, trafficPercentage })), ...more,
  };
}

function record(name: string, c: EndpointConfig | undefined, aiGateway: unknown = undefined): EndpointRecord<EndpointConfig> {
  return {
    name, id: `id-${name}`, creator: 'admin', createdMs: 0, updatedMs: 0, description: '', tags: {},
    config: c, pendingConfig: c === undefined ? config([['a', 100]]) : undefined, configUpdate: c === undefined ? 'IN_PROGRESS' : 'NOT_UPDATING', updateMessage: '', aiGateway,
  };
}

function setup(
  records: Array<EndpointRecord<EndpointConfig>>, addresses: Map<string, DiscoveredReplica[]>, reportIntervalMs = 10,
): { follower: RouteFollower; table: RoutingTable; reports: GatewayLoadReport[] } {
  const table = new RoutingTable();
  const reports: GatewayLoadReport[] = [];
  const follower = new RouteFollower({
    store: {
      listEndpoints: async () => records,
      putGatewayLoad: async (r: GatewayLoadReport) => {
        reports.push(r);
      },
    } as unknown as MetadataStore,
    authz: { require: async () => undefined },
    table,
    replicas: { addresses: (endpoint, servedEntity) => addresses.get(`${endpoint}/${servedEntity}`) ?? [] },
    defaultRequestTimeoutMs: 5000, maxBodyBytes: 1024, drainTimeoutMs: 100, refreshIntervalMs: 10,
    traffic: { maxConcurrencyPerReplica: 4, maxQueued: 10, queueTimeoutMs: 1000 },
    server: 'ferry-b', reportIntervalMs, now: () => 1234,
    log: () => undefined,
  });
  return { follower, table, reports };
}

test('a follower builds the route from the serving config and the discovered replicas', async () => {
  const addresses = new Map<string, DiscoveredReplica[]>([
    ['ep/a', [{ host: '10.0.0.1', port: 8080, pod: 'pod-1' }]],
    ['ep/b', [{ host: '10.0.0.2', port: 8080, pod: undefined }]],
  ]);
  const { follower, table } = setup([
    record('ep', config([['a', 90], ['b', 10]], { shadows: [{ servedEntityName: 'b', mirrorPercentage: 5 }] }), { fallbackEnabled: true, rateLimits: [], maxBodyBytes: 1000 }),
    record('rolling-out', undefined),
  ], addresses);
  await follower.start();
  try {
    const route = table.get('ep');
    assert.ok(route);
    assert.deepEqual(route.entities.map((e) => [e.name, e.modelVersion, e.trafficPercentage, e.traffic.backends.map((b) => b.id)]), [['a', '1', 90, ['pod-1']], ['b', '2', 10, ['10.0.0.2:8080']]]);
    assert.equal(route.timeoutMs, 5000, 'the server default without request_timeout_ms');
    assert.deepEqual(route.shadows.map((s) => [s.entity, s.mirrorPercentage]), [[route.entities[1], 5]]);
    assert.equal(route.fallback, true);
    assert.equal(route.maxBodyBytes, 1000);
    assert.equal(route.rateLimiter, undefined);
    assert.equal(table.get('rolling-out'), undefined, 'an endpoint with no serving config has no route');
    assert.deepEqual(follower.inferenceTableOf('ep'), { endpointId: '', enabled: false, sampleFraction: 1 });

    // A pod replaced: the new one is added, the gone one taken out of rotation.
    addresses.set('ep/a', [{ host: '10.0.0.3', port: 8080, pod: 'pod-3' }]);
    follower.syncReplicas();
    assert.deepEqual(route.entities[0]?.traffic.backends.map((b) => b.id), ['pod-3']);
  } finally {
    follower.close();
  }
});

test('a follower follows the stored records: a new split keeps unchanged entities\' replicas; a deleted endpoint loses its route', async () => {
  const records = [record('ep', config([['a', 100], ['b', 0]]))];
  const addresses = new Map<string, DiscoveredReplica[]>([['ep/a', [{ host: '10.0.0.1', port: 8080, pod: 'pod-1' }]]]);
  const { follower, table } = setup(records, addresses);
  await follower.start();
  try {
    const first = table.get('ep');
    assert.ok(first);
    records[0] = record('ep', config([['a', 50], ['b', 50]], { requestTimeoutMs: 700 }));
    const second = await waitFor('the new split', () => (table.get('ep') !== first ? table.get('ep') : undefined));
    assert.deepEqual(second.entities.map((e) => e.trafficPercentage), [50, 50]);
    assert.equal(second.timeoutMs, 700);
    assert.equal(second.entities[0]?.traffic, first.entities[0]?.traffic, 'the same entity keeps its traffic state and backends');
    records.splice(0);
    await waitFor('the route removed', () => (table.get('ep') === undefined ? true : undefined));
  } finally {
    follower.close();
  }
});

test('a follower hands its routes over: each serves until the leader publishes its own, then its replicas leave rotation', async () => {
  const records = [record('ep', config([['a', 100]]))];
  const { follower, table } = setup(records, new Map([['ep/a', [{ host: '10.0.0.1', port: 8080, pod: 'pod-1' }]]]));
  await follower.start();
  try {
    follower.handOver();
    const route = table.get('ep');
    assert.ok(route);
    records.splice(0); // no longer followed: a deleted record changes nothing now
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(table.get('ep'), route, 'still routed after the hand-over');
    assert.deepEqual(route.entities[0]?.traffic.backends.map((b) => b.id), ['pod-1']);
    table.set({ ...route, entities: [] }); // the leader's controller publishes its route
    await waitFor('the follower\'s replicas out of rotation', () => (route.entities[0]?.traffic.backends.length === 0 ? true : undefined));
  } finally {
    follower.close();
  }
});

test('a follower reports its load: a request waiting for an entity with no replica here at once; an idle follower once', async () => {
  const records = [record('ep', config([['a', 100], ['b', 0]]))];
  const addresses = new Map<string, DiscoveredReplica[]>([['ep/b', [{ host: '10.0.0.2', port: 8080, pod: 'pod-2' }]]]);
  const { follower, table, reports } = setup(records, addresses, 60_000);
  await follower.start();
  try {
    const traffic = table.get('ep')?.entities[0]?.traffic;
    assert.ok(traffic);
    traffic.begin();
    await new Promise((r) => setTimeout(r, 5)); // held 5 ms: a time average > 0
    const waiting = traffic.acquire();
    waiting.catch(() => undefined); // rejected once the queue timeout is up
    const [report] = await waitFor('the immediate report', () => (reports.length > 0 ? reports : undefined));
    assert.equal(report?.server, 'ferry-b');
    assert.equal(report?.reportedMs, 1234);
    assert.deepEqual(report?.entities.map((e) => [e.endpoint, e.servedEntity, e.queued, e.concurrency > 0]), [['ep', 'a', 1, true]], 'only the entity with load');
  } finally {
    follower.close();
  }

  // Every 10 ms, with no load: one empty report, then nothing.
  const idle = setup([record('ep', config([['a', 100]]))], new Map());
  await idle.follower.start();
  try {
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(idle.reports.map((r) => r.entities), [[]], 'an idle follower writes one empty report');
  } finally {
    idle.follower.close();
  }
});

test('config: leader election settings compile with units; a renew interval past the renew deadline names the key', () => {
  const c = compileServerConfig({ runtime: { kind: 'kubernetes', namespace: 'ml', image: 'x', leaseDuration: '30s', renewInterval: '5s' } });
  assert.ok(c.runtime.kind === 'kubernetes');
  assert.deepEqual([c.runtime.leaseName, c.runtime.leaseDurationMs, c.runtime.renewIntervalMs], ['ferry-server-leader', 30_000, 5000]);
  assert.throws(() => compileServerConfig({ runtime: { kind: 'kubernetes', namespace: 'ml', image: 'x', leaseDuration: '3s', renewInterval: '2s' } }), /'runtime\.renewInterval'.*two thirds of runtime\.leaseDuration \(3000 ms\)/);
});
