/**
 * Leader election decisions (src/runtime/kubernetes/leader.ts), walked in virtual time: the pure
 * decision function alone, then two replicas sharing one simulated Lease with the API server's
 * rules (a write must carry the current resourceVersion); then the real LeaderElector, several at
 * once, against the Kubernetes API contract double (test/support/kube-api-double.ts).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as k8s from '@kubernetes/client-node';
import { LeaderElector, decideLeadership, observeLease, type LeaseObservation, type LeadershipDecision } from '../src/runtime/kubernetes/leader.js';
import { KubeApiDouble } from './support/kube-api-double.js';
import { waitFor } from './support/index.js';
import { startTcpRelay } from './support/tcp-relay.js';

const LEASE_MS = 15_000;
const DEADLINE_MS = 10_000;

test("the worked example of decideLeadership's TSDoc", () => {
  let seen = observeLease(undefined, { holder: 'A', resourceVersion: '7' }, 1000);
  assert.deepEqual(decideLeadership({ lease: seen, identity: 'B', renewedAtMs: undefined, nowMs: 1000, leaseDurationMs: LEASE_MS, renewDeadlineMs: DEADLINE_MS }),
    { action: 'follow', holder: 'A', expiresAtMs: 16_000 });
  seen = observeLease(seen, { holder: 'A', resourceVersion: '7' }, 15_999);
  assert.equal(seen.observedAtMs, 1000, 'an unchanged version keeps its first sighting');
  assert.equal(decideLeadership({ lease: seen, identity: 'B', renewedAtMs: undefined, nowMs: 15_999, leaseDurationMs: LEASE_MS, renewDeadlineMs: DEADLINE_MS }).action, 'follow');
  assert.equal(decideLeadership({ lease: seen, identity: 'B', renewedAtMs: undefined, nowMs: 16_000, leaseDurationMs: LEASE_MS, renewDeadlineMs: DEADLINE_MS }).action, 'acquire');
  // A renewed at t=0 and failed since.
  assert.equal(decideLeadership({ lease: seen, identity: 'A', renewedAtMs: 0, nowMs: 9_999, leaseDurationMs: LEASE_MS, renewDeadlineMs: DEADLINE_MS }).action, 'renew');
  assert.equal(decideLeadership({ lease: seen, identity: 'A', renewedAtMs: 0, nowMs: 10_000, leaseDurationMs: LEASE_MS, renewDeadlineMs: DEADLINE_MS }).action, 'step-down');
});

test('a renewed Lease (new resourceVersion) starts a new lease duration for followers', () => {
  const first = observeLease(undefined, { holder: 'A', resourceVersion: '7' }, 1000);
  const renewed = observeLease(first, { holder: 'A', resourceVersion: '8' }, 14_000);
  assert.equal(renewed.observedAtMs, 14_000);
  assert.deepEqual(decideLeadership({ lease: renewed, identity: 'B', renewedAtMs: undefined, nowMs: 20_000, leaseDurationMs: LEASE_MS, renewDeadlineMs: DEADLINE_MS }),
    { action: 'follow', holder: 'A', expiresAtMs: 29_000 });
});

test('no Lease: create; a released Lease: acquire at once; my own name after a restart: acquire', () => {
  const decide = (lease: LeaseObservation | undefined): LeadershipDecision['action'] =>
    decideLeadership({ lease, identity: 'A', renewedAtMs: undefined, nowMs: 5000, leaseDurationMs: LEASE_MS, renewDeadlineMs: DEADLINE_MS }).action;
  assert.equal(decide(undefined), 'create');
  assert.equal(decide({ holder: undefined, resourceVersion: '3', observedAtMs: 4999 }), 'acquire');
  assert.equal(decide({ holder: '', resourceVersion: '3', observedAtMs: 4999 }), 'acquire');
  assert.equal(decide({ holder: 'A', resourceVersion: '3', observedAtMs: 4999 }), 'acquire');
  assert.equal(decide({ holder: 'B', resourceVersion: '3', observedAtMs: 4999 }), 'follow');
});

/**
 * Two replicas, each looking every `intervalMs` (B offset by 2.5 s), around one Lease with the API
 * server's optimistic concurrency. `aReachesServer(t)` false models A cut off from the API server
 * (its writes fail, it cannot read) while it keeps running.
 */
function simulate(opts: { untilMs: number; intervalMs: number; aReachesServer: (nowMs: number) => boolean; aStopsAtMs?: number }): {
  leaders: Array<{ t: number; leaders: string[] }>;
} {
  let stored: { holder: string | undefined; resourceVersion: string } | undefined;
  let version = 0;
  const replicas = [
    { id: 'A', offsetMs: 0, seen: undefined as LeaseObservation | undefined, renewedAtMs: undefined as number | undefined, readVersion: undefined as string | undefined },
    { id: 'B', offsetMs: 2500, seen: undefined as LeaseObservation | undefined, renewedAtMs: undefined as number | undefined, readVersion: undefined as string | undefined },
  ];
  const leaders: Array<{ t: number; leaders: string[] }> = [];
  for (let t = 0; t <= opts.untilMs; t += 500) {
    for (const r of replicas) {
      if ((t - r.offsetMs) % opts.intervalMs !== 0 || t < r.offsetMs) continue;
      if (r.id === 'A' && opts.aStopsAtMs !== undefined && t >= opts.aStopsAtMs) {
        r.renewedAtMs = undefined; // a stopped process leads nothing
        continue;
      }
      const reaches = r.id === 'B' || opts.aReachesServer(t);
      if (r.renewedAtMs === undefined && reaches) {
        r.seen = stored === undefined ? undefined : observeLease(r.seen, stored, t);
        r.readVersion = stored?.resourceVersion;
      }
      const d = decideLeadership({ lease: r.seen, identity: r.id, renewedAtMs: r.renewedAtMs, nowMs: t, leaseDurationMs: LEASE_MS, renewDeadlineMs: DEADLINE_MS });
      if (d.action === 'follow') continue;
      if (d.action === 'step-down') {
        r.renewedAtMs = undefined;
        continue;
      }
      if (!reaches) continue;
      // The API server's rule: a create fails when the Lease exists, an update when its version moved.
      const conflict = d.action === 'create' ? stored !== undefined : stored?.resourceVersion !== r.readVersion;
      if (conflict) {
        r.renewedAtMs = undefined;
        continue;
      }
      stored = { holder: r.id, resourceVersion: String(++version) };
      r.readVersion = stored.resourceVersion;
      r.seen = observeLease(undefined, stored, t);
      r.renewedAtMs = t;
    }
    leaders.push({ t, leaders: replicas.filter((r) => r.renewedAtMs !== undefined).map((r) => r.id) });
  }
  return { leaders };
}

test('virtual time: one leader at a time; the follower takes over a lease duration after the leader stops renewing', () => {
  const { leaders } = simulate({ untilMs: 60_000, intervalMs: 5000, aReachesServer: () => true, aStopsAtMs: 20_000 });
  assert.ok(leaders.every((s) => s.leaders.length <= 1), 'never two leaders');
  assert.deepEqual(leaders.find((s) => s.t === 0)?.leaders, ['A'], 'A creates the Lease first');
  // A's last renew: t=15000. B sees that version at t=17500 and takes over at its first look from
  // 17500 + 15000 = 32500.
  const bTakesOver = leaders.find((s) => s.leaders[0] === 'B')?.t;
  assert.equal(bTakesOver, 32_500);
});

test('virtual time: a leader cut off from the API server steps down before the follower takes over', () => {
  const cutAtMs = 20_000;
  const { leaders } = simulate({ untilMs: 60_000, intervalMs: 5000, aReachesServer: (t) => t < cutAtMs });
  assert.ok(leaders.every((s) => s.leaders.length <= 1), `never two leaders: ${JSON.stringify(leaders.filter((s) => s.leaders.length > 1))}`);
  const aStepsDown = leaders.find((s) => s.t > cutAtMs && !s.leaders.includes('A'))?.t;
  const bLeads = leaders.find((s) => s.leaders.includes('B'))?.t;
  assert.equal(aStepsDown, 25_000, 'A: last renew at 15000, steps down at 15000 + 10000');
  assert.equal(bLeads, 32_500);
  assert.ok(leaders.filter((s) => s.t >= bLeads).every((s) => s.leaders.join() === 'B'), 'B keeps it');
});

describe('LeaderElector against the Kubernetes API contract double', () => {
  const NS = 'ferry';
  let double: KubeApiDouble;
  before(async () => {
    double = await KubeApiDouble.start();
  });
  after(async () => {
    await double.close();
  });

  function kubeConfig(url = double.url): k8s.KubeConfig {
    const kc = new k8s.KubeConfig();
    kc.loadFromString(double.kubeconfig(NS).replace(double.url, url));
    return kc;
  }

  /** Electors whose every change of leadership is checked: never two leaders at once. */
  function electors(leaseName: string, timing: { leaseDurationMs: number; renewDeadlineMs: number; renewIntervalMs: number }) {
    const all: LeaderElector[] = [];
    const violations: string[] = [];
    const make = (identity: string, url?: string): LeaderElector => {
      const e = new LeaderElector({ kubeConfig: kubeConfig(url), namespace: NS, leaseName, identity, ...timing });
      e.onChange((leading) => {
        if (leading && all.some((o) => o !== e && o.isLeader())) violations.push(`${identity} became leader while another led`);
      });
      all.push(e);
      return e;
    };
    return { make, violations, closeAll: () => Promise.all(all.map((e) => e.close())) };
  }

  const lease = async (name: string): Promise<k8s.V1Lease> => kubeConfig().makeApiClient(k8s.CoordinationV1Api).readNamespacedLease({ name, namespace: NS });

  test('one leader at a time; a leader cut off from the API server steps down and the follower takes over', { timeout: 30_000 }, async () => {
    const relay = await startTcpRelay(double.url);
    const { make, violations, closeAll } = electors('cut-off', { leaseDurationMs: 1500, renewDeadlineMs: 1000, renewIntervalMs: 200 });
    try {
      const a = make('replica-a', relay.url).start();
      await waitFor('A to lead', () => (a.isLeader() ? true : undefined));
      const b = make('replica-b').start();
      // A renews (a new resourceVersion) while B runs, and B keeps following.
      const renewed = (await lease('cut-off')).metadata?.resourceVersion;
      await waitFor('A to renew', async () => ((await lease('cut-off')).metadata?.resourceVersion !== renewed ? true : undefined));
      assert.equal(b.isLeader(), false);
      assert.equal((await lease('cut-off')).spec?.holderIdentity, 'replica-a');
      relay.block();
      await waitFor('A to step down', () => (a.isLeader() ? undefined : true));
      await waitFor('B to lead', () => (b.isLeader() ? true : undefined));
      const taken = await lease('cut-off');
      assert.equal(taken.spec?.holderIdentity, 'replica-b');
      assert.equal(taken.spec?.leaseTransitions, 1);
      assert.match(String(taken.spec?.renewTime), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, 'MicroTime: microsecond precision, as the API server requires');
      assert.deepEqual(violations, []);
    } finally {
      await closeAll();
      await relay.close();
    }
  });

  test('close() releases the Lease: the follower takes over at its next look, not after the lease duration', { timeout: 30_000 }, async () => {
    // A lease duration longer than waitFor's 15 s: B can only take over because A released it.
    const { make, violations, closeAll } = electors('released', { leaseDurationMs: 60_000, renewDeadlineMs: 40_000, renewIntervalMs: 100 });
    try {
      const a = make('replica-a').start();
      await waitFor('A to lead', () => (a.isLeader() ? true : undefined));
      const b = make('replica-b').start();
      const changes: boolean[] = [];
      b.onChange((leading) => changes.push(leading));
      await a.close();
      assert.equal(a.isLeader(), false);
      await waitFor('B to lead', () => (b.isLeader() ? true : undefined));
      assert.deepEqual(changes, [true]);
      assert.equal((await lease('released')).spec?.holderIdentity, 'replica-b');
      assert.deepEqual(violations, []);
    } finally {
      await closeAll();
    }
  });

  test('two electors racing for a new Lease: the API server lets one create it, the other follows', { timeout: 30_000 }, async () => {
    const { make, violations, closeAll } = electors('race', { leaseDurationMs: 60_000, renewDeadlineMs: 40_000, renewIntervalMs: 100 });
    try {
      const es = ['r1', 'r2', 'r3'].map((id) => make(id).start());
      await waitFor('a leader', () => (es.some((e) => e.isLeader()) ? true : undefined));
      // Several more looks each: still exactly one.
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(es.filter((e) => e.isLeader()).length, 1);
      const holder = (await lease('race')).spec?.holderIdentity;
      assert.equal(holder, ['r1', 'r2', 'r3'][es.findIndex((e) => e.isLeader())]);
      assert.deepEqual(violations, []);
    } finally {
      await closeAll();
    }
  });
});
