/**
 * The Kubernetes runtime: the runtime contract against the Kubernetes API contract double (real
 * `ferry replica` processes in pod mode, fetching and verifying their model from a local artifact
 * store, answering real predictions on their pod IPs), plus what only this runtime has: the
 * generated objects validated against the official Kubernetes OpenAPI schemas (kubernetes-models),
 * adoption of running pods by the next runtime, the start deadline, an altered artifact, and an
 * opt-in check against a real cluster.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { Service } from 'kubernetes-models/v1/Service';
import YAML from 'yaml';
import { openArtifactStore } from '../src/artifacts/index.js';
import { compileServerConfig } from '../src/config/index.js';
import { FerryError } from '../src/errors.js';
import { linearFixture } from '../src/fixtures/index.js';
import type { ReplicaExit, ReplicaSpec } from '../src/runtime/index.js';
import { KubernetesRuntime, type KubernetesRuntimeOptions } from '../src/runtime/kubernetes/index.js';
import { groupObjects, groupOf, type PodSettings } from '../src/runtime/kubernetes/objects.js';
import { requestReplica, runtimeContract, type RuntimeHarness } from './contract/runtime.js';
import type { FerryServer } from '../src/server/index.js';
import { FERRY_BIN, registerVersion, request, ROOT, startTestServer, tempDir, waitFor, waitSettled } from './support/index.js';
import { KubeApiDouble, type KubeObject } from './support/kube-api-double.js';

const MIB = 1024 * 1024;
const NS = 'ferry-test';
const IMAGE = 'ferry:test';
const PYTHON_IMAGE = 'ferry:test-python';
let root: string;
let storeRoot: string;
const artifacts: Record<'linear' | 'broken', { key: string; sha256: string; modelFile: string }> = {
  linear: { key: 'models/linear/1', sha256: '', modelFile: 'linear.onnx' },
  broken: { key: 'models/broken/1', sha256: '', modelFile: 'model.onnx' },
};

before(async () => {
  root = await tempDir('ferry-k8s-');
  storeRoot = path.join(root, 'artifacts');
  await fsp.mkdir(path.join(storeRoot, artifacts.linear.key), { recursive: true });
  await fsp.writeFile(path.join(storeRoot, artifacts.linear.key, 'linear.onnx'), linearFixture.build());
  await fsp.mkdir(path.join(storeRoot, artifacts.broken.key), { recursive: true });
  await fsp.writeFile(path.join(storeRoot, artifacts.broken.key, 'model.onnx'), Buffer.from('this is not an onnx model \x00\x01\x02\xff'.repeat(20), 'latin1'));
  for (const a of Object.values(artifacts)) a.sha256 = await treeSha256(a.key);
});

after(async () => {
  await fsp.rm(root, { recursive: true, force: true });
});

/** The recorded digest of the tree at `key` in the test's store, as the registry records it. */
async function treeSha256(key: string): Promise<string> {
  return (await (await openArtifactStore({ kind: 'local', root: storeRoot })).digest(key)).sha256;
}

function makeSpec(id: string, model: 'linear' | 'broken', overrides: Partial<ReplicaSpec> = {}): ReplicaSpec {
  const a = artifacts[model];
  return {
    id, endpoint: 'ep', servedEntity: 'linear', artifactDir: '', artifactKey: a.key, artifactSha256: a.sha256, modelFile: a.modelFile,
    flavor: 'onnx', workloadType: 'CPU', modelName: 'linear', modelVersion: '1',
    memoryLimitBytes: 1024 * MIB, maxBodyBytes: 16 * MIB, maxRowsPerRequest: 100_000, maxJsonDepth: 64, maxJsonElements: 4_194_304,
    batching: { enabled: true, maxBatchSize: 64, maxQueueDelayUs: 0, preferredBatchSizes: [] },
    ...overrides,
  };
}

/** A contract double whose "ferry:test" image is this checkout's `ferry`. */
function startDouble(): Promise<KubeApiDouble> {
  return KubeApiDouble.start({ images: { [IMAGE]: [process.execPath, FERRY_BIN] } });
}

function openRuntime(double: KubeApiDouble, opts: Partial<KubernetesRuntimeOptions> = {}): Promise<KubernetesRuntime> {
  return KubernetesRuntime.open({
    namespace: NS, image: IMAGE, kubeconfig: double.kubeconfig(), startTimeoutMs: 30_000, drainTimeoutMs: 2000,
    artifactStore: { kind: 'local', root: storeRoot }, ...opts,
  });
}

/** The pod serving at `host` (its pod IP). */
function podAt(double: KubeApiDouble, host: string): KubeObject {
  const pod = double.list('pods', NS).find((p) => p.status?.podIP === host);
  assert.ok(pod, `a pod at ${host}`);
  return pod;
}

runtimeContract('kubernetes (contract double)', async (): Promise<RuntimeHarness> => {
  const double = await startDouble();
  try {
    const runtime = await openRuntime(double);
    return {
      runtime, makeSpec, replicasOutliveClose: true,
      crash: async (handle) => {
        assert.equal(handle.address.kind, 'tcp');
        double.killContainer(NS, podAt(double, handle.address.kind === 'tcp' ? handle.address.host : '').metadata.name, 'SIGKILL');
      },
      cleanup: async () => {
        await runtime.close();
        await double.close();
      },
    };
  } catch (err) {
    await double.close();
    throw err;
  }
});

/** Runs `fn` with a fresh double and runtime; always closes both. */
async function withDouble(fn: (double: KubeApiDouble, rt: KubernetesRuntime, exits: ReplicaExit[]) => Promise<void>, opts: Partial<KubernetesRuntimeOptions> = {}): Promise<void> {
  const double = await startDouble();
  const exits: ReplicaExit[] = [];
  let rt: KubernetesRuntime | undefined;
  try {
    rt = await openRuntime(double, opts);
    rt.onExit((e) => exits.push(e));
    await fn(double, rt, exits);
  } finally {
    await rt?.close();
    await double.close();
  }
}

/** Objects of `plural` in the test namespace belonging to the group of `spec`. */
function groupObjectsIn(double: KubeApiDouble, plural: string, spec: ReplicaSpec): KubeObject[] {
  // By endpoint and entity (each test has its own double): the runtime's group names also hash its settings.
  return double.list(plural, NS).filter((o) => o.metadata.labels?.['ferry.dev/endpoint'] === spec.endpoint && o.metadata.labels['ferry.dev/served-entity'] === spec.servedEntity);
}

const SETTINGS: PodSettings = {
  namespace: NS, image: 'ghcr.io/example/ferry:1.0', pythonImage: 'ghcr.io/example/ferry:1.0-python', imagePullPolicy: 'IfNotPresent', replicaPort: 8080,
  serverPodLabels: { 'app.kubernetes.io/name': 'ferry', 'app.kubernetes.io/component': 'server' }, replicaUid: 10001, replicaThreads: 1,
  artifactStore: { kind: 's3', bucket: 'models', endpoint: 'http://minio:9000', forcePathStyle: true }, artifactStoreSecret: 'ferry-s3',
  startTimeoutMs: 60_000, drainTimeoutMs: 30_000, logLevel: 'info',
};

/** The objects as client-node sends them (its serializer turns e.g. `_from` into `from`). */
function wire(obj: object): any {
  return YAML.parse(k8s.dumpYaml(obj));
}

describe('KubernetesRuntime', () => {
  test('generated objects pass the official Kubernetes schemas, for CPU and GPU workload types', () => {
    for (const workloadType of ['CPU', 'GPU_SMALL'] as const) {
      const spec = makeSpec('iris-ep.champion.r1', 'linear', { endpoint: 'iris-ep', servedEntity: 'champion', workloadType, memoryLimitBytes: 2048 * MIB });
      const group = groupOf(spec);
      const o = groupObjects(spec, group, SETTINGS);
      const deployment = wire(o.deployment);
      new Deployment(deployment).validate();
      new Service(wire(o.service)).validate();
      new NetworkPolicy(wire(o.networkPolicy)).validate();
      new PodDisruptionBudget(wire(o.podDisruptionBudget)).validate();

      assert.match(group.name, /^ferry-iris-ep-champion-[0-9a-f]{10}$/);
      for (const labels of [deployment.metadata.labels, deployment.spec.template.metadata.labels]) {
        assert.equal(labels['app.kubernetes.io/managed-by'], 'ferry');
        assert.equal(labels['ferry.dev/endpoint'], 'iris-ep');
        assert.equal(labels['ferry.dev/served-entity'], 'champion');
        assert.equal(labels['ferry.dev/group'], group.name);
      }
      const pod = deployment.spec.template.spec;
      const c = pod.containers[0];
      assert.equal(deployment.spec.replicas, 0, 'the runtime scales it');
      assert.deepEqual(pod.securityContext, { runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, fsGroup: 10001, seccompProfile: { type: 'RuntimeDefault' } });
      assert.equal(c.securityContext.readOnlyRootFilesystem, true);
      assert.deepEqual(c.securityContext.capabilities, { drop: ['ALL'] });
      assert.equal(c.terminationMessagePolicy, 'FallbackToLogsOnError');
      assert.equal(c.readinessProbe.httpGet.path, '/v2/health/ready');
      assert.equal(c.livenessProbe.httpGet.path, '/v2/health/live');
      assert.deepEqual(c.volumeMounts.map((m: any) => m.mountPath).sort(), ['/tmp', '/var/lib/ferry/model']);
      assert.ok(pod.volumes.every((v: any) => v.emptyDir !== undefined));
      assert.deepEqual(c.args.slice(0, 3), ['replica', '--listen', ':8080']);
      assert.ok(c.args.includes('--artifact-path') && c.args.includes(artifacts.linear.sha256));
      assert.equal(c.env.find((e: any) => e.name === 'POD_IP').valueFrom.fieldRef.fieldPath, 'status.podIP');
      assert.deepEqual(JSON.parse(c.env.find((e: any) => e.name === 'FERRY_ARTIFACT_STORE').value), SETTINGS.artifactStore);
      assert.deepEqual(c.envFrom, [{ secretRef: { name: 'ferry-s3' } }]);
      const gpu = workloadType !== 'CPU';
      assert.deepEqual(c.resources, {
        requests: { cpu: '1', memory: '2048Mi', ...(gpu ? { 'nvidia.com/gpu': '1' } : {}) },
        limits: { cpu: '2', memory: '2048Mi', ...(gpu ? { 'nvidia.com/gpu': '1' } : {}) },
      });
      assert.deepEqual(pod.tolerations, gpu ? [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }] : undefined);
      const np = wire(o.networkPolicy);
      assert.deepEqual(np.spec.ingress, [{ from: [{ podSelector: { matchLabels: SETTINGS.serverPodLabels } }], ports: [{ protocol: 'TCP', port: 8080 }] }]);
      assert.deepEqual(np.spec.podSelector.matchLabels, group.selector);
      assert.deepEqual(wire(o.service).spec.selector, group.selector);
    }
  });

  test('names and labels stay valid for long and odd names; another identity is another group', () => {
    const spec = makeSpec(`x.${'y'.repeat(150)}.r1`, 'linear', { endpoint: `Big_Endpoint.${'e'.repeat(120)}`, servedEntity: `_${'s'.repeat(100)}` });
    const group = groupOf(spec);
    assert.ok(group.name.length <= 47 && /^[a-z]([-a-z0-9]*[a-z0-9])?$/.test(group.name), group.name);
    const o = groupObjects(spec, group, SETTINGS);
    new Deployment(wire(o.deployment)).validate();
    new Service(wire(o.service)).validate();
    for (const v of Object.values(group.labels)) assert.match(v, /^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$/);
    assert.notEqual(groupOf(makeSpec('a', 'linear', { modelVersion: '2' })).name, groupOf(makeSpec('a', 'linear')).name);
    assert.equal(groupOf(makeSpec('a', 'linear')).name, groupOf(makeSpec('b', 'linear')).name, 'the replica id is not part of the identity');
  });

  test('a start goes through the scale subresource; a stop removes exactly its pod; the last stop deletes the group', { timeout: 60_000 }, async () => {
    await withDouble(async (double, rt) => {
      const spec = makeSpec('ep.linear.1', 'linear');
      const a = await rt.startReplica(spec);
      const b = await rt.startReplica(makeSpec('ep.linear.2', 'linear'));
      const [deployment] = groupObjectsIn(double, 'deployments', spec);
      assert.equal(deployment?.spec.replicas, 2);
      for (const kind of ['services', 'networkpolicies', 'poddisruptionbudgets']) assert.equal(groupObjectsIn(double, kind, spec).length, 1, kind);
      const podA = podAt(double, a.address.kind === 'tcp' ? a.address.host : '');
      assert.equal(podA.metadata.annotations?.['ferry.dev/replica-id'], 'ep.linear.1');
      await rt.stopReplica(a.id);
      const left = groupObjectsIn(double, 'pods', spec);
      assert.deepEqual(left.map((p) => p.status.podIP), [b.address.kind === 'tcp' ? b.address.host : ''], 'the stopped replica\'s pod went, not the other');
      assert.equal(groupObjectsIn(double, 'deployments', spec)[0]?.spec.replicas, 1);
      await rt.stopReplica(b.id);
      await waitFor('the group deleted', () => (['deployments', 'services', 'networkpolicies', 'poddisruptionbudgets', 'pods']
        .every((kind) => groupObjectsIn(double, kind, spec).length === 0) ? true : undefined));
    });
  });

  test('a stop while another start of the group waits for its (not ready) pod removes the stopped pod, and the start still gets one', { timeout: 60_000 }, async () => {
    // Containers of the "held" image wait while the hold file exists before they run `ferry`, so
    // a pod can be kept not ready for as long as the test needs.
    const hold = path.join(root, 'hold');
    const waitWhileHeld = `const fs = require('node:fs'); const [node, file, bin, ...args] = process.argv;
      const go = () => { process.argv = [node, bin, ...args]; import(require('node:url').pathToFileURL(bin).href); };
      const poll = () => (fs.existsSync(file) ? setTimeout(poll, 20) : go()); poll();`;
    const double = await KubeApiDouble.start({ images: { 'ferry:held': [process.execPath, '-e', waitWhileHeld, hold, FERRY_BIN] } });
    const exits: ReplicaExit[] = [];
    // A long drain: were the stopped pod left to the controller, the stop's own fallback (a forced
    // delete after the grace period) would come only after this test's timeout.
    const rt = await openRuntime(double, { image: 'ferry:held', drainTimeoutMs: 120_000 });
    rt.onExit((e) => exits.push(e));
    try {
      const spec = makeSpec('ep.linear.s1', 'linear');
      const a = await rt.startReplica(spec);
      const podA = podAt(double, a.address.kind === 'tcp' ? a.address.host : '').metadata.name;
      await fsp.writeFile(hold, '');
      const starting = rt.startReplica(makeSpec('ep.linear.s2', 'linear'));
      const podB = await waitFor('a second pod', () => groupObjectsIn(double, 'pods', spec).find((p) => p.metadata.name !== podA)?.metadata.name);
      // Were A left to the ReplicaSet controller's scale-down, it would remove B (not ready ranks
      // before the lowest deletion cost). The runtime deletes A before scaling down, so the
      // controller has nothing to choose: B stays and serves the waiting start.
      await rt.stopReplica(a.id);
      await fsp.rm(hold);
      const b = await starting;
      const podOfB = podAt(double, b.address.kind === 'tcp' ? b.address.host : '').metadata.name;
      assert.equal(podOfB, podB, 'the waiting start keeps its pod');
      assert.equal((await requestReplica(b.address, '/invocations', { inputs: [[1, 2, 3, 4]] })).status, 200);
      assert.ok(!double.list('pods', NS).some((p) => p.metadata.name === podA), 'the stopped replica\'s pod is gone');
      await waitFor('one pod, one replica wanted', () => (groupObjectsIn(double, 'pods', spec).length === 1 && groupObjectsIn(double, 'deployments', spec)[0]?.spec.replicas === 1 ? true : undefined));
      assert.deepEqual(rt.list().map((r) => r.id), ['ep.linear.s2']);
      assert.deepEqual(exits, []);
    } finally {
      await fsp.rm(hold, { force: true });
      await rt.close();
      await double.close();
    }
  });

  test('a crashed pod is reported once and retired; its restarted container is not reused', { timeout: 60_000 }, async () => {
    await withDouble(async (double, rt, exits) => {
      const spec = makeSpec('ep.linear.c', 'linear');
      const handle = await rt.startReplica(spec);
      const pod = podAt(double, handle.address.kind === 'tcp' ? handle.address.host : '');
      double.killContainer(NS, pod.metadata.name, 'SIGKILL');
      await waitFor('exit report', () => (exits.length > 0 ? true : undefined));
      assert.equal(exits[0]?.reason, 'crashed');
      assert.equal(exits[0]?.code, 137);
      await waitFor('the crashed pod retired and the group deleted', () => (groupObjectsIn(double, 'pods', spec).length === 0 && groupObjectsIn(double, 'deployments', spec).length === 0 ? true : undefined));
      assert.equal(exits.length, 1);
      const again = await rt.startReplica(makeSpec('ep.linear.c2', 'linear'));
      assert.notEqual(podAt(double, again.address.kind === 'tcp' ? again.address.host : '').metadata.name, pod.metadata.name, 'a fresh pod');
      assert.deepEqual(rt.list().map((r) => r.id), ['ep.linear.c2']);
    });
  });

  test('a watch the API server ends is resumed: later pod failures are still seen', { timeout: 60_000 }, async () => {
    await withDouble(async (double, rt, exits) => {
      const handle = await rt.startReplica(makeSpec('ep.linear.w', 'linear'));
      double.endWatches();
      double.killContainer(NS, podAt(double, handle.address.kind === 'tcp' ? handle.address.host : '').metadata.name, 'SIGKILL');
      await waitFor('exit report after the watch was resumed', () => (exits.length > 0 ? true : undefined));
      assert.deepEqual(exits.map((e) => [e.id, e.reason]), [['ep.linear.w', 'crashed']]);
    });
  });

  test('a new runtime adopts running pods without a cold start; unclaimed groups go after the grace period', { timeout: 60_000 }, async () => {
    const double = await startDouble();
    try {
      const first = await openRuntime(double);
      const kept = await first.startReplica(makeSpec('ep.linear.old', 'linear'));
      const orphanSpec = makeSpec('ep.other.old', 'linear', { servedEntity: 'other' });
      await first.startReplica(orphanSpec);
      await first.close(); // a control-plane restart: the pods keep serving
      assert.equal((await requestReplica(kept.address, '/v2/health/ready')).status, 200);

      const second = await openRuntime(double, { adoptionGraceMs: 3000 });
      try {
        const adopted = await second.startReplica(makeSpec('ep.linear.new', 'linear'));
        assert.deepEqual(adopted.address, kept.address, 'the running pod is claimed');
        assert.equal(groupObjectsIn(double, 'pods', orphanSpec).length, 1, 'unclaimed pods wait for the grace period');
        const res = await requestReplica(adopted.address, '/invocations', { inputs: [[1, 2, 3, 4]] });
        assert.deepEqual(res.json, { predictions: [[5.625]] });
        await waitFor('the unclaimed group deleted', () => (groupObjectsIn(double, 'deployments', orphanSpec).length === 0 && groupObjectsIn(double, 'pods', orphanSpec).length === 0 ? true : undefined), 15_000);
        assert.equal(groupObjectsIn(double, 'pods', makeSpec('x', 'linear')).length, 1, 'the claimed group stays');
        assert.deepEqual(second.list().map((r) => r.id), ['ep.linear.new']);
      } finally {
        await second.close();
      }
    } finally {
      await double.close();
    }
  });

  test('an artifact changed in the store fails the start with the replica\'s reason, and leaves nothing', { timeout: 60_000 }, async () => {
    const key = 'models/altered/1';
    await fsp.mkdir(path.join(storeRoot, key), { recursive: true });
    await fsp.writeFile(path.join(storeRoot, key, 'linear.onnx'), linearFixture.build());
    const sha256 = await treeSha256(key);
    await fsp.appendFile(path.join(storeRoot, key, 'linear.onnx'), Buffer.from([0]));
    await withDouble(async (double, rt, exits) => {
      const spec = makeSpec('ep.altered.a', 'linear', { servedEntity: 'altered', artifactKey: key, artifactSha256: sha256 });
      const err = await rt.startReplica(spec).then(() => assert.fail('started'), (e: unknown) => e);
      assert.ok(err instanceof FerryError && err.code === 'MODEL_ERROR', String(err));
      assert.match(err.message, /ep\.altered\.a.*does not match its recorded sha256/s);
      assert.deepEqual(rt.list(), []);
      assert.deepEqual(exits, []);
      await waitFor('nothing left', () => (groupObjectsIn(double, 'pods', spec).length === 0 && groupObjectsIn(double, 'deployments', spec).length === 0 ? true : undefined));
    });
  });

  test('a replica over its memory limit while loading (OOMKilled) fails the start, saying so', { timeout: 60_000 }, async () => {
    await withDouble(async (double, rt) => {
      // Node alone is resident well over 16 MiB: the double's kubelet kills it as the kernel would.
      const spec = makeSpec('ep.tiny.a', 'linear', { servedEntity: 'tiny', memoryLimitBytes: 16 * MIB });
      await assert.rejects(rt.startReplica(spec), (err: unknown) => err instanceof FerryError && err.code === 'MODEL_ERROR' && /ep\.tiny\.a[^]*OOMKilled/.test(err.message));
      await waitFor('nothing left', () => (groupObjectsIn(double, 'pods', spec).length === 0 && groupObjectsIn(double, 'deployments', spec).length === 0 ? true : undefined));
    });
  });

  test('a start past startTimeoutMs is DEADLINE_EXCEEDED and leaves nothing', { timeout: 60_000 }, async () => {
    await withDouble(async (double, rt) => {
      const spec = makeSpec('ep.linear.slow', 'linear');
      await assert.rejects(rt.startReplica(spec), (err: unknown) => err instanceof FerryError && err.code === 'DEADLINE_EXCEEDED' && /ep\.linear\.slow/.test(err.message));
      await waitFor('nothing left', () => (groupObjectsIn(double, 'pods', spec).length === 0 && groupObjectsIn(double, 'deployments', spec).length === 0 ? true : undefined));
      assert.deepEqual(rt.list(), []);
    }, { startTimeoutMs: 150 });
  });

  test('a GPU entity on a cluster without a free GPU times out naming the scheduler\'s reason, and leaves nothing', { timeout: 60_000 }, async () => {
    const double = await KubeApiDouble.start({ images: { [IMAGE]: [process.execPath, FERRY_BIN] }, gpus: 0 });
    const rt = await openRuntime(double, { startTimeoutMs: 1500 });
    try {
      const spec = makeSpec('ep.gpu.a', 'linear', { servedEntity: 'gpu', workloadType: 'GPU_SMALL' });
      await assert.rejects(rt.startReplica(spec), (err: unknown) => err instanceof FerryError && err.code === 'DEADLINE_EXCEEDED'
        && /ep\.gpu\.a[^]*The scheduler could not place it: Unschedulable: 0\/1 nodes are available: 1 Insufficient nvidia\.com\/gpu\./.test(err.message), 'the scheduler\'s reason');
      await waitFor('nothing left', () => (groupObjectsIn(double, 'pods', spec).length === 0 && groupObjectsIn(double, 'deployments', spec).length === 0 ? true : undefined));
    } finally {
      await rt.close();
      await double.close();
    }
  });

  test('a server with runtime kubernetes serves an endpoint through pods; after a restart it adopts them', { timeout: 120_000 }, async () => {
    const double = await startDouble();
    const dataDir = path.join(root, 'server-data');
    const kubeconfig = path.join(root, 'kubeconfig.json');
    await fsp.writeFile(kubeconfig, double.kubeconfig(NS));
    const saved = process.env.KUBECONFIG;
    // The server's runtime takes its kubeconfig from the environment, as in a real deployment.
    process.env.KUBECONFIG = kubeconfig;
    const start = (): Promise<FerryServer> => startTestServer(dataDir, { runtime: { kind: 'kubernetes', namespace: NS, image: IMAGE, adoptionGrace: '1m' } });
    let server: FerryServer | undefined;
    try {
      server = await start();
      const url = server.url;
      await fsp.writeFile(path.join(root, 'linear.onnx'), linearFixture.build());
      await registerVersion(url, 'linear', path.join(root, 'linear.onnx'));
      const created = await request({ url, method: 'POST', path: '/api/2.0/serving-endpoints', json: { name: 'lin', config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] } } });
      assert.equal(created.status, 200, created.text);
      const settled = await waitSettled(url, 'lin');
      assert.equal(settled.state.ready, 'READY', JSON.stringify(settled));
      const query = async (u: string): Promise<void> => {
        const res = await request({ url: u, method: 'POST', path: '/serving-endpoints/lin/invocations', json: { inputs: [[1, 2, 3, 4]] } });
        assert.equal(res.status, 200, res.text);
        assert.deepEqual(res.json, { predictions: [[5.625]] });
      };
      await query(url);
      const [pod] = double.list('pods', NS);
      assert.equal(pod?.metadata.labels?.['ferry.dev/endpoint'], 'lin');

      await server.close(); // the pods keep serving
      server = await start();
      // Recovery starts the endpoint's replicas again: the running pod is claimed, no new one starts.
      await waitFor('READY again', async () => ((await waitSettled(server?.url ?? '', 'lin')).state.ready === 'READY' ? true : undefined), 30_000);
      await query(server.url);
      assert.deepEqual(double.list('pods', NS).map((p) => p.metadata.name), [pod?.metadata.name], 'the running pod was adopted');

      assert.equal((await request({ url: server.url, method: 'DELETE', path: '/api/2.0/serving-endpoints/lin' })).status, 200);
      await waitFor('the endpoint\'s objects deleted', () => (double.list('pods', NS).length === 0 && double.list('deployments', NS).length === 0 ? true : undefined), 30_000);
    } finally {
      if (saved === undefined) delete process.env.KUBECONFIG;
      else process.env.KUBECONFIG = saved;
      await server?.close();
      await double.close();
    }
  });

  test('a python replica runs in the Python image and serves the MLflow model it fetched from the store', { timeout: 120_000 }, async (t) => {
    const mlflow = path.resolve(ROOT, process.env.FERRY_MLFLOW_PATH ?? '../shared/vendor/mlflow');
    if (!fs.existsSync(path.join(mlflow, 'mlflow', '__init__.py'))) {
      t.skip(`MLflow not found at ${mlflow} (set FERRY_MLFLOW_PATH)`);
      return;
    }
    const key = 'models/sk/1';
    const save = 'import sys, pandas as pd, mlflow\nfrom sklearn.linear_model import LinearRegression\n'
      + 'x = pd.DataFrame({"a": [1.0, 2, 3, 4], "b": [0.0, 1, 0, 1]})\nmlflow.sklearn.save_model(LinearRegression().fit(x, 2 * x.a + x.b), sys.argv[1], input_example=x.head(2))\n';
    await promisify(execFile)('/usr/bin/python3', ['-c', save, path.join(storeRoot, key)], { env: { ...process.env, PYTHONPATH: mlflow } });
    // The Python image: Ferry with Debian's Python on its PATH (what PYTHON_PACKAGES builds).
    const double = await KubeApiDouble.start({ images: { [IMAGE]: [process.execPath, FERRY_BIN], [PYTHON_IMAGE]: ['/usr/bin/env', 'PATH=/usr/bin:/bin', process.execPath, FERRY_BIN] } });
    let rt: KubernetesRuntime | undefined;
    try {
      rt = await openRuntime(double, { pythonImage: PYTHON_IMAGE });
      const spec = makeSpec('py-0', 'linear', { servedEntity: 'sk', flavor: 'python', modelFile: 'MLmodel', modelName: 'sk', artifactKey: key, artifactSha256: await treeSha256(key) });
      const h = await rt.startReplica(spec);
      assert.equal(groupObjectsIn(double, 'deployments', spec)[0]?.spec.template.spec.containers[0].image, PYTHON_IMAGE);
      const r = await requestReplica(h.address, '/invocations', { dataframe_split: { columns: ['a', 'b'], data: [[5, 1]] } });
      assert.equal(r.status, 200, r.text);
      assert.ok(Math.abs((r.json as { predictions: number[] }).predictions[0]! - 11) < 1e-9, r.text);
      // Other flavors keep the plain image.
      const onnx = makeSpec('lin-0', 'linear');
      await rt.startReplica(onnx);
      assert.equal(groupObjectsIn(double, 'deployments', onnx)[0]?.spec.template.spec.containers[0].image, IMAGE);
    } finally {
      await rt?.close();
      await double.close();
    }
  });

  test('config: runtime kind kubernetes compiles with units in names; bad values name the key', () => {
    const c = compileServerConfig({ runtime: { kind: 'kubernetes', namespace: 'ml', image: 'ghcr.io/example/ferry:1.0', adoptionGrace: '30s' } });
    assert.equal(c.runtime.kind, 'kubernetes');
    assert.ok(c.runtime.kind === 'kubernetes' && c.runtime.adoptionGraceMs === 30_000 && c.runtime.replicaPort === 8080);
    assert.equal(compileServerConfig({}).runtime.kind, 'local');
    assert.throws(() => compileServerConfig({ runtime: { kind: 'kubernetes', namespace: 'Not_A_Namespace', image: 'x' } }), /runtime\.namespace/);
    assert.throws(() => compileServerConfig({ runtime: { kind: 'kubernetes', namespace: 'ml', image: 'x', adoptionGrace: 'soon' } }), /'runtime\.adoptionGrace'/);
    assert.throws(() => compileServerConfig({ runtime: { kind: 'kubernetes', namespace: 'ml', image: 'x', replicas: 3 } }), /Unknown key 'replicas'/);
  });
});

/**
 * Opt-in, against a real cluster (KUBECONFIG set): the API server itself validates and admits the
 * generated objects with a server-side dry run (schemas, admission such as Pod Security), in
 * FERRY_E2E_NAMESPACE (default "default"). Nothing is created.
 */
describe('KubernetesRuntime against a real cluster', () => {
  const skip = process.env.KUBECONFIG === undefined ? 'KUBECONFIG is not set: no cluster to test against' : false;
  test('the API server accepts the generated objects (server-side dry run)', { skip, timeout: 60_000 }, async () => {
    const kc = new k8s.KubeConfig();
    kc.loadFromDefault();
    const namespace = process.env.FERRY_E2E_NAMESPACE ?? 'default';
    const apps = kc.makeApiClient(k8s.AppsV1Api);
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const net = kc.makeApiClient(k8s.NetworkingV1Api);
    const policy = kc.makeApiClient(k8s.PolicyV1Api);
    for (const workloadType of ['CPU', 'GPU_SMALL'] as const) {
      const spec = makeSpec('e2e.linear.r1', 'linear', { endpoint: 'e2e', workloadType });
      const o = groupObjects(spec, groupOf(spec), { ...SETTINGS, namespace });
      await apps.createNamespacedDeployment({ namespace, body: o.deployment, dryRun: 'All' });
      await core.createNamespacedService({ namespace, body: o.service, dryRun: 'All' });
      await net.createNamespacedNetworkPolicy({ namespace, body: o.networkPolicy, dryRun: 'All' });
      await policy.createNamespacedPodDisruptionBudget({ namespace, body: o.podDisruptionBudget, dryRun: 'All' });
    }
  });
});
