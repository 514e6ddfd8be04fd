/**
 * Several Ferry servers side by side on Kubernetes (the API is the contract double; the metadata
 * store one real PostgreSQL database; the artifact store one directory both servers see, as a
 * bucket would be): one leads the control plane, the other serves inference from the stored
 * configs and the replicas its EndpointSlices list, answers the serving-endpoints API with 503,
 * and takes over, adopting the running pods, when the leader dies. Plus the route a follower
 * builds from a stored record and discovered addresses.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as k8s from '@kubernetes/client-node';
import { linearFixture } from '../src/fixtures/index.js';
import { FERRY_BIN, Processes, registerVersion, request, tempDir, waitFor, waitSettled } from './support/index.js';
import { KubeApiDouble, type KubeObject } from './support/kube-api-double.js';
import { postgresUnavailable, startPostgres, type TestPostgres } from './support/postgres.js';

const NS = 'ferry-ha';
const IMAGE = 'ferry:test';
const LEASE_DURATION_MS = 3000;
const LEASE = 'ferry-server-leader';

interface TestCluster {
  double: KubeApiDouble;
  core: k8s.CoreV1Api;
  procs: Processes;
  /** Starts `ferry server` as pod `pod` (the pod object exists in the double). */
  start: (pod: string) => Promise<{ child: ChildProcess; url: string }>;
  /** The Lease's holder. */
  holder: () => string | undefined;
  /** The `ferry.dev/role` label of a server pod. */
  roleOf: (pod: string) => string | undefined;
  close: () => Promise<void>;
}

/**
 * The contract double with the server pods `pods` (so the leader can label its own; their image
 * does not run in the double), servers sharing the database `databaseUrl` and one artifact directory.
 */
async function startCluster(root: string, databaseUrl: string, pods: string[], serverConfig: Record<string, unknown> = {}): Promise<TestCluster> {
  const double = await KubeApiDouble.start({ images: { [IMAGE]: [process.execPath, FERRY_BIN] } });
  const procs = new Processes();
  try {
    await fsp.mkdir(root, { recursive: true });
    const kubeconfig = path.join(root, 'kubeconfig.json');
    await fsp.writeFile(kubeconfig, double.kubeconfig(NS));
    const kc = new k8s.KubeConfig();
    kc.loadFromString(double.kubeconfig(NS));
    const core = kc.makeApiClient(k8s.CoreV1Api);
    for (const name of pods) {
      await core.createNamespacedPod({ namespace: NS, body: { metadata: { name, labels: { 'app.kubernetes.io/name': 'ferry', 'app.kubernetes.io/component': 'server' } }, spec: { containers: [{ name: 'server', image: 'ferry-server:elsewhere' }] } } });
    }
    const config = path.join(root, 'server.json');
    await fsp.writeFile(config, JSON.stringify({
      ...serverConfig,
      databaseUrl,
      runtime: { kind: 'kubernetes', namespace: NS, image: IMAGE, adoptionGrace: '1m', leaseDuration: `${LEASE_DURATION_MS}ms`, renewInterval: '500ms' },
    }));
    const shared = path.join(root, 'artifacts');
    await fsp.mkdir(shared);
    return {
      double, core, procs,
      start: async (pod) => {
        const dataDir = path.join(root, pod);
        await fsp.mkdir(dataDir);
        await fsp.symlink(shared, path.join(dataDir, 'artifacts'));
        return procs.startServer(dataDir, { KUBECONFIG: kubeconfig, POD_NAME: pod }, ['--config', config]);
      },
      holder: () => double.list('leases', NS).find((l) => l.metadata.name === LEASE)?.spec?.holderIdentity as string | undefined,
      roleOf: (pod) => double.list('pods', NS).find((p) => p.metadata.name === pod)?.metadata.labels?.['ferry.dev/role'],
      close: async () => {
        await procs.killAll();
        await double.close();
      },
    };
  } catch (err) {
    await procs.killAll();
    await double.close();
    throw err;
  }
}

describe('several servers on Kubernetes', { skip: postgresUnavailable() ?? false }, () => {
  let root: string;
  let pg: TestPostgres;
  before(async () => {
    root = await tempDir('ferry-k8s-ha-');
    pg = await startPostgres();
  });
  after(async () => {
    await pg.stop();
    await fsp.rm(root, { recursive: true, force: true });
  });

  test('one leads; the follower serves the endpoint from discovered pods, refuses control-plane calls, and takes over when the leader dies', { timeout: 90_000 }, async () => {
    const cluster = await startCluster(path.join(root, 'failover'), await pg.createDatabase(), ['ferry-a', 'ferry-b']);
    const { double, start, holder, roleOf } = cluster;
    try {
      const a = await start('ferry-a');
      const b = await start('ferry-b');
      assert.equal(holder(), 'ferry-a', 'the first server took the free Lease');
      assert.equal(roleOf('ferry-a'), 'leader');
      assert.equal(roleOf('ferry-b'), undefined);

      await fsp.writeFile(path.join(root, 'linear.onnx'), linearFixture.build());
      await registerVersion(a.url, 'linear', path.join(root, 'linear.onnx'));
      const created = await request({ url: a.url, method: 'POST', path: '/api/2.0/serving-endpoints', json: { name: 'lin', config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] } } });
      assert.equal(created.status, 200, created.text);
      assert.equal((await waitSettled(a.url, 'lin')).state.ready, 'READY');
      const replicaPods = (): KubeObject[] => double.list('pods', NS).filter((p) => p.metadata.labels?.['ferry.dev/endpoint'] === 'lin');
      const [pod] = replicaPods();
      assert.ok(pod, 'a replica pod');
      const predict = (url: string): Promise<{ status: number; text: string; json: any }> =>
        request({ url, method: 'POST', path: '/serving-endpoints/lin/invocations', json: { inputs: [[1, 2, 3, 4]] } });

      // The follower routes to the pod it found in the EndpointSlices, with the stored config.
      const viaFollower = await waitFor('the follower to serve lin', async () => {
        const res = await predict(b.url);
        return res.status === 200 ? res : undefined;
      }, 15_000);
      assert.deepEqual(viaFollower.json, { predictions: [[5.625]] });

      // Control-plane calls on the follower: 503 naming the leader's Service, and nothing written.
      const write = await request({ url: b.url, method: 'POST', path: '/api/2.0/serving-endpoints', json: { name: 'other', config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] } } });
      assert.equal(write.status, 503, write.text);
      assert.equal(write.json.error_code, 'TEMPORARILY_UNAVAILABLE');
      assert.match(write.json.message, /'ferry-api' Service/);
      assert.equal(write.headers['retry-after'], '1');
      assert.equal((await request({ url: b.url, method: 'GET', path: '/api/2.0/serving-endpoints/lin' })).status, 503);
      // Its own gateway's metrics and the shared inference table are any server's to answer.
      assert.equal((await request({ url: b.url, method: 'GET', path: '/api/2.0/serving-endpoints/lin/metrics' })).status, 200);
      assert.equal((await request({ url: b.url, method: 'GET', path: '/api/2.0/serving-endpoints/lin/inference-table' })).status, 200);
      assert.equal((await request({ url: a.url, method: 'GET', path: '/api/2.0/serving-endpoints/other' })).status, 404);

      // The leader dies without releasing the Lease: the follower keeps serving, and takes over once the Lease expires.
      const killedAt = Date.now();
      a.child.kill('SIGKILL');
      assert.equal((await predict(b.url)).status, 200, 'the follower serves while there is no leader');
      await waitFor('the follower to take the Lease', () => (holder() === 'ferry-b' ? true : undefined), 15_000);
      const takeoverMs = Date.now() - killedAt;
      // It may take the Lease once it has seen it unrenewed for a lease duration, looking every 500 ms.
      assert.ok(takeoverMs >= LEASE_DURATION_MS - 1000, `took over after ${takeoverMs} ms, before the Lease expired`);
      await waitFor('the new leader to serve the endpoints API', async () => ((await request({ url: b.url, method: 'GET', path: '/api/2.0/serving-endpoints/lin' })).status === 200 ? true : undefined), 15_000);
      assert.equal((await waitSettled(b.url, 'lin')).state.ready, 'READY');
      assert.equal(roleOf('ferry-b'), 'leader');
      const viaLeader = await predict(b.url);
      assert.equal(viaLeader.status, 200, viaLeader.text);
      assert.deepEqual(replicaPods().map((p) => [p.metadata.name, p.metadata.uid]), [[pod.metadata.name, pod.metadata.uid]], 'the running pod was adopted, not replaced');

      // The new leader runs the control plane: deleting the endpoint removes its pods.
      assert.equal((await request({ url: b.url, method: 'DELETE', path: '/api/2.0/serving-endpoints/lin' })).status, 200);
      await waitFor('the endpoint\'s pods deleted', () => (replicaPods().length === 0 ? true : undefined), 30_000);
    } finally {
      await cluster.close();
    }
  });

  test('a request that reaches only the follower wakes an entity scaled to zero: the leader\'s autoscaler counts the follower\'s reported load', { timeout: 60_000 }, async () => {
    // The follower's request waits in its buffer for the woken pod (well under the 30 s here; 10 s by default).
    const cluster = await startCluster(path.join(root, 'follower-load'), await pg.createDatabase(), ['ferry-d', 'ferry-e'], { bufferTimeout: '30s' });
    try {
      const d = await cluster.start('ferry-d');
      const e = await cluster.start('ferry-e');
      assert.equal(cluster.holder(), 'ferry-d');
      await fsp.writeFile(path.join(root, 'linear-2.onnx'), linearFixture.build());
      await registerVersion(d.url, 'linear', path.join(root, 'linear-2.onnx'));
      // Scale to zero after 2 s without requests.
      const autoscaling = { stable_window_ms: 2000, panic_window_ms: 1000, scale_down_delay_ms: 0, scale_to_zero_grace_ms: 0 };
      const created = await request({
        url: d.url, method: 'POST', path: '/api/2.0/serving-endpoints',
        json: { name: 'idle', config: { served_entities: [{ name: 'a', entity_name: 'linear', entity_version: '1', scale_to_zero_enabled: true, autoscaling }] } },
      });
      assert.equal(created.status, 200, created.text);
      await waitSettled(d.url, 'idle');
      const pods = (): KubeObject[] => cluster.double.list('pods', NS).filter((p) => p.metadata.labels?.['ferry.dev/endpoint'] === 'idle');
      await waitFor('the entity scaled to zero, its pod gone', () => (pods().length === 0 ? true : undefined), 20_000);
      // Routed on the follower (not 404), with no replica there (503).
      await waitFor('the follower to route idle, with no replica', async () => ((await request({ url: e.url, method: 'GET', path: '/v2/models/idle/ready' })).status === 503 ? true : undefined), 10_000);

      const res = await request({ url: e.url, method: 'POST', path: '/serving-endpoints/idle/invocations', json: { inputs: [[1, 2, 3, 4]] } });
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(res.json.predictions, [[5.625]]);
      const view = await request({ url: d.url, method: 'GET', path: '/api/2.0/serving-endpoints/idle' });
      const decisions = (view.json.config.served_entities[0].autoscaling.last_decisions as Array<{ desired_replicas: number }>).map((x) => x.desired_replicas);
      assert.deepEqual(decisions.slice(-2), [0, 1], 'scaled to zero, then woken by the follower\'s load');
    } finally {
      await cluster.close();
    }
  });

  test('a leader whose Lease another server took steps down: it removes its label, closes and exits non-zero', { timeout: 60_000 }, async () => {
    const cluster = await startCluster(path.join(root, 'step-down'), await pg.createDatabase(), ['ferry-c']);
    try {
      const c = await cluster.start('ferry-c');
      assert.equal(cluster.holder(), 'ferry-c');
      assert.equal(cluster.roleOf('ferry-c'), 'leader');
      // Another writer takes the Lease (as after a partition): the leader's next renew is refused (409).
      const kc = new k8s.KubeConfig();
      kc.loadFromString(cluster.double.kubeconfig(NS));
      const leases = kc.makeApiClient(k8s.CoordinationV1Api);
      const lease = await leases.readNamespacedLease({ name: LEASE, namespace: NS });
      await leases.replaceNamespacedLease({ name: LEASE, namespace: NS, body: { ...lease, spec: { ...lease.spec, holderIdentity: 'intruder' } } });
      const code = await waitFor('the leader to exit', () => c.child.exitCode ?? undefined, 15_000);
      assert.equal(code, 1);
      assert.equal(cluster.roleOf('ferry-c'), undefined, 'the leader label removed');
      assert.equal(cluster.holder(), 'intruder', 'the stepping-down server did not take the Lease back');
    } finally {
      await cluster.close();
    }
  });
});
