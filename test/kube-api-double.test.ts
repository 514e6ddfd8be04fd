/**
 * The Kubernetes API contract double (test/support/kube-api-double.ts) through the real client:
 * the API semantics Ferry relies on (409 on create and on a stale resourceVersion, 404 Status
 * objects, list and watch with selectors and resourceVersions, 410 for a compacted history, the
 * patch types, the scale subresource) and the simulated controllers (Deployment → pods honouring
 * pod-deletion-cost, a kubelet running real processes with readiness and restarts, EndpointSlices).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as k8s from '@kubernetes/client-node';
import { KubeApiDouble, type KubeObject } from './support/kube-api-double.js';
import { waitFor } from './support/index.js';

const NS = 'double-test';
/** A container that serves GET /ready on $(POD_IP):8080, prints a line, and exits 3 on /exit. */
const SERVER_JS = `
const http = require('node:http');
console.log('hello from ' + process.env.POD_NAME);
http.createServer((req, res) => {
  if (req.url === '/exit') { console.error('asked to exit'); process.exit(3); }
  res.end('ok');
}).listen(8080, process.argv[1]);
`;

let double: KubeApiDouble;
let kc: k8s.KubeConfig;
let core: k8s.CoreV1Api;
let apps: k8s.AppsV1Api;
let coordination: k8s.CoordinationV1Api;

before(async () => {
  double = await KubeApiDouble.start({ images: { 'node:test': [process.execPath, '-e', SERVER_JS] }, historyLimit: 50 });
  kc = new k8s.KubeConfig();
  kc.loadFromString(double.kubeconfig(NS));
  core = kc.makeApiClient(k8s.CoreV1Api);
  apps = kc.makeApiClient(k8s.AppsV1Api);
  coordination = kc.makeApiClient(k8s.CoordinationV1Api);
});

after(async () => {
  await double.close();
});

function apiCode(err: unknown): number | undefined {
  return err instanceof k8s.ApiException ? err.code : undefined;
}

/** The Status body of an ApiException (client-node keeps it as the raw JSON text). */
function statusOf(err: unknown): KubeObject {
  assert.ok(err instanceof k8s.ApiException, String(err));
  return (typeof err.body === 'string' ? JSON.parse(err.body) : err.body) as KubeObject;
}

/** Collects watch events of `path` from `resourceVersion` until stopped. */
async function collectWatch(path: string, query: Record<string, string>): Promise<{ events: Array<{ type: string; object: KubeObject }>; done: Promise<unknown>; stop: () => void }> {
  const events: Array<{ type: string; object: KubeObject }> = [];
  let finish: (err: unknown) => void = () => undefined;
  const done = new Promise((resolve) => { finish = resolve; });
  const ctl = await new k8s.Watch(kc).watch(path, query, (type, object: KubeObject) => events.push({ type, object }), (err) => finish(err));
  return { events, done, stop: () => ctl.abort() };
}

describe('Kubernetes API contract double', () => {
  test('create, 409 AlreadyExists, get, 404 NotFound as Status objects, delete', async () => {
    const cm = { metadata: { name: 'one', labels: { app: 'x' } }, data: { a: '1' } };
    const created = await core.createNamespacedConfigMap({ namespace: NS, body: cm });
    assert.equal(created.metadata?.namespace, NS);
    assert.ok(created.metadata?.uid && created.metadata.resourceVersion);
    const dup = await core.createNamespacedConfigMap({ namespace: NS, body: cm }).catch((e: unknown) => e);
    assert.equal(apiCode(dup), 409);
    assert.equal(statusOf(dup).reason, 'AlreadyExists');
    assert.equal(statusOf(dup).kind, 'Status');
    assert.deepEqual((await core.readNamespacedConfigMap({ name: 'one', namespace: NS })).data, { a: '1' });
    const missing = await core.readNamespacedConfigMap({ name: 'nope', namespace: NS }).catch((e: unknown) => e);
    assert.equal(apiCode(missing), 404);
    assert.equal(statusOf(missing).reason, 'NotFound');
    await core.deleteNamespacedConfigMap({ name: 'one', namespace: NS });
    assert.equal(apiCode(await core.deleteNamespacedConfigMap({ name: 'one', namespace: NS }).catch((e: unknown) => e)), 404);
  });

  test('replace with a stale resourceVersion is 409 Conflict; patches merge, json-patch, and check resourceVersion', async () => {
    const lease = await coordination.createNamespacedLease({ namespace: NS, body: { metadata: { name: 'leader' }, spec: { holderIdentity: 'a', leaseDurationSeconds: 15 } } });
    const updated = await coordination.replaceNamespacedLease({ name: 'leader', namespace: NS, body: { ...lease, spec: { ...lease.spec, holderIdentity: 'b' } } });
    assert.equal(updated.spec?.holderIdentity, 'b');
    assert.notEqual(updated.metadata?.resourceVersion, lease.metadata?.resourceVersion);
    // Another writer got there first with the old version.
    const stale = await coordination.replaceNamespacedLease({ name: 'leader', namespace: NS, body: { ...lease, spec: { ...lease.spec, holderIdentity: 'c' } } }).catch((e: unknown) => e);
    assert.equal(apiCode(stale), 409);
    assert.equal(statusOf(stale).reason, 'Conflict');
    assert.equal((await coordination.readNamespacedLease({ name: 'leader', namespace: NS })).spec?.holderIdentity, 'b');

    const merged = await coordination.patchNamespacedLease({ name: 'leader', namespace: NS, body: { metadata: { annotations: { 'ferry.dev/x': '1' } } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch));
    assert.equal(merged.metadata?.annotations?.['ferry.dev/x'], '1');
    assert.equal(merged.spec?.holderIdentity, 'b');
    const patched = await coordination.patchNamespacedLease({
      name: 'leader', namespace: NS, body: [{ op: 'replace', path: '/spec/holderIdentity', value: 'd' }, { op: 'add', path: '/metadata/annotations/ferry.dev~1y', value: '2' }],
    }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.JsonPatch));
    assert.equal(patched.spec?.holderIdentity, 'd');
    assert.equal(patched.metadata?.annotations?.['ferry.dev/y'], '2');
    const stalePatch = await coordination.patchNamespacedLease({ name: 'leader', namespace: NS, body: { metadata: { resourceVersion: lease.metadata?.resourceVersion }, spec: { holderIdentity: 'e' } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch)).catch((e: unknown) => e);
    assert.equal(apiCode(stalePatch), 409);
  });

  test('list and watch by label selector, from a resourceVersion; a compacted one gets 410 Expired', async () => {
    await core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'w1', labels: { set: 'w' } } } });
    await core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'other', labels: { set: 'v' } } } });
    const list = await core.listNamespacedConfigMap({ namespace: NS, labelSelector: 'set=w' });
    assert.deepEqual(list.items.map((i) => i.metadata?.name), ['w1']);
    assert.deepEqual((await core.listNamespacedConfigMap({ namespace: NS, labelSelector: 'set in (v,w),set!=v' })).items.map((i) => i.metadata?.name), ['w1']);
    const from = list.metadata?.resourceVersion ?? '';
    // Changes after the list, seen by a watch from the list's version, in order.
    await core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'w2', labels: { set: 'w' } } } });
    await core.patchNamespacedConfigMap({ name: 'w1', namespace: NS, body: { data: { b: '2' } } }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.StrategicMergePatch));
    await core.deleteNamespacedConfigMap({ name: 'w1', namespace: NS });
    const w = await collectWatch(`/api/v1/namespaces/${NS}/configmaps`, { labelSelector: 'set=w', resourceVersion: from });
    await core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'w3', labels: { set: 'w' } } } });
    await core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'v2', labels: { set: 'v' } } } });
    await waitFor('4 events', () => (w.events.length >= 4 ? true : undefined));
    assert.deepEqual(w.events.map((e) => `${e.type} ${String(e.object.metadata.name)}`), ['ADDED w2', 'MODIFIED w1', 'DELETED w1', 'ADDED w3']);
    w.stop();

    // History holds 50 events: 60 more writes compact the version the list returned.
    for (let i = 0; i < 60; i++) await core.patchNamespacedConfigMap({ name: 'w2', namespace: NS, body: { data: { i: String(i) } } }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch));
    const old = await collectWatch(`/api/v1/namespaces/${NS}/configmaps`, { resourceVersion: from });
    await old.done;
    assert.equal(old.events.length, 1);
    assert.equal(old.events[0]?.type, 'ERROR');
    assert.equal(old.events[0]?.object.code, 410);
    assert.equal(old.events[0]?.object.reason, 'Expired');
  });

  test('a Deployment runs real pods; scale subresource; scale-down honours pod-deletion-cost; EndpointSlices follow', { timeout: 60_000 }, async () => {
    const labels = { app: 'srv' };
    await apps.createNamespacedDeployment({
      namespace: NS,
      body: {
        metadata: { name: 'srv' },
        spec: {
          replicas: 2, selector: { matchLabels: labels },
          template: {
            metadata: { labels },
            spec: {
              terminationGracePeriodSeconds: 5,
              containers: [{
                name: 'main', image: 'node:test', args: ['$(POD_IP)'], ports: [{ name: 'http', containerPort: 8080 }],
                env: [{ name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } }, { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
                readinessProbe: { httpGet: { path: '/ready', port: 'http' } }, terminationMessagePolicy: 'FallbackToLogsOnError',
              }],
            },
          },
        },
      },
    });
    await core.createNamespacedService({ namespace: NS, body: { metadata: { name: 'srv' }, spec: { selector: labels, ports: [{ name: 'http', port: 80, targetPort: 'http' }] } } });
    const readyPods = async (n: number): Promise<k8s.V1Pod[]> => waitFor(`${n} ready pods`, async () => {
      const pods = (await core.listNamespacedPod({ namespace: NS, labelSelector: 'app=srv' })).items;
      const ready = pods.filter((p) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') && p.metadata?.deletionTimestamp === undefined);
      return ready.length === n && pods.length === n ? ready : undefined;
    }, 20_000);
    const pods = await readyPods(2);
    const ips = pods.map((p) => p.status?.podIP ?? '');
    assert.notEqual(ips[0], ips[1], 'each pod has its own IP');
    for (const ip of ips) assert.equal(await (await fetch(`http://${ip}:8080/ready`)).text(), 'ok');
    assert.match(await core.readNamespacedPodLog({ name: pods[0]?.metadata?.name ?? '', namespace: NS }), /hello from srv-/);
    const slice = await waitFor('endpoint slice', async () => {
      const s = (await kc.makeApiClient(k8s.DiscoveryV1Api).listNamespacedEndpointSlice({ namespace: NS, labelSelector: 'kubernetes.io/service-name=srv' })).items[0];
      return s?.endpoints.filter((e) => e.conditions?.ready === true).length === 2 ? s : undefined;
    });
    assert.deepEqual(slice.ports?.map((p) => p.port), [8080], 'the named target port is resolved');
    assert.deepEqual(slice.endpoints.flatMap((e) => e.addresses).sort(), [...ips].sort());

    // The scale subresource; the pod with the lowest deletion cost goes.
    const [keep, drop] = pods;
    await core.patchNamespacedPod({ name: drop?.metadata?.name ?? '', namespace: NS, body: { metadata: { annotations: { 'controller.kubernetes.io/pod-deletion-cost': '-2147483648' } } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch));
    const scale = await apps.readNamespacedDeploymentScale({ name: 'srv', namespace: NS });
    assert.equal(scale.spec?.replicas, 2);
    assert.equal(scale.status?.selector, 'app=srv');
    await apps.patchNamespacedDeploymentScale({ name: 'srv', namespace: NS, body: { spec: { replicas: 1 } } }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch));
    const [left] = await readyPods(1);
    assert.equal(left?.metadata?.name, keep?.metadata?.name);
    await waitFor('the dropped pod to be gone', async () => ((await core.listNamespacedPod({ namespace: NS, labelSelector: 'app=srv' })).items.length === 1 ? true : undefined));
    await assert.rejects(fetch(`http://${drop?.status?.podIP ?? ''}:8080/ready`), 'its process got SIGTERM');
    const staleScale = await apps.replaceNamespacedDeploymentScale({ name: 'srv', namespace: NS, body: scale }).catch((e: unknown) => e);
    assert.equal(apiCode(staleScale), 409, 'a Scale with an old resourceVersion conflicts');

    // A container that exits is restarted; its termination is recorded with the log's tail.
    await fetch(`http://${left?.status?.podIP ?? ''}:8080/exit`).catch(() => undefined);
    const restarted = await waitFor('a restart', async () => {
      const p = await core.readNamespacedPod({ name: left?.metadata?.name ?? '', namespace: NS });
      const cs = p.status?.containerStatuses?.[0];
      return cs?.restartCount === 1 && cs.lastState?.terminated !== undefined ? cs : undefined;
    });
    assert.equal(restarted.lastState?.terminated?.exitCode, 3);
    assert.equal(restarted.lastState?.terminated?.reason, 'Error');
    assert.match(restarted.lastState?.terminated?.message ?? '', /asked to exit/);
    assert.match(await core.readNamespacedPodLog({ name: left?.metadata?.name ?? '', namespace: NS, previous: true }), /asked to exit/);
    await readyPods(1);

    // Deleting the Deployment deletes its pods; deleting the Service its slice.
    await apps.deleteNamespacedDeployment({ name: 'srv', namespace: NS });
    await core.deleteNamespacedService({ name: 'srv', namespace: NS });
    await waitFor('pods and slices gone', async () => {
      const podsLeft = (await core.listNamespacedPod({ namespace: NS, labelSelector: 'app=srv' })).items.length;
      const slices = (await kc.makeApiClient(k8s.DiscoveryV1Api).listNamespacedEndpointSlice({ namespace: NS })).items.length;
      return podsLeft === 0 && slices === 0 ? true : undefined;
    });
  });
});
