/**
 * The install files: deploy/kubernetes manifests checked against the official Kubernetes OpenAPI
 * schemas (kubernetes-models) and kustomize, their RBAC against what the server's Kubernetes code
 * calls, the ConfigMap's Ferry config through Ferry's own config compile, and the Dockerfile against
 * the repository (every COPY source exists, the entrypoint is what the build produces); and the
 * server's data-directory lock as a restarted container meets it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import * as models from 'kubernetes-models';
import { compileServerConfig } from '../src/config/index.js';
import { DEFAULT_LEASE_NAME } from '../src/runtime/kubernetes/leader.js';
import { ROOT, startTestServer, withTempDir } from './support/index.js';

const DIR = path.join(ROOT, 'deploy', 'kubernetes');

interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [key: string]: any;
}

/** kubernetes-models classes by "apiVersion/kind", e.g. "apps/v1/Deployment". */
function modelClasses(): Map<string, new (data: unknown) => { validate(): void }> {
  const byKind = new Map<string, new (data: unknown) => { validate(): void }>();
  const visit = (ns: Record<string, unknown>, depth: number): void => {
    for (const value of Object.values(ns)) {
      if (typeof value === 'function') {
        const cls = value as unknown as { apiVersion?: unknown; kind?: unknown } & (new (data: unknown) => { validate(): void });
        if (typeof cls.apiVersion === 'string' && typeof cls.kind === 'string') byKind.set(`${cls.apiVersion}/${cls.kind}`, cls);
      } else if (typeof value === 'object' && value !== null && depth < 2) {
        visit(value as Record<string, unknown>, depth + 1);
      }
    }
  };
  visit(models, 0);
  return byKind;
}

async function loadManifests(): Promise<{ kustomization: any; objects: KubeObject[] }> {
  const kustomization = parseAllDocuments(await fsp.readFile(path.join(DIR, 'kustomization.yaml'), 'utf8'))[0]!.toJS();
  const objects: KubeObject[] = [];
  for (const file of kustomization.resources as string[]) {
    for (const doc of parseAllDocuments(await fsp.readFile(path.join(DIR, file), 'utf8'))) {
      assert.deepEqual(doc.errors, [], `${file} parses`);
      objects.push(doc.toJS() as KubeObject);
    }
  }
  return { kustomization, objects };
}

function find(objects: KubeObject[], kind: string, name: string): KubeObject {
  const obj = objects.find((o) => o.kind === kind && o.metadata.name === name);
  assert.ok(obj, `${kind} ${name} is in deploy/kubernetes`);
  return obj;
}

test('kustomization lists every YAML file in deploy/kubernetes, and each object validates against the Kubernetes OpenAPI schema', async () => {
  const { kustomization, objects } = await loadManifests();
  const files = (await fsp.readdir(DIR)).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort();
  assert.deepEqual([...kustomization.resources].sort(), files, 'no file left out of (or missing from) the kustomization');
  const classes = modelClasses();
  assert.ok(classes.size > 100, 'kubernetes-models classes found');
  for (const obj of objects) {
    const Model = classes.get(`${obj.apiVersion}/${obj.kind}`);
    assert.ok(Model, `${obj.apiVersion} ${obj.kind} is a known Kubernetes type`);
    assert.doesNotThrow(() => new Model(obj).validate(), `${obj.kind} ${obj.metadata.name} is valid`);
    assert.equal(obj.metadata.labels?.['app.kubernetes.io/name'], 'ferry', `${obj.kind} ${obj.metadata.name} carries the app label`);
  }
  // The validation can fail: a wrong type is caught (a test that cannot fail is a defect).
  const deployment = structuredClone(find(objects, 'Deployment', 'ferry-server'));
  deployment.spec.template.spec.containers[0].ports[0].containerPort = '8080';
  assert.throws(() => new (classes.get('apps/v1/Deployment')!)(deployment).validate(), /containerPort must be integer/);
});

interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  resourceNames?: string[];
  verbs: string[];
}

/** API group and plural of each kind the server's Kubernetes code touches. */
const KINDS: Record<string, { group: string; plural: string }> = {
  Deployment: { group: 'apps', plural: 'deployments' },
  Service: { group: '', plural: 'services' },
  Pod: { group: '', plural: 'pods' },
  NetworkPolicy: { group: 'networking.k8s.io', plural: 'networkpolicies' },
  PodDisruptionBudget: { group: 'policy', plural: 'poddisruptionbudgets' },
  EndpointSlice: { group: 'discovery.k8s.io', plural: 'endpointslices' },
  Lease: { group: 'coordination.k8s.io', plural: 'leases' },
};
/** client-node method prefixes → RBAC verbs. */
const VERBS: Record<string, string> = { create: 'create', read: 'get', list: 'list', patch: 'patch', replace: 'update', delete: 'delete' };

/**
 * The grants ("group/resource: verb") the code under src/runtime/kubernetes needs, read from the
 * code itself: every generated-client call (`patchNamespacedDeploymentScale` → apps
 * deployments/scale patch) and every watch path (`/api/v1/namespaces/${ns}/pods` → pods watch).
 * Read from the source rather than listed by hand, so a new call fails this test until the Role has it.
 */
async function grantsUsedByCode(): Promise<string[]> {
  const dir = path.join(ROOT, 'src', 'runtime', 'kubernetes');
  const used = new Set<string>();
  for (const file of (await fsp.readdir(dir)).filter((f) => f.endsWith('.ts'))) {
    const code = await fsp.readFile(path.join(dir, file), 'utf8');
    for (const [, prefix = '', rest = ''] of code.matchAll(/\b(create|read|list|patch|replace|delete)Namespaced([A-Z]\w*)\(/g)) {
      const kind = Object.keys(KINDS).filter((k) => rest.startsWith(k)).sort((x, y) => y.length - x.length)[0];
      assert.ok(kind, `${file}: ${prefix}Namespaced${rest} touches a kind this test knows`);
      const sub = rest.slice(kind.length).toLowerCase();
      used.add(`${KINDS[kind]!.group}/${KINDS[kind]!.plural}${sub === '' ? '' : `/${sub}`}: ${VERBS[prefix]!}`);
    }
    for (const [, plural = ''] of code.matchAll(/\/namespaces\/\$\{[^}]*\}\/([a-z]+)`/g)) {
      const kind = Object.values(KINDS).find((k) => k.plural === plural);
      assert.ok(kind, `${file}: a watch of ${plural}, a kind this test knows`);
      used.add(`${kind.group}/${plural}: watch`);
    }
  }
  return [...used].sort();
}

/** A Role's rules as "group/resource: verb" grants (resource names aside), so that differently grouped rules compare. */
function grants(rules: PolicyRule[]): string[] {
  const out = new Set<string>();
  for (const r of rules) for (const g of r.apiGroups) for (const res of r.resources) for (const v of r.verbs) out.add(`${g}/${res}: ${v}`);
  return [...out].sort();
}

test("the Role grants exactly what the server's Kubernetes code calls: nothing missing, nothing extra", async () => {
  const { objects } = await loadManifests();
  const rules = find(objects, 'Role', 'ferry-server').rules as PolicyRule[];
  assert.deepEqual(grants(rules), await grantsUsedByCode());
  assert.ok(!grants(rules).some((g) => g.includes('secrets')), 'no access to Secrets');
  // Reading and renewing is for the election's own Lease only (creating cannot be limited by name).
  const byName = rules.filter((r) => r.resourceNames !== undefined);
  assert.deepEqual(byName, [{ apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: [DEFAULT_LEASE_NAME], verbs: ['get', 'update'] }]);
});

test('labels and selectors agree: Service and PDB select the server pods; names and namespaces line up', async () => {
  const { kustomization, objects } = await loadManifests();
  const deployment = find(objects, 'Deployment', 'ferry-server');
  const podLabels: Record<string, string> = deployment.spec.template.metadata.labels;
  // The entity NetworkPolicies of the Kubernetes runtime admit exactly these labels.
  assert.deepEqual({ ...podLabels }, { 'app.kubernetes.io/name': 'ferry', 'app.kubernetes.io/component': 'server' });
  const selects = (selector: Record<string, string>): boolean => Object.entries(selector).every(([k, v]) => podLabels[k] === v);
  assert.ok(selects(deployment.spec.selector.matchLabels), 'the Deployment selects its own pods');
  const service = find(objects, 'Service', 'ferry');
  assert.ok(selects(service.spec.selector), 'the Service selects the server pods');
  const port = service.spec.ports[0];
  const container = deployment.spec.template.spec.containers[0];
  assert.ok(container.ports.some((p: any) => p.name === port.targetPort), `the Service's targetPort '${port.targetPort}' names a container port`);
  assert.ok(selects(find(objects, 'PodDisruptionBudget', 'ferry-server').spec.selector.matchLabels), 'the PDB selects the server pods');

  const sa = find(objects, 'ServiceAccount', 'ferry-server');
  assert.equal(deployment.spec.template.spec.serviceAccountName, sa.metadata.name);
  const binding = find(objects, 'RoleBinding', 'ferry-server');
  assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: kustomization.namespace }]);
  assert.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: find(objects, 'Role', 'ferry-server').metadata.name });
  assert.equal(find(objects, 'Namespace', kustomization.namespace).kind, 'Namespace');

  // Every ConfigMap and Secret the pod refers to: the ConfigMap is here, Secrets are the user's.
  const volumes = deployment.spec.template.spec.volumes as any[];
  const configVolume = volumes.find((v) => v.configMap !== undefined);
  find(objects, 'ConfigMap', configVolume.configMap.name);
  const secretKeys = (container.env as any[]).flatMap((e) => (e.valueFrom?.secretKeyRef ? [`${e.name as string}=${e.valueFrom.secretKeyRef.name as string}/${e.valueFrom.secretKeyRef.key as string}`] : []));
  assert.deepEqual(secretKeys, ['FERRY_ADMIN_TOKEN=ferry-secrets/admin-token', 'PGPASSWORD=ferry-secrets/postgres-password']);
  // The S3 keys: the same Secret for the server (envFrom) and, through the runtime config, the replicas.
  const s3Secret = (container.envFrom as any[]).map((e) => e.secretRef.name as string);
  const ferryJson = JSON.parse(find(objects, 'ConfigMap', configVolume.configMap.name).data['ferry.json']);
  assert.deepEqual(s3Secret, [ferryJson.runtime.artifactStoreSecret]);
  assert.ok(!objects.some((o) => o.kind === 'Secret'), 'no Secret values in the manifests');
  assert.ok((container.env as any[]).every((e) => e.value === undefined || !/token|password|secret|key/i.test(e.name)), 'no secret as a literal value');
  const mounted = (container.volumeMounts as any[]).map((m) => m.name).sort();
  assert.deepEqual(mounted, volumes.map((v) => v.name).sort(), 'every volume mounted, every mount a volume');
});

/** kubectl (with its built-in kustomize) is not part of Ferry's dependencies: used where installed. */
const HAS_KUBECTL = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status === 0;

test('kubectl kustomize builds the kustomization: every object, each namespaced one in the namespace', {
  skip: HAS_KUBECTL ? false : 'kubectl is not installed',
}, async () => {
  const { kustomization, objects } = await loadManifests();
  const built = spawnSync('kubectl', ['kustomize', DIR], { encoding: 'utf8' });
  assert.equal(built.status, 0, built.stderr);
  const rendered = parseAllDocuments(built.stdout).map((d) => d.toJS() as KubeObject);
  const ids = (list: KubeObject[]): string[] => list.map((o) => `${o.kind}/${o.metadata.name}`).sort();
  assert.deepEqual(ids(rendered), ids(objects));
  for (const o of rendered.filter((x) => x.kind !== 'Namespace')) assert.equal(o.metadata.namespace, kustomization.namespace, `${o.kind} ${o.metadata.name}`);
});

test('the server pod meets the restricted Pod Security Standard its namespace enforces', async () => {
  const { kustomization, objects } = await loadManifests();
  assert.equal(find(objects, 'Namespace', kustomization.namespace).metadata.labels?.['pod-security.kubernetes.io/enforce'], 'restricted');
  const pod = find(objects, 'Deployment', 'ferry-server').spec.template.spec;
  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.equal(pod.securityContext.seccompProfile.type, 'RuntimeDefault');
  for (const c of pod.containers as any[]) {
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
    assert.ok(c.resources.requests.cpu && c.resources.requests.memory && c.resources.limits.memory, 'requests and a memory limit');
    for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) assert.ok(c[probe]?.httpGet.path.startsWith('/v2/health/'), probe);
  }
});

test("the ConfigMap's ferry.json compiles with Ferry's own config rules, and matches the pod's mounts, port and labels", async () => {
  const { kustomization, objects } = await loadManifests();
  const deployment = find(objects, 'Deployment', 'ferry-server');
  const container = deployment.spec.template.spec.containers[0];
  const configMap = find(objects, 'ConfigMap', 'ferry-config');
  const args = container.args as string[];
  const configPath = args[args.indexOf('--config') + 1]!;
  const mount = (container.volumeMounts as any[]).find((m) => configPath.startsWith(`${m.mountPath as string}/`));
  assert.ok(mount, `${configPath} is on a mounted volume`);
  const json = configMap.data[path.basename(configPath)] as string;
  const config = compileServerConfig(JSON.parse(json));
  assert.equal(config.port, container.ports[0].containerPort);
  assert.equal(config.host, '0.0.0.0', 'reachable from the Service');
  assert.ok((container.volumeMounts as any[]).some((m) => m.mountPath === config.dataDir && m.readOnly !== true), 'dataDir is a writable volume');
  assert.equal(config.databaseUrl !== undefined && new URL(config.databaseUrl).password, '', 'no password in the ConfigMap (PGPASSWORD from the Secret)');
  assert.equal(config.artifactStore.kind, 's3');
  assert.equal(config.runtime.kind, 'kubernetes');
  if (config.runtime.kind !== 'kubernetes') return;
  // Replica pods admit connections only from pods with these labels: the server's.
  assert.deepEqual({ ...config.runtime.serverPodLabels }, deployment.spec.template.metadata.labels);
  // Replicas go into the namespace the manifests create (the Role grants nothing elsewhere).
  assert.equal(config.runtime.namespace, kustomization.namespace);
  assert.equal(config.runtime.image, container.image, 'replicas run the server image');
});

test('Dockerfile: every COPY source exists, .dockerignore keeps them, the entrypoint is the built CLI', async () => {
  const text = await fsp.readFile(path.join(ROOT, 'Dockerfile'), 'utf8');
  // Continuation lines joined: one instruction per line.
  const lines = text.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  const stages = lines.filter((l) => /^FROM /i.test(l));
  assert.equal(stages.length, 2, 'a build stage and a runtime stage');
  // Node 20 (package.json engines): the build stage's image, and the runtime stage's by default
  // (a GPU build passes NVIDIA's CUDA image as RUNTIME_BASE and gets the same node binary).
  assert.ok(stages[0]?.startsWith('FROM node:20-bookworm-slim AS build'), stages[0]);
  assert.equal(stages[1], 'FROM ${RUNTIME_BASE} AS runtime');
  assert.ok(lines.includes('ARG RUNTIME_BASE=node:20-bookworm-slim'), 'the runtime base defaults to the node image');
  assert.ok(lines.indexOf('ARG RUNTIME_BASE=node:20-bookworm-slim') < lines.findIndex((l) => /^FROM /.test(l)), 'an ARG used in FROM is declared before the first FROM');
  assert.ok(lines.includes('COPY --from=build /usr/local/bin/node /usr/local/bin/node'), 'the runtime stage has the build stage\'s node');
  const ignored = (await fsp.readFile(path.join(ROOT, '.dockerignore'), 'utf8')).split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  const contextCopies = lines.filter((l) => /^COPY /i.test(l) && !/--from=/.test(l));
  assert.ok(contextCopies.length > 0);
  for (const copy of contextCopies) {
    const sources = copy.split(/\s+/).slice(1, -1);
    for (const src of sources) {
      assert.ok(fs.existsSync(path.join(ROOT, src)), `COPY source ${src} exists`);
      assert.ok(!ignored.includes(src.replace(/\/$/, '')), `COPY source ${src} is not in .dockerignore`);
    }
  }
  // What the runtime stage copies from the build stage are build outputs (dist/src, ui/dist) or
  // sources the build stage received.
  for (const copy of lines.filter((l) => /^COPY --from=build /.test(l))) {
    const src = copy.split(/\s+/)[2]!.replace(/^\/app\//, '');
    const built = ['dist/src', 'ui/dist', 'node_modules', '/usr/local/bin/node'].includes(src);
    assert.ok(built || contextCopies.some((c) => c.split(/\s+/).slice(1, -1).includes(src)), `${src} is built or copied in the build stage`);
  }
  const entrypoint = JSON.parse(lines.find((l) => l.startsWith('ENTRYPOINT '))!.slice('ENTRYPOINT '.length)) as string[];
  assert.deepEqual(entrypoint, ['node', '/app/bin/ferry.js']);
  // bin/ferry.js loads the compiled CLI, which this test's own build produced.
  assert.match(await fsp.readFile(path.join(ROOT, 'bin', 'ferry.js'), 'utf8'), /\.\.\/dist\/src\/cli\/main\.js/);
  assert.ok(fs.existsSync(path.join(ROOT, 'dist', 'src', 'cli', 'main.js')));
  const cmd = JSON.parse(lines.find((l) => l.startsWith('CMD '))!.slice('CMD '.length)) as string[];
  assert.equal(cmd[0], 'server');
  assert.match(lines.find((l) => l.startsWith('USER '))!, /^USER [1-9]\d*:[1-9]\d*$/, 'a numeric non-root user (runAsNonRoot can check it)');
});

test('a server restarted in the same pod (same pid, data directory kept) takes over its own stale lock', async () => {
  // In a container the server is pid 1 every time; the emptyDir data directory outlives a container
  // restart, and with it the lock file naming pid 1.
  await withTempDir(async (dataDir) => {
    await fsp.writeFile(path.join(dataDir, 'server.pid'), String(process.pid));
    const server = await startTestServer(dataDir);
    try {
      assert.equal(await fsp.readFile(path.join(dataDir, 'server.pid'), 'utf8'), String(process.pid));
      // While it runs, the same process still cannot start a second server on that directory.
      await assert.rejects(startTestServer(dataDir), /Another Ferry server \(pid \d+\) is using the data directory/);
    } finally {
      await server.close();
    }
  });
});
