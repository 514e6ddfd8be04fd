/**
 * EndpointSlice discovery (src/runtime/kubernetes/discovery.ts) against the Kubernetes API contract
 * double: real pods (processes on their own loopback IPs) becoming ready and unready, scaling,
 * Services Ferry does not manage, and a watch that comes back after the API server's history moved
 * past it (410 Gone → a fresh list).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as k8s from '@kubernetes/client-node';
import { EndpointDiscovery, type DiscoveredAddress } from '../src/runtime/kubernetes/discovery.js';
import { KubeApiDouble } from './support/kube-api-double.js';
import { waitFor } from './support/index.js';
import { startTcpRelay } from './support/tcp-relay.js';

const NS = 'ferry';
/** A container serving GET /ready on $(POD_IP):8080: 200, or 503 after GET /unready (until GET /ready-again). */
const SERVER_JS = `
const http = require('node:http');
let ready = true;
http.createServer((req, res) => {
  if (req.url === '/unready') ready = false;
  if (req.url === '/ready-again') ready = true;
  res.statusCode = req.url === '/ready' && !ready ? 503 : 200;
  res.end();
}).listen(8080, process.argv[1]);
`;

let double: KubeApiDouble;
let apps: k8s.AppsV1Api;
let core: k8s.CoreV1Api;

before(async () => {
  // A short history, so that a watch that was away for a while gets 410 Gone.
  double = await KubeApiDouble.start({ images: { 'node:test': [process.execPath, '-e', SERVER_JS] }, historyLimit: 30 });
  const kc = kubeConfig(double.url);
  apps = kc.makeApiClient(k8s.AppsV1Api);
  core = kc.makeApiClient(k8s.CoreV1Api);
});

after(async () => {
  await double.close();
});

function kubeConfig(url: string): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  kc.loadFromString(double.kubeconfig(NS).replace(double.url, url));
  return kc;
}

/** A served entity as the runtime lays it out: a Deployment of replica pods and a Service over them. */
async function createEntity(name: string, replicas: number, serviceLabels: Record<string, string>): Promise<void> {
  const labels = { app: name };
  await apps.createNamespacedDeployment({
    namespace: NS,
    body: {
      metadata: { name },
      spec: {
        replicas, selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            terminationGracePeriodSeconds: 1,
            containers: [{
              name: 'replica', image: 'node:test', args: ['$(POD_IP)'], ports: [{ name: 'http', containerPort: 8080 }],
              env: [{ name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } }],
              readinessProbe: { httpGet: { path: '/ready', port: 'http' } },
            }],
          },
        },
      },
    },
  });
  await core.createNamespacedService({ namespace: NS, body: { metadata: { name, labels: serviceLabels }, spec: { selector: labels, ports: [{ name: 'http', port: 80, targetPort: 'http' }] } } });
}

async function scale(name: string, replicas: number): Promise<void> {
  await apps.patchNamespacedDeploymentScale({ name, namespace: NS, body: { spec: { replicas } } }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch));
}

async function podIps(name: string): Promise<string[]> {
  const pods = (await core.listNamespacedPod({ namespace: NS, labelSelector: `app=${name}` })).items;
  return pods.flatMap((p) => (p.status?.podIP === undefined || p.metadata?.deletionTimestamp !== undefined ? [] : [p.status.podIP])).sort();
}

const hosts = (addresses: DiscoveredAddress[]): string[] => addresses.map((a) => a.host).sort();

/** The labels a Service of the runtime carries for a served entity (as in src/runtime/kubernetes). */
const entityLabels = (endpoint: string, servedEntity: string): Record<string, string> => ({ 'ferry.dev/endpoint': endpoint, 'ferry.dev/served-entity': servedEntity });
const ferryLabels = (endpoint: string, servedEntity: string): Record<string, string> => ({ 'app.kubernetes.io/managed-by': 'ferry', ...entityLabels(endpoint, servedEntity) });

test('ready pods of a served entity, by endpoint and served entity; readiness, scaling and other Services', { timeout: 60_000 }, async () => {
  await createEntity('ep1-champion', 2, ferryLabels('ep1', 'champion'));
  await createEntity('not-ferry', 1, { 'app.kubernetes.io/managed-by': 'someone-else', ...entityLabels('ep1', 'champion') });
  const discovery = new EndpointDiscovery({ kubeConfig: kubeConfig(double.url), namespace: NS, entityLabels, portName: 'http' });
  const changes: string[] = [];
  discovery.onChange((change) => changes.push(change.service));
  try {
    await discovery.start();
    const two = await waitFor('two ready replicas', () => {
      const a = discovery.addresses('ep1', 'champion');
      return a.length === 2 ? a : undefined;
    }, 20_000);
    assert.deepEqual(hosts(two), await podIps('ep1-champion'));
    assert.deepEqual(discovery.addressesOfService('ep1-champion'), two);
    assert.ok(two.every((a) => a.port === 8080 && a.pod?.startsWith('ep1-champion-')), JSON.stringify(two));
    assert.ok(changes.includes('ep1-champion'));
    assert.ok(!changes.includes('not-ferry'), "a Service without Ferry's label is not watched");
    assert.deepEqual(discovery.addresses('ep1', 'nope'), []);

    // One replica fails its readiness probe: it leaves the set; back to ready, it returns.
    const [first] = two;
    const before = changes.length;
    await fetch(`http://${first!.host}:8080/unready`);
    await waitFor('one ready replica', () => (discovery.addresses('ep1', 'champion').length === 1 ? true : undefined));
    assert.ok(!hosts(discovery.addresses('ep1', 'champion')).includes(first!.host));
    assert.ok(changes.length > before, 'listeners hear the change');
    await fetch(`http://${first!.host}:8080/ready-again`);
    await waitFor('two ready replicas again', () => (discovery.addresses('ep1', 'champion').length === 2 ? true : undefined));

    // A second replica group of the same served entity (a rollout's new version): both count for
    // the entity, each Service keeps its own.
    await createEntity('ep1-champion-v2', 1, ferryLabels('ep1', 'champion'));
    await waitFor('three ready replicas in two groups', () => (discovery.addresses('ep1', 'champion').length === 3 ? true : undefined), 20_000);
    assert.deepEqual(hosts(discovery.addressesOfService('ep1-champion-v2')), await podIps('ep1-champion-v2'));
    assert.equal(discovery.addressesOfService('ep1-champion').length, 2);
    await core.deleteNamespacedService({ name: 'ep1-champion-v2', namespace: NS });
    await apps.deleteNamespacedDeployment({ name: 'ep1-champion-v2', namespace: NS });
    await waitFor('back to one group', () => (discovery.addresses('ep1', 'champion').length === 2 ? true : undefined));

    // Scaling through the scale subresource: the new pod joins once ready; scaling down removes.
    await scale('ep1-champion', 3);
    await waitFor('three ready replicas', () => (discovery.addresses('ep1', 'champion').length === 3 ? true : undefined), 20_000);
    await scale('ep1-champion', 1);
    await waitFor('one replica', () => (discovery.addresses('ep1', 'champion').length === 1 ? true : undefined), 20_000);
    assert.deepEqual(hosts(discovery.addresses('ep1', 'champion')), await waitFor('one pod', async () => {
      const ips = await podIps('ep1-champion');
      return ips.length === 1 ? ips : undefined;
    }));

    // The Service goes: so do its addresses.
    await core.deleteNamespacedService({ name: 'ep1-champion', namespace: NS });
    await waitFor('no replica', () => (discovery.addresses('ep1', 'champion').length === 0 ? true : undefined));
  } finally {
    discovery.close();
    await apps.deleteNamespacedDeployment({ name: 'ep1-champion', namespace: NS });
    await apps.deleteNamespacedDeployment({ name: 'not-ferry', namespace: NS });
    await core.deleteNamespacedService({ name: 'not-ferry', namespace: NS });
  }
});

test('a watch cut off while the history moves past it gets 410 Gone, lists afresh and catches up', { timeout: 60_000 }, async () => {
  await createEntity('ep2-a', 1, ferryLabels('ep2', 'a'));
  const relay = await startTcpRelay(double.url);
  const errors: unknown[] = [];
  const discovery = new EndpointDiscovery({
    kubeConfig: kubeConfig(relay.url), namespace: NS, entityLabels, retryDelayMs: 50, onError: (err) => errors.push(err),
  });
  try {
    await discovery.start();
    await waitFor('one ready replica', () => (discovery.addresses('ep2', 'a').length === 1 ? true : undefined), 20_000);
    const kc = kubeConfig(double.url);
    const since = (await kc.makeApiClient(k8s.DiscoveryV1Api).listNamespacedEndpointSlice({ namespace: NS })).metadata?.resourceVersion ?? '';

    relay.block();
    await scale('ep2-a', 3);
    await waitFor('three pods ready', async () => {
      const slices = await kc.makeApiClient(k8s.DiscoveryV1Api).listNamespacedEndpointSlice({ namespace: NS, labelSelector: 'kubernetes.io/service-name=ep2-a' });
      return slices.items[0]?.endpoints.filter((e) => e.conditions?.ready === true).length === 3 ? true : undefined;
    }, 20_000);
    // Other changes in the cluster push the history (30 events in this double) past `since`.
    await core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'churn' }, data: { n: '0' } } });
    for (let n = 1; n <= 40; n++) {
      await core.patchNamespacedConfigMap({ name: 'churn', namespace: NS, body: { data: { n: String(n) } } }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch));
    }
    assert.equal(discovery.addresses('ep2', 'a').length, 1, 'cut off: the last known addresses stay');
    assert.ok(errors.length > 0, 'the failed reconnects are reported');
    // The history has moved past what discovery saw: a watch from there gets 410 Gone.
    const expired = await new Promise<{ type: string; code: unknown }>((resolve, reject) => {
      void new k8s.Watch(kc).watch(`/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`, { resourceVersion: since },
        (type: string, obj: { code?: unknown }) => resolve({ type, code: obj.code }), (err: unknown) => reject(err instanceof Error ? err : new Error('watch ended without an event')));
    });
    assert.deepEqual(expired, { type: 'ERROR', code: 410 });

    relay.unblock();
    await waitFor('three ready replicas after a fresh list', () => (discovery.addresses('ep2', 'a').length === 3 ? true : undefined), 20_000);
    assert.deepEqual(hosts(discovery.addresses('ep2', 'a')), await podIps('ep2-a'));
  } finally {
    discovery.close();
    await relay.close();
  }
});
