/**
 * The other servers' gateway load in the leader's autoscaler (src/control/load.ts): which reports
 * count (fresh, not the leader's own), how they add up, and what the unchanged policy decides
 * from the merged samples. Virtual time throughout.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decide, newScalerState, record, scalingSpecFor } from '../src/autoscaler/index.js';
import { loadKey, PEER_LOAD_MAX_AGE_MS, PeerLoad, peerDemand } from '../src/control/index.js';
import type { GatewayLoadReport } from '../src/store/index.js';

const lin = (concurrency: number, queued: number): GatewayLoadReport['entities'][number] => ({ endpoint: 'lin', servedEntity: 'a', concurrency, queued });

test('peer demand: the worked example of peerDemand\'s comment', () => {
  const reports: GatewayLoadReport[] = [
    { server: 'b', reportedMs: 9200, entities: [lin(2.5, 0)] },
    { server: 'c', reportedMs: 9900, entities: [lin(0.1, 3), { endpoint: 'iris', servedEntity: 'x', concurrency: 1, queued: 0 }] },
    { server: 'd', reportedMs: 6500, entities: [lin(100, 100)] },
  ];
  assert.deepEqual([...peerDemand(reports, 'a', 10_000)], [[loadKey('lin', 'a'), 5.5], [loadKey('iris', 'x'), 1]]);
});

test('peer demand: a report counts up to PEER_LOAD_MAX_AGE_MS old, the leader\'s own never, nonsense as 0', () => {
  const at = (reportedMs: number): GatewayLoadReport[] => [{ server: 'b', reportedMs, entities: [lin(2, 0)] }];
  const key = loadKey('lin', 'a');
  assert.equal(PEER_LOAD_MAX_AGE_MS, 3000);
  assert.equal(peerDemand(at(7000), 'a', 10_000).get(key), 2, 'exactly 3 s old');
  assert.equal(peerDemand(at(6999), 'a', 10_000).get(key), undefined, 'a dead follower\'s load vanishes');
  assert.equal(peerDemand(at(10_000), 'b', 10_000).get(key), undefined, 'its own row, written while it followed');
  const bad: GatewayLoadReport[] = [{ server: 'b', reportedMs: 10_000, entities: [lin(Number.NaN, -1), lin(Number.POSITIVE_INFINITY, 0)] }];
  assert.equal(peerDemand(bad, 'a', 10_000).get(key), 0);
});

test('a follower\'s queued request wakes an entity at zero replicas; once its report is stale, nothing does', () => {
  const spec = scalingSpecFor({ workloadSize: 'Small', scaleToZeroEnabled: true });
  assert.equal(spec.minReplicas, 0);
  const state = newScalerState(spec);
  const zero = { readyReplicas: 0, startingReplicas: 0 };
  // Idle at zero for a minute: the leader's own load is 0 at every tick.
  for (let t = 1000; t <= 60_000; t += 1000) record(state, t, 0);
  assert.equal(decide(spec, state, zero, 60_000).desiredReplicas, 0);

  // A stale report (the follower died 4 s ago with a request waiting) adds nothing.
  const stale: GatewayLoadReport[] = [{ server: 'b', reportedMs: 57_000, entities: [lin(0, 1)] }];
  record(state, 61_000, 0 + (peerDemand(stale, 'a', 61_000).get(loadKey('lin', 'a')) ?? 0));
  assert.equal(decide(spec, state, zero, 61_000).desiredReplicas, 0);

  // A fresh report of one request waiting on the follower, whose time average is still ~0: a poke.
  const fresh: GatewayLoadReport[] = [{ server: 'b', reportedMs: 61_400, entities: [lin(0.001, 1)] }];
  record(state, 61_500, 0 + (peerDemand(fresh, 'a', 61_500).get(loadKey('lin', 'a')) ?? 0));
  const woken = decide(spec, state, zero, 61_500);
  assert.equal(woken.desiredReplicas, 1, woken.reason);
});

test('the followers\' load scales the entity up as if it had reached the leader', () => {
  const spec = scalingSpecFor({ workloadSize: 'Large', scaleToZeroEnabled: true }); // target 4, 0 to 16 replicas
  const one = { readyReplicas: 1, startingReplicas: 0 };
  const run = (followers: number): number => {
    const state = newScalerState(spec);
    let desired = 0;
    // The leader's gateway carries 2 requests at a time, each of two followers `followers`.
    for (let t = 1000; t <= 40_000; t += 1000) {
      const reports: GatewayLoadReport[] = ['b', 'c'].map((server) => ({ server, reportedMs: t - 400, entities: [lin(followers, 0)] }));
      record(state, t, 2 + (peerDemand(reports, 'a', t).get(loadKey('lin', 'a')) ?? 0));
      desired = decide(spec, state, one, t).desiredReplicas;
    }
    return desired;
  };
  assert.equal(run(0), 1, 'the leader\'s own 2 fit one replica');
  assert.equal(run(7), 4, '2 + 7 + 7 = 16 in flight → 4 replicas of target 4');
});

test('PeerLoad reads the reports at each refresh, judges them by the clock of demand(), and deletes those of servers gone for 10 minutes', async () => {
  const rows: GatewayLoadReport[] = [{ server: 'b', reportedMs: 1000, entities: [lin(3, 0)] }];
  const deleted: number[] = [];
  const peers = new PeerLoad({
    store: {
      listGatewayLoad: async () => rows,
      deleteGatewayLoad: async (beforeMs) => {
        deleted.push(beforeMs);
        return 0;
      },
    },
    self: 'a', log: () => undefined,
  });
  assert.equal(peers.demand(1000).size, 0, 'nothing before the first read');
  await peers.refresh(1000);
  assert.equal(peers.demand(1500).get(loadKey('lin', 'a')), 3);
  assert.equal(peers.demand(4001).size, 0, 'stale by the time of the tick');
  await peers.refresh(30_000);
  await peers.refresh(61_000);
  assert.deepEqual(deleted, [1000 - 600_000, 61_000 - 600_000], 'at most once a minute');
});

test('PeerLoad: a failed read is logged and leaves the last reports, which then age out', async () => {
  let fail = false;
  const logged: string[] = [];
  const peers = new PeerLoad({
    store: {
      listGatewayLoad: async () => {
        if (fail) throw new Error('connection refused');
        return [{ server: 'b', reportedMs: 1000, entities: [lin(3, 0)] }];
      },
      deleteGatewayLoad: async () => 0,
    },
    self: 'a', log: (_level, msg) => logged.push(msg),
  });
  await peers.refresh(1000);
  fail = true;
  await peers.refresh(2000);
  assert.equal(logged.length, 1);
  assert.equal(peers.demand(2000).get(loadKey('lin', 'a')), 3);
  assert.equal(peers.demand(5000).size, 0);
});
