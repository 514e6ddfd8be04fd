/**
 * A Kubernetes API **contract double**: not Kubernetes, but an HTTP server on 127.0.0.1:0 that
 * honours the semantics of the Kubernetes API that Ferry relies on, for the kinds Ferry uses, so the
 * Kubernetes runtime (and leader election, EndpointSlice discovery) can be tested with the real
 * client (`@kubernetes/client-node`) against real processes, without a cluster. An opt-in e2e test
 * runs the same code against a real cluster.
 *
 * API semantics honoured (core/v1 pods, services, events, configmaps; apps/v1 deployments with the
 * scale and status subresources; networking.k8s.io/v1 networkpolicies; policy/v1
 * poddisruptionbudgets; discovery.k8s.io/v1 endpointslices; coordination.k8s.io/v1 leases;
 * events.k8s.io/v1 events), namespaced and all-namespace paths:
 * - create: POST; `generateName`; 409 `AlreadyExists`. get / delete: 404 `NotFound`. Errors are
 *   `Status` objects (`kind: Status`, `reason`, `code`, `details`).
 * - list with `labelSelector` (equality and set-based) and `fieldSelector` (`metadata.name`,
 *   `metadata.namespace`); the list's `metadata.resourceVersion` is the store's current one.
 * - watch (`?watch=true`): JSON lines `ADDED`/`MODIFIED`/`DELETED`. Without `resourceVersion` (or
 *   "0") it first sends `ADDED` for every matching object; with one it replays the events after
 *   it. A resourceVersion older than the retained history (`historyLimit` events) gets what the
 *   API server's watch cache sends: HTTP 200 with one `ERROR` event holding a `Status` with code
 *   410 (`Expired`), then the stream ends. `timeoutSeconds` ends a watch.
 * - patch: `application/merge-patch+json` (RFC 7386), `application/strategic-merge-patch+json`
 *   (treated as a merge patch: enough for the maps Ferry patches), `application/json-patch+json`
 *   (RFC 6902). replace (PUT): a `metadata.resourceVersion` that is not the current one → 409
 *   `Conflict` (also for a patch that carries one). `metadata.generation` counts spec changes.
 * - delete: pods are deleted gracefully (a `deletionTimestamp`, the container is sent SIGTERM and
 *   killed after `terminationGracePeriodSeconds`, then the pod goes); `gracePeriodSeconds=0`
 *   removes at once. Other kinds go at once; a Deployment's pods are deleted with it (garbage
 *   collection by owner reference, whatever `propagationPolicy` says).
 * - Not honoured: `dryRun` (the change is made), server-side apply, authentication and RBAC (any
 *   token is accepted), admission (Pod Security), field validation beyond names; objects are
 *   JSON only.
 *
 * Controllers simulated, level-triggered after every change:
 * - Deployment → pods (no ReplicaSets): creates pods from the template until `spec.replicas` pods
 *   are not terminating; deletes the surplus in the ReplicaSet controller's order (not ready
 *   first, then the lowest `controller.kubernetes.io/pod-deletion-cost`, then the newest); keeps
 *   `status` (replicas, readyReplicas, availableReplicas, updatedReplicas, observedGeneration).
 *   A template change does not roll pods (Ferry never changes a template; a real cluster would).
 * - A fake kubelet that runs each pod's first container as a real child process: `command`
 *   (else the image's entrypoint from `images`) + `args`, `$(VAR)` references expanded as
 *   Kubernetes does, env with `value` and `valueFrom.fieldRef` (`status.podIP`, `metadata.name`,
 *   `metadata.namespace`). Each pod gets its own loopback address as its pod IP, 127.A.B.N with A.B
 *   drawn at random per double (so doubles of tests running side by side, or of other checkouts on
 *   the same machine, do not share addresses), so all pods may listen on the same port. Not emulated: a container file system. Each `emptyDir`
 *   volume is a fresh directory on this machine, and an arg or env value that starts with its
 *   `mountPath` is rewritten to that directory; other mounts, the security context's uid and
 *   read-only root are not enforced (the process runs as the test's user).
 *   It probes the readiness probe's `httpGet` path every `probeIntervalMs` to set the `Ready` and
 *   `ContainersReady` conditions; kills a container whose resident memory exceeds its
 *   `resources.limits.memory` (reason `OOMKilled`, exit code 137, as the kernel's OOM killer
 *   would); records each termination in `lastState.terminated` (exit code, reason
 *   `Error`/`Completed`/`OOMKilled`, with `terminationMessagePolicy: FallbackToLogsOnError` the
 *   message is the log's tail) and restarts the container (restartPolicy Always) after a
 *   back-off (`restartBackoffMs`, doubling, in state `waiting: CrashLoopBackOff`), counting
 *   `restartCount`. Pod logs (`/log`, `previous`, `tailLines`, `limitBytes`) are served from the
 *   captured stdout and stderr. Liveness probes are not run.
 * - EndpointSlices for Services with a selector (one slice per Service, with the Service's labels and
 *   `kubernetes.io/service-name`), listing the matching pods with an IP: `ready`, `serving`,
 *   `terminating` conditions and the Service's ports (named target ports resolved).
 *
 * `kubeconfig()` gives a kubeconfig (JSON is valid YAML) that `KubeConfig.loadFromString` reads.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fsp from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

/** A Kubernetes object as stored: any JSON with metadata. */
export type KubeObject = Record<string, any> & { metadata: Record<string, any> };

interface ResourceType {
  plural: string;
  group: string;
  version: string;
  kind: string;
  namespaced: boolean;
  /** Has a status subresource: writes to the object keep its status, writes to /status keep the rest. */
  status?: boolean;
}

const RESOURCES: ResourceType[] = [
  { plural: 'pods', group: '', version: 'v1', kind: 'Pod', namespaced: true, status: true },
  { plural: 'services', group: '', version: 'v1', kind: 'Service', namespaced: true, status: true },
  { plural: 'events', group: '', version: 'v1', kind: 'Event', namespaced: true },
  { plural: 'configmaps', group: '', version: 'v1', kind: 'ConfigMap', namespaced: true },
  { plural: 'deployments', group: 'apps', version: 'v1', kind: 'Deployment', namespaced: true, status: true },
  { plural: 'networkpolicies', group: 'networking.k8s.io', version: 'v1', kind: 'NetworkPolicy', namespaced: true },
  { plural: 'poddisruptionbudgets', group: 'policy', version: 'v1', kind: 'PodDisruptionBudget', namespaced: true, status: true },
  { plural: 'endpointslices', group: 'discovery.k8s.io', version: 'v1', kind: 'EndpointSlice', namespaced: true },
  { plural: 'leases', group: 'coordination.k8s.io', version: 'v1', kind: 'Lease', namespaced: true },
  { plural: 'events', group: 'events.k8s.io', version: 'v1', kind: 'Event', namespaced: true },
];

const DELETION_COST = 'controller.kubernetes.io/pod-deletion-cost';
const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
/** FallbackToLogsOnError: Kubernetes takes at most 80 lines / 2048 bytes of the log's tail. */
const TERMINATION_LOG_LINES = 80;
const TERMINATION_LOG_BYTES = 2048;
/** Captured output kept per container instance. */
const MAX_LOG_BYTES = 1024 * 1024;

export interface KubeApiDoubleOptions {
  /** Entrypoints of images, for containers without `command`: e.g. `{ 'ferry:test': [process.execPath, 'bin/ferry.js'] }`. */
  images?: Record<string, string[]>;
  /** Events kept for watches from a resourceVersion; older ones get 410 Expired. Default 10,000. */
  historyLimit?: number;
  /** How often the fake kubelet probes readiness and memory; default 100 ms (fast tests, whatever `periodSeconds` says). */
  probeIntervalMs?: number;
  /** First restart back-off of a crashed container, doubling per restart up to 5 s; default 200 ms (Kubernetes: 10 s to 5 min). */
  restartBackoffMs?: number;
  /** Environment every container starts with, before its own `env`; default PATH and HOME of this process. */
  baseEnv?: Record<string, string>;
  /**
   * `nvidia.com/gpu` the one node has; default unlimited. A pod asking for more than is free stays
   * Pending with `PodScheduled=False` (reason Unschedulable), as the scheduler leaves it.
   */
  gpus?: number;
}

interface WatchEvent {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  resource: ResourceType;
  obj: KubeObject;
}

interface Watcher {
  resource: ResourceType;
  namespace: string | undefined;
  matches: (obj: KubeObject) => boolean;
  res: http.ServerResponse;
}

/** The fake kubelet's state of one pod. */
interface PodRuntime {
  key: string;
  ip: string;
  dir: string;
  child: ChildProcess | undefined;
  /** Output of the running (or last) container instance, and of the one before. */
  log: Buffer[];
  logBytes: number;
  previousLog: string;
  startedAt: string;
  restartCount: number;
  oomKilled: boolean;
  restartTimer: NodeJS.Timeout | undefined;
  killTimer: NodeJS.Timeout | undefined;
  probing: boolean;
  ready: boolean;
  terminating: boolean;
  exited: Promise<void>;
}

class ApiError extends Error {
  constructor(readonly code: number, readonly reason: string, message: string, readonly details: Record<string, unknown> = {}) {
    super(message);
  }
}

export class KubeApiDouble {
  private readonly objects = new Map<string, KubeObject>();
  private readonly history: WatchEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private readonly pods = new Map<string, PodRuntime>();
  /** Containers of deleted pods, until their process is gone. */
  private readonly stopping = new Set<PodRuntime>();
  private rv = 1;
  /** The resourceVersion of the oldest event dropped from `history` (0: none dropped). */
  private compactedRv = 0;
  /** Pod IPs: 127.A.B.N, A.B random per double, N counting from 2 (into B+1 past 254). */
  private readonly ipBase = (1 + randomBytes(1)[0]! % 254) * 256 + randomBytes(1)[0]!;
  private podCount = 0;
  private reconcileQueued = false;
  private closed = false;
  private readonly ticker: NodeJS.Timeout;
  readonly url: string;

  private constructor(private readonly server: http.Server, private readonly root: string, private readonly opts: Required<KubeApiDoubleOptions>) {
    const addr = server.address();
    this.url = `http://127.0.0.1:${typeof addr === 'object' && addr !== null ? addr.port : 0}`;
    this.ticker = setInterval(() => void this.probeAll(), opts.probeIntervalMs);
  }

  static async start(options: KubeApiDoubleOptions = {}): Promise<KubeApiDouble> {
    const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'kube-double-'));
    const server = http.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const opts: Required<KubeApiDoubleOptions> = {
      images: {}, historyLimit: 10_000, probeIntervalMs: 100, restartBackoffMs: 200, gpus: Number.POSITIVE_INFINITY,
      baseEnv: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/' }, ...options,
    };
    const double = new KubeApiDouble(server, root, opts);
    server.on('request', (req, res) => void double.handle(req, res));
    return double;
  }

  /** A kubeconfig for client-node pointing at this double, with `namespace` as the context's default. */
  kubeconfig(namespace = 'default'): string {
    return JSON.stringify({
      apiVersion: 'v1', kind: 'Config', 'current-context': 'double',
      // client-node refuses plain HTTP unless TLS verification is off (there is no TLS to verify).
      clusters: [{ name: 'double', cluster: { server: this.url, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'double', user: { token: 'contract-double' } }],
      contexts: [{ name: 'double', context: { cluster: 'double', user: 'double', namespace } }],
    });
  }

  /** The stored objects of a kind (by plural, e.g. "pods", "deployments"), copies. */
  list(plural: string, namespace?: string): KubeObject[] {
    return [...this.objects.entries()]
      .filter(([k, o]) => k.startsWith(`${this.typeOf(plural).group}/${plural}/`) && (namespace === undefined || o.metadata.namespace === namespace))
      .map(([, o]) => structuredClone(o));
  }

  /** The pid of a pod's running container, if any. */
  containerPid(namespace: string, podName: string): number | undefined {
    return this.pods.get(`/pods/${namespace}/${podName}`)?.child?.pid;
  }

  /** Sends `signal` to a pod's running container, as a crash (SIGKILL) or an outside kill would. */
  killContainer(namespace: string, podName: string, signal: NodeJS.Signals = 'SIGKILL'): void {
    const child = this.pods.get(`/pods/${namespace}/${podName}`)?.child;
    if (child === undefined) throw new Error(`pod ${namespace}/${podName} has no running container`);
    child.kill(signal);
  }

  /** Ends every open watch, as an API server does now and then (clients must list and watch again). */
  endWatches(): void {
    for (const w of this.watchers) w.res.end();
    this.watchers.clear();
  }

  /** Stops every container, ends every watch and the server, and removes the pods' directories. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.ticker);
    this.endWatches();
    await Promise.all([...this.pods.values(), ...this.stopping].map(async (p) => {
      clearTimeout(p.restartTimer);
      clearTimeout(p.killTimer);
      p.child?.kill('SIGKILL');
      await p.exited;
    }));
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await fsp.rm(this.root, { recursive: true, force: true });
  }

  // --- HTTP ---

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? '/', 'http://double');
      const route = this.route(url.pathname);
      const body = req.method === 'GET' || req.method === 'DELETE' ? await readJson(req, true) : await readJson(req, false);
      const q = url.searchParams;
      const { resource, namespace, name, sub } = route;
      if (name === undefined) {
        if (req.method === 'GET' && (q.get('watch') === 'true' || q.get('watch') === '1')) return this.watch(res, resource, namespace, q);
        if (req.method === 'GET') return send(res, 200, this.listObjects(resource, namespace, q));
        if (req.method === 'POST') {
          if (namespace === undefined) throw new ApiError(405, 'MethodNotAllowed', 'create needs a namespace');
          return send(res, 201, this.create(resource, namespace, body));
        }
        if (req.method === 'DELETE') {
          const items = this.listObjects(resource, namespace, q).items as KubeObject[];
          for (const o of items) this.deleteObject(resource, o.metadata.namespace, o.metadata.name, q, body);
          return send(res, 200, { kind: `${resource.kind}List`, apiVersion: apiVersionOf(resource), metadata: { resourceVersion: String(this.rv) }, items });
        }
        throw new ApiError(405, 'MethodNotAllowed', `${req.method ?? ''} is not allowed on a collection`);
      }
      if (namespace === undefined) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
      if (sub === 'log' && resource.plural === 'pods' && req.method === 'GET') return this.podLog(res, namespace, name, q);
      if (sub === 'scale' && resource.plural === 'deployments') return send(res, 200, this.scale(req.method ?? 'GET', namespace, name, body, req.headers['content-type']));
      if (sub !== undefined && sub !== 'status') throw new ApiError(404, 'NotFound', `no subresource ${sub} of ${resource.plural}`);
      switch (req.method) {
        case 'GET': return send(res, 200, this.get(resource, namespace, name));
        case 'PUT': return send(res, 200, this.replace(resource, namespace, name, body, sub === 'status'));
        case 'PATCH': return send(res, 200, this.patch(resource, namespace, name, body, req.headers['content-type'], sub === 'status'));
        case 'DELETE': return send(res, 200, this.deleteObject(resource, namespace, name, q, body));
        default: throw new ApiError(405, 'MethodNotAllowed', `${req.method ?? ''} is not allowed`);
      }
    } catch (err) {
      const e = err instanceof ApiError ? err : new ApiError(500, 'InternalError', err instanceof Error ? err.message : String(err));
      if (!res.headersSent) send(res, e.code, statusObject(e));
      else res.end();
    }
  }

  private route(pathname: string): { resource: ResourceType; namespace: string | undefined; name: string | undefined; sub: string | undefined } {
    const segs = pathname.split('/').filter((s) => s !== '').map(decodeURIComponent);
    let group: string;
    let rest: string[];
    if (segs[0] === 'api' && segs[1] === 'v1') {
      group = '';
      rest = segs.slice(2);
    } else if (segs[0] === 'apis' && segs.length >= 3) {
      group = segs[1] ?? '';
      rest = segs.slice(3);
    } else {
      throw new ApiError(404, 'NotFound', `the server could not find the requested resource (${pathname})`);
    }
    let namespace: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const resource = RESOURCES.find((r) => r.group === group && r.plural === rest[0]);
    if (resource === undefined) throw new ApiError(404, 'NotFound', `the server could not find the requested resource (${pathname})`);
    return { resource, namespace, name: rest[1], sub: rest[2] };
  }

  private typeOf(plural: string): ResourceType {
    const t = RESOURCES.find((r) => r.plural === plural);
    if (t === undefined) throw new Error(`unknown resource ${plural}`);
    return t;
  }

  // --- store ---

  private key(resource: ResourceType, namespace: string, name: string): string {
    return `${resource.group}/${resource.plural}/${namespace}/${name}`;
  }

  private get(resource: ResourceType, namespace: string, name: string): KubeObject {
    const obj = this.objects.get(this.key(resource, namespace, name));
    if (obj === undefined) throw notFound(resource, name);
    return structuredClone(obj);
  }

  private listObjects(resource: ResourceType, namespace: string | undefined, q: URLSearchParams): KubeObject {
    const matches = selectorFilter(q);
    const items = [...this.objects.entries()]
      .filter(([k, o]) => k.startsWith(`${resource.group}/${resource.plural}/`) && (namespace === undefined || o.metadata.namespace === namespace) && matches(o))
      .map(([, o]) => structuredClone(o));
    return { kind: `${resource.kind}List`, apiVersion: apiVersionOf(resource), metadata: { resourceVersion: String(this.rv) }, items };
  }

  private create(resource: ResourceType, namespace: string, body: KubeObject | undefined): KubeObject {
    if (body === undefined || typeof body.metadata !== 'object' || body.metadata === null) throw new ApiError(400, 'BadRequest', 'the body must be an object with metadata');
    const meta = body.metadata;
    if (meta.namespace !== undefined && meta.namespace !== namespace) {
      throw new ApiError(400, 'BadRequest', `the namespace of the provided object (${String(meta.namespace)}) does not match the namespace sent on the request (${namespace})`);
    }
    const name: unknown = meta.name ?? (typeof meta.generateName === 'string' ? `${meta.generateName}${randomBytes(3).toString('hex').slice(0, 5)}` : undefined);
    if (typeof name !== 'string' || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(name) || name.length > 253) {
      throw new ApiError(422, 'Invalid', `${resource.kind} "${String(name)}" is invalid: metadata.name: a lowercase RFC 1123 subdomain is required`);
    }
    const key = this.key(resource, namespace, name);
    if (this.objects.has(key)) throw new ApiError(409, 'AlreadyExists', `${resource.plural} "${name}" already exists`, { name, kind: resource.plural });
    const obj: KubeObject = {
      ...structuredClone(body), apiVersion: apiVersionOf(resource), kind: resource.kind,
      metadata: {
        ...structuredClone(meta), name, namespace, uid: randomUUID(), creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
        ...('spec' in body ? { generation: 1 } : {}),
      },
    };
    delete obj.metadata.resourceVersion;
    if (resource.plural === 'pods') obj.status = { phase: 'Pending', conditions: [], qosClass: 'Burstable' };
    if (resource.plural === 'services') obj.spec = { clusterIP: `10.96.0.${(this.rv % 250) + 2}`, type: 'ClusterIP', ...obj.spec };
    return this.write(resource, 'ADDED', key, obj);
  }

  /** Stores `obj` under a new resourceVersion and tells the watchers and the controllers. */
  private write(resource: ResourceType, type: WatchEvent['type'], key: string, obj: KubeObject): KubeObject {
    this.rv++;
    obj.metadata.resourceVersion = String(this.rv);
    if (type === 'DELETED') this.objects.delete(key);
    else this.objects.set(key, obj);
    const event: WatchEvent = { rv: this.rv, type, resource, obj: structuredClone(obj) };
    this.history.push(event);
    while (this.history.length > this.opts.historyLimit) this.compactedRv = this.history.shift()?.rv ?? this.compactedRv;
    for (const w of this.watchers) this.deliver(w, event);
    this.queueReconcile();
    return structuredClone(obj);
  }

  private replace(resource: ResourceType, namespace: string, name: string, body: KubeObject | undefined, statusOnly: boolean): KubeObject {
    const key = this.key(resource, namespace, name);
    const current = this.objects.get(key);
    if (current === undefined) throw notFound(resource, name);
    if (body === undefined || typeof body.metadata !== 'object') throw new ApiError(400, 'BadRequest', 'the body must be an object with metadata');
    if (body.metadata.name !== undefined && body.metadata.name !== name) throw new ApiError(400, 'BadRequest', `the name of the object (${String(body.metadata.name)}) does not match the name on the URL (${name})`);
    checkVersion(resource, name, current, body.metadata.resourceVersion);
    return this.update(resource, key, current, body, statusOnly);
  }

  /** Writes `next` over `current`: identity fields kept, status or the rest kept per subresource, generation counted. */
  private update(resource: ResourceType, key: string, current: KubeObject, next: KubeObject, statusOnly: boolean): KubeObject {
    let obj: KubeObject;
    if (statusOnly) {
      obj = { ...structuredClone(current), status: structuredClone(next.status) };
    } else {
      obj = { ...structuredClone(next), apiVersion: current.apiVersion, kind: current.kind };
      if (resource.status === true) obj.status = structuredClone(current.status);
    }
    obj.metadata = {
      ...(statusOnly ? structuredClone(current.metadata) : structuredClone(next.metadata)),
      name: current.metadata.name, namespace: current.metadata.namespace, uid: current.metadata.uid, creationTimestamp: current.metadata.creationTimestamp,
    };
    if (current.metadata.deletionTimestamp !== undefined) obj.metadata.deletionTimestamp = current.metadata.deletionTimestamp;
    if (current.metadata.generation !== undefined) {
      obj.metadata.generation = JSON.stringify(current.spec) === JSON.stringify(obj.spec) ? current.metadata.generation : current.metadata.generation + 1;
    }
    return this.write(resource, 'MODIFIED', key, obj);
  }

  private patch(resource: ResourceType, namespace: string, name: string, body: unknown, contentType: string | undefined, statusOnly: boolean): KubeObject {
    const key = this.key(resource, namespace, name);
    const current = this.objects.get(key);
    if (current === undefined) throw notFound(resource, name);
    const next = applyPatch(current, body, contentType);
    checkVersion(resource, name, current, next.metadata?.resourceVersion === current.metadata.resourceVersion ? undefined : next.metadata?.resourceVersion);
    return this.update(resource, key, current, next, statusOnly);
  }

  private deleteObject(resource: ResourceType, namespace: string, name: string, q: URLSearchParams, body: KubeObject | undefined): KubeObject {
    const key = this.key(resource, namespace, name);
    const current = this.objects.get(key);
    if (current === undefined) throw notFound(resource, name);
    const precondition = body?.preconditions?.resourceVersion as unknown;
    if (typeof precondition === 'string') checkVersion(resource, name, current, precondition);
    const graceParam = q.get('gracePeriodSeconds') ?? (body?.gracePeriodSeconds as unknown);
    if (resource.plural === 'pods' && Number(graceParam ?? 1) !== 0) {
      if (current.metadata.deletionTimestamp !== undefined) return structuredClone(current);
      const grace = Number(graceParam ?? current.spec?.terminationGracePeriodSeconds ?? 30);
      const obj = structuredClone(current);
      obj.metadata.deletionTimestamp = new Date().toISOString();
      obj.metadata.deletionGracePeriodSeconds = grace;
      const written = this.write(resource, 'MODIFIED', key, obj);
      this.terminatePod(key, grace * 1000);
      return written;
    }
    if (resource.plural === 'pods') this.terminatePod(key, 0);
    return this.write(resource, 'DELETED', key, structuredClone(current));
  }

  // --- watch ---

  private watch(res: http.ServerResponse, resource: ResourceType, namespace: string | undefined, q: URLSearchParams): void {
    const matches = selectorFilter(q);
    const w: Watcher = { resource, namespace, matches, res };
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    // A client's watch call resolves on the response head: send it before any event.
    res.flushHeaders();
    const from = q.get('resourceVersion');
    if (from === null || from === '' || from === '0') {
      for (const [k, o] of this.objects) {
        if (k.startsWith(`${resource.group}/${resource.plural}/`) && (namespace === undefined || o.metadata.namespace === namespace) && matches(o)) {
          res.write(JSON.stringify({ type: 'ADDED', object: o }) + '\n');
        }
      }
    } else {
      const fromRv = Number(from);
      if (!Number.isInteger(fromRv) || fromRv < this.compactedRv) {
        res.end(JSON.stringify({ type: 'ERROR', object: statusObject(new ApiError(410, 'Expired', `too old resource version: ${from} (${this.compactedRv + 1})`)) }) + '\n');
        return;
      }
      for (const e of this.history) if (e.rv > fromRv) this.deliver(w, e);
    }
    this.watchers.add(w);
    const timeoutS = Number(q.get('timeoutSeconds') ?? 0);
    const timer = timeoutS > 0 ? setTimeout(() => res.end(), timeoutS * 1000) : undefined;
    res.once('close', () => {
      clearTimeout(timer);
      this.watchers.delete(w);
    });
  }

  private deliver(w: Watcher, e: WatchEvent): void {
    if (e.resource !== w.resource || (w.namespace !== undefined && e.obj.metadata.namespace !== w.namespace) || !w.matches(e.obj)) return;
    w.res.write(JSON.stringify({ type: e.type, object: e.obj }) + '\n');
  }

  // --- subresources ---

  private scale(method: string, namespace: string, name: string, body: unknown, contentType: string | undefined): KubeObject {
    const deployments = this.typeOf('deployments');
    const key = this.key(deployments, namespace, name);
    const d = this.objects.get(key);
    if (d === undefined) throw notFound(deployments, name);
    const scaleOf = (dep: KubeObject): KubeObject => ({
      kind: 'Scale', apiVersion: 'autoscaling/v1',
      metadata: { name, namespace, uid: dep.metadata.uid, resourceVersion: dep.metadata.resourceVersion, creationTimestamp: dep.metadata.creationTimestamp },
      spec: { replicas: dep.spec?.replicas ?? 1 },
      status: { replicas: dep.status?.replicas ?? 0, selector: selectorString(dep.spec?.selector?.matchLabels ?? {}) },
    });
    if (method === 'GET') return scaleOf(d);
    if (method !== 'PUT' && method !== 'PATCH') throw new ApiError(405, 'MethodNotAllowed', `${method} is not allowed on scale`);
    const current = scaleOf(d);
    const next = method === 'PUT' ? body as KubeObject : applyPatch(current, body, contentType);
    if (next === undefined || typeof next.spec?.replicas !== 'number' || !Number.isInteger(next.spec.replicas) || next.spec.replicas < 0) {
      throw new ApiError(422, 'Invalid', `Scale "${name}" is invalid: spec.replicas: must be an integer ≥ 0`);
    }
    checkVersion(deployments, name, d, next.metadata?.resourceVersion === current.metadata.resourceVersion ? undefined : next.metadata?.resourceVersion);
    const updated = structuredClone(d);
    updated.spec = { ...updated.spec, replicas: next.spec.replicas };
    return scaleOf(this.update(deployments, key, d, updated, false));
  }

  private podLog(res: http.ServerResponse, namespace: string, name: string, q: URLSearchParams): void {
    this.get(this.typeOf('pods'), namespace, name);
    const p = this.pods.get(`/pods/${namespace}/${name}`);
    let text = p === undefined ? '' : q.get('previous') === 'true' ? p.previousLog : Buffer.concat(p.log).toString('utf8');
    const tail = q.get('tailLines');
    if (tail !== null) {
      const lines = text.split('\n');
      if (lines.at(-1) === '') lines.pop();
      text = lines.slice(-Number(tail)).map((l) => `${l}\n`).join('');
    }
    const limit = q.get('limitBytes');
    const buf = Buffer.from(text);
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(limit === null ? buf : buf.subarray(0, Number(limit)));
  }

  // --- controllers ---

  private queueReconcile(): void {
    if (this.reconcileQueued || this.closed) return;
    this.reconcileQueued = true;
    setImmediate(() => {
      this.reconcileQueued = false;
      if (this.closed) return;
      this.reconcileDeployments();
      this.reconcilePods();
      this.reconcileEndpointSlices();
    });
  }

  private reconcileDeployments(): void {
    const podsType = this.typeOf('pods');
    const deployments = this.typeOf('deployments');
    const pods = [...this.objects.entries()].filter(([k]) => k.startsWith('/pods/'));
    for (const [dKey, d] of [...this.objects.entries()].filter(([k]) => k.startsWith('apps/deployments/'))) {
      const owned = pods.filter(([, p]) => (p.metadata.ownerReferences as KubeObject[] | undefined)?.some((r) => r.uid === d.metadata.uid));
      const live = owned.filter(([, p]) => p.metadata.deletionTimestamp === undefined);
      const want = Number(d.spec?.replicas ?? 1);
      for (let i = live.length; i < want; i++) {
        const template = structuredClone(d.spec?.template ?? {}) as KubeObject;
        this.create(podsType, d.metadata.namespace, {
          ...template, apiVersion: 'v1', kind: 'Pod',
          metadata: {
            ...template.metadata, generateName: `${d.metadata.name}-`,
            ownerReferences: [{ apiVersion: 'apps/v1', kind: 'Deployment', name: d.metadata.name, uid: d.metadata.uid, controller: true, blockOwnerDeletion: true }],
          },
        });
      }
      if (live.length > want) {
        // The ReplicaSet controller's order (simplified): not ready first, then the lowest
        // deletion cost, then the most recently created.
        const ranked = [...live].sort(([, a], [, b]) => (Number(isReady(a)) - Number(isReady(b)))
          || (deletionCost(a) - deletionCost(b))
          || String(b.metadata.creationTimestamp).localeCompare(String(a.metadata.creationTimestamp))
          || Number(b.metadata.resourceVersion) - Number(a.metadata.resourceVersion));
        for (const [, p] of ranked.slice(0, live.length - want)) this.deleteObject(podsType, p.metadata.namespace, p.metadata.name, new URLSearchParams(), undefined);
      }
      const ready = live.filter(([, p]) => isReady(p)).length;
      const status = { observedGeneration: d.metadata.generation, replicas: live.length, updatedReplicas: live.length, readyReplicas: ready, availableReplicas: ready, unavailableReplicas: Math.max(0, live.length - ready) };
      if (JSON.stringify(status) !== JSON.stringify(d.status)) this.write(deployments, 'MODIFIED', dKey, { ...structuredClone(d), status });
    }
    // Garbage collection: pods whose owning Deployment is gone.
    const uids = new Set([...this.objects.entries()].filter(([k]) => k.startsWith('apps/deployments/')).map(([, d]) => d.metadata.uid as string));
    for (const [, p] of pods) {
      const owner = (p.metadata.ownerReferences as KubeObject[] | undefined)?.find((r) => r.kind === 'Deployment');
      if (owner !== undefined && !uids.has(owner.uid) && p.metadata.deletionTimestamp === undefined) {
        this.deleteObject(podsType, p.metadata.namespace, p.metadata.name, new URLSearchParams(), undefined);
      }
    }
  }

  /** The fake kubelet: starts a container for every new pod. */
  private reconcilePods(): void {
    let gpusFree = this.opts.gpus;
    for (const rt of this.pods.values()) {
      const pod = this.currentPod(rt);
      if (pod !== undefined) gpusFree -= gpusOf(pod);
    }
    for (const [key, p] of this.objects) {
      if (!key.startsWith('/pods/') || this.pods.has(podKey(p)) || p.metadata.deletionTimestamp !== undefined) continue;
      const gpus = gpusOf(p);
      if (gpus > gpusFree) {
        this.markUnschedulable(key, p, `0/1 nodes are available: 1 Insufficient nvidia.com/gpu.`);
        continue;
      }
      gpusFree -= gpus;
      void this.startPod(p);
    }
  }

  /** Leaves a pod Pending with the scheduler's condition (written once). */
  private markUnschedulable(key: string, pod: KubeObject, message: string): void {
    const conditions = (pod.status?.conditions as KubeObject[] | undefined) ?? [];
    if (conditions.some((c) => c.type === 'PodScheduled')) return;
    const next = structuredClone(pod);
    next.status = { ...next.status, phase: 'Pending', conditions: [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message, lastTransitionTime: new Date().toISOString() }] };
    this.write(this.typeOf('pods'), 'MODIFIED', key, next);
  }

  private async startPod(pod: KubeObject): Promise<void> {
    const rt: PodRuntime = {
      key: podKey(pod), ip: this.nextPodIp(), dir: path.join(this.root, `${pod.metadata.namespace}-${pod.metadata.name}`),
      child: undefined, log: [], logBytes: 0, previousLog: '', startedAt: '', restartCount: 0, oomKilled: false,
      restartTimer: undefined, killTimer: undefined, probing: false, ready: false, terminating: false, exited: Promise.resolve(),
    };
    this.pods.set(rt.key, rt);
    await fsp.mkdir(rt.dir, { recursive: true });
    this.patchPodStatus(rt, { phase: 'Pending', podIP: rt.ip, podIPs: [{ ip: rt.ip }], hostIP: '127.0.0.1', startTime: new Date().toISOString() }, { spec: { nodeName: 'double-node' } });
    await this.runContainer(rt);
  }

  private nextPodIp(): string {
    const n = this.podCount++;
    const ab = (this.ipBase + Math.floor(n / 253)) % 65536;
    return `127.${Math.max(1, ab >> 8)}.${ab & 255}.${2 + (n % 253)}`;
  }

  private currentPod(rt: PodRuntime): KubeObject | undefined {
    const [ns, name] = rt.key.split('/').slice(2);
    return this.objects.get(`/pods/${ns ?? ''}/${name ?? ''}`);
  }

  private patchPodStatus(rt: PodRuntime, status: Record<string, unknown>, extra: Record<string, unknown> = {}): void {
    const pod = this.currentPod(rt);
    if (pod === undefined) return;
    const next = { ...structuredClone(pod), ...extra };
    if ('spec' in extra) next.spec = { ...pod.spec, ...(extra.spec as object) };
    next.status = { ...pod.status, ...status };
    this.write(this.typeOf('pods'), 'MODIFIED', `/pods/${pod.metadata.namespace}/${pod.metadata.name}`, next);
  }

  private async runContainer(rt: PodRuntime): Promise<void> {
    const pod = this.currentPod(rt);
    if (pod === undefined || rt.terminating || this.closed) return;
    const c = (pod.spec?.containers as KubeObject[] | undefined)?.[0];
    const entrypoint = c?.command as string[] | undefined ?? this.opts.images[String(c?.image)];
    if (c === undefined || entrypoint === undefined || entrypoint.length === 0) {
      this.setContainerState(rt, c, { waiting: { reason: 'ErrImagePull', message: `the contract double has no entrypoint for image ${String(c?.image)}` } }, false);
      return;
    }
    // Volumes: each emptyDir is a directory of this pod; paths under its mountPath point there.
    const mounts: Array<[string, string]> = [];
    for (const m of (c.volumeMounts as KubeObject[] | undefined) ?? []) {
      const volume = (pod.spec?.volumes as KubeObject[] | undefined)?.find((v) => v.name === m.name);
      if (volume?.emptyDir === undefined) continue;
      const dir = path.join(rt.dir, 'volumes', String(m.name));
      await fsp.mkdir(dir, { recursive: true });
      mounts.push([String(m.mountPath), dir]);
    }
    const mapPath = (v: string): string => {
      for (const [mountPath, dir] of mounts) if (v === mountPath || v.startsWith(`${mountPath}/`)) return dir + v.slice(mountPath.length);
      return v;
    };
    const env: Record<string, string> = { ...this.opts.baseEnv };
    for (const e of (c.env as KubeObject[] | undefined) ?? []) {
      const field = e.valueFrom?.fieldRef?.fieldPath as string | undefined;
      const value = field === 'status.podIP' ? rt.ip : field === 'metadata.name' ? pod.metadata.name : field === 'metadata.namespace' ? pod.metadata.namespace
        : expand(String(e.value ?? ''), env);
      env[String(e.name)] = mapPath(value);
    }
    const argv = [...entrypoint, ...((c.args as string[] | undefined) ?? [])].map((a, i) => (i < entrypoint.length && c.command === undefined ? a : mapPath(expand(a, env))));
    // The awaits above may have let close() run, or the pod be deleted: a process started now
    // would outlive the double (and keep the test process alive).
    if (this.closed || rt.terminating) return;
    rt.log = [];
    rt.logBytes = 0;
    rt.oomKilled = false;
    rt.ready = false;
    rt.startedAt = new Date().toISOString();
    const child = spawn(argv[0] ?? '', argv.slice(1), { cwd: rt.dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    rt.child = child;
    const capture = (chunk: Buffer): void => {
      rt.log.push(chunk);
      rt.logBytes += chunk.length;
      while (rt.logBytes > MAX_LOG_BYTES && rt.log.length > 1) rt.logBytes -= rt.log.shift()?.length ?? 0;
    };
    child.stdout.on('data', capture);
    child.stderr.on('data', capture);
    rt.exited = new Promise((resolve) => {
      child.once('error', (err) => capture(Buffer.from(`${err.message}\n`)));
      child.once('close', (code, signal) => {
        this.containerExited(rt, c, code, signal);
        resolve();
      });
    });
    this.setContainerState(rt, c, { running: { startedAt: rt.startedAt } }, false);
  }

  private setContainerState(rt: PodRuntime, c: KubeObject | undefined, state: KubeObject | Record<string, unknown>, ready: boolean, lastState?: Record<string, unknown>): void {
    const pod = this.currentPod(rt);
    if (pod === undefined) return;
    const previous = (pod.status?.containerStatuses as KubeObject[] | undefined)?.[0];
    const now = new Date().toISOString();
    const condition = (type: string, status: boolean): Record<string, string> => ({ type, status: status ? 'True' : 'False', lastTransitionTime: now });
    const running = 'running' in state;
    this.patchPodStatus(rt, {
      phase: rt.startedAt === '' ? 'Pending' : 'Running',
      conditions: [condition('PodScheduled', true), condition('Initialized', true), condition('ContainersReady', ready), condition('Ready', ready)],
      containerStatuses: [{
        name: c?.name ?? 'main', image: c?.image ?? '', imageID: '', containerID: rt.child?.pid === undefined ? undefined : `double://${rt.child.pid}`,
        ready, started: running, restartCount: rt.restartCount, state,
        lastState: lastState ?? previous?.lastState ?? {},
      }],
    });
  }

  private containerExited(rt: PodRuntime, c: KubeObject, code: number | null, signal: NodeJS.Signals | null): void {
    rt.child = undefined;
    rt.ready = false;
    const text = Buffer.concat(rt.log).toString('utf8');
    rt.previousLog = text;
    const exitCode = code ?? (signal === 'SIGKILL' ? 137 : signal === 'SIGTERM' ? 143 : 128);
    if (rt.terminating) return;
    const reason = rt.oomKilled ? 'OOMKilled' : exitCode === 0 ? 'Completed' : 'Error';
    const terminated: Record<string, unknown> = {
      exitCode, reason, startedAt: rt.startedAt, finishedAt: new Date().toISOString(), containerID: undefined,
      ...(signal === null ? {} : { signal: 0 }),
    };
    if (c.terminationMessagePolicy === 'FallbackToLogsOnError' && exitCode !== 0) terminated.message = logTail(text);
    rt.restartCount++;
    const backoffMs = Math.min(5000, this.opts.restartBackoffMs * 2 ** Math.min(rt.restartCount - 1, 10));
    this.setContainerState(rt, c, { waiting: { reason: 'CrashLoopBackOff', message: `back-off ${backoffMs}ms restarting failed container` } }, false, { terminated });
    rt.restartTimer = setTimeout(() => void this.runContainer(rt), backoffMs);
  }

  /** Stops a pod's container: SIGTERM, SIGKILL after `graceMs`; then the pod object goes. */
  private terminatePod(key: string, graceMs: number): void {
    const [, , ns, name] = key.split('/');
    const rt = this.pods.get(`/pods/${ns ?? ''}/${name ?? ''}`);
    const remove = (): void => {
      const current = this.objects.get(key);
      if (current !== undefined) this.write(this.typeOf('pods'), 'DELETED', key, structuredClone(current));
    };
    if (rt === undefined) {
      if (graceMs > 0) remove();
      return;
    }
    rt.terminating = true;
    clearTimeout(rt.restartTimer);
    this.pods.delete(rt.key);
    const finish = (): void => {
      clearTimeout(rt.killTimer);
      void fsp.rm(rt.dir, { recursive: true, force: true });
      if (graceMs > 0) remove();
    };
    if (rt.child === undefined) return finish();
    const child = rt.child;
    child.kill(graceMs > 0 ? 'SIGTERM' : 'SIGKILL');
    rt.killTimer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    // Kept reachable for close() until the process is gone.
    this.stopping.add(rt);
    void rt.exited.then(() => {
      this.stopping.delete(rt);
      finish();
    });
  }

  /** Readiness (the probe's httpGet on the pod IP) and memory (RSS against limits.memory) of running containers. */
  private async probeAll(): Promise<void> {
    await Promise.all([...this.pods.values()].map(async (rt) => {
      const child = rt.child;
      if (child === undefined || rt.probing || rt.terminating) return;
      const pod = this.currentPod(rt);
      const c = (pod?.spec?.containers as KubeObject[] | undefined)?.[0];
      if (pod === undefined || c === undefined) return;
      rt.probing = true;
      try {
        const limit = parseQuantity(c.resources?.limits?.memory);
        if (limit !== undefined && child.pid !== undefined) {
          const rss = await residentBytes(child.pid);
          if (rss !== undefined && rss > limit) {
            rt.oomKilled = true;
            child.kill('SIGKILL');
            return;
          }
        }
        const get = c.readinessProbe?.httpGet as KubeObject | undefined;
        let ready = true;
        if (get !== undefined) {
          const port = typeof get.port === 'number' ? get.port : Number((c.ports as KubeObject[] | undefined)?.find((p) => p.name === get.port)?.containerPort);
          ready = await probeHttp(rt.ip, port, String(get.path ?? '/'));
        }
        if (ready !== rt.ready && rt.child === child) {
          rt.ready = ready;
          this.setContainerState(rt, c, { running: { startedAt: rt.startedAt } }, ready);
        }
      } finally {
        rt.probing = false;
      }
    }));
  }

  private reconcileEndpointSlices(): void {
    const slices = this.typeOf('endpointslices');
    for (const [, svc] of [...this.objects.entries()].filter(([k]) => k.startsWith('/services/'))) {
      const selector = svc.spec?.selector as Record<string, string> | undefined;
      if (selector === undefined) continue;
      const ns = String(svc.metadata.namespace);
      const pods = [...this.objects.entries()]
        .filter(([k, p]) => k.startsWith(`/pods/${ns}/`) && p.status?.podIP !== undefined && Object.entries(selector).every(([lk, lv]) => p.metadata.labels?.[lk] === lv))
        .map(([, p]) => p)
        .sort((a, b) => String(a.metadata.name).localeCompare(String(b.metadata.name)));
      const container = (pod: KubeObject): KubeObject | undefined => (pod.spec?.containers as KubeObject[] | undefined)?.[0];
      const ports = ((svc.spec?.ports as KubeObject[] | undefined) ?? []).map((p) => {
        const target = p.targetPort ?? p.port;
        const pod = pods[0];
        const resolved = typeof target === 'number' ? target
          : Number((container(pod ?? { metadata: {} })?.ports as KubeObject[] | undefined)?.find((cp) => cp.name === target)?.containerPort ?? 0);
        return { name: p.name ?? '', port: resolved, protocol: p.protocol ?? 'TCP' };
      });
      const endpoints = pods.map((p) => {
        const terminating = p.metadata.deletionTimestamp !== undefined;
        const ready = isReady(p) && !terminating;
        return {
          addresses: [p.status.podIP], conditions: { ready, serving: isReady(p), terminating },
          targetRef: { kind: 'Pod', name: p.metadata.name, namespace: ns, uid: p.metadata.uid }, nodeName: p.spec?.nodeName,
        };
      });
      const name = `${String(svc.metadata.name)}-double`;
      const key = this.key(slices, ns, name);
      const existing = this.objects.get(key);
      const desired = {
        apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', addressType: 'IPv4', endpoints, ports,
        metadata: {
          // As the EndpointSlice controller does: the Service's labels, plus its own two.
          name, namespace: ns, labels: { ...svc.metadata.labels, [SERVICE_NAME_LABEL]: svc.metadata.name, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' },
          ownerReferences: [{ apiVersion: 'v1', kind: 'Service', name: svc.metadata.name, uid: svc.metadata.uid, controller: true, blockOwnerDeletion: true }],
        },
      };
      if (existing === undefined) this.create(slices, ns, desired);
      else if (JSON.stringify(existing.endpoints) !== JSON.stringify(endpoints) || JSON.stringify(existing.ports) !== JSON.stringify(ports)
        || JSON.stringify(existing.metadata.labels) !== JSON.stringify(desired.metadata.labels)) {
        this.write(slices, 'MODIFIED', key, { ...structuredClone(existing), metadata: { ...structuredClone(existing.metadata), labels: desired.metadata.labels }, endpoints, ports });
      }
    }
    // Slices of deleted Services.
    for (const [key, slice] of [...this.objects.entries()].filter(([k]) => k.startsWith('discovery.k8s.io/endpointslices/'))) {
      const svcName = slice.metadata.labels?.[SERVICE_NAME_LABEL] as string | undefined;
      if (svcName !== undefined && !this.objects.has(`/services/${String(slice.metadata.namespace)}/${svcName}`)) this.write(slices, 'DELETED', key, structuredClone(slice));
    }
  }
}

// --- helpers ---

function podKey(pod: KubeObject): string {
  return `/pods/${String(pod.metadata.namespace)}/${String(pod.metadata.name)}`;
}

function apiVersionOf(r: ResourceType): string {
  return r.group === '' ? r.version : `${r.group}/${r.version}`;
}

function notFound(r: ResourceType, name: string): ApiError {
  return new ApiError(404, 'NotFound', `${r.plural}${r.group === '' ? '' : `.${r.group}`} "${name}" not found`, { name, group: r.group, kind: r.plural });
}

function checkVersion(r: ResourceType, name: string, current: KubeObject, given: unknown): void {
  if (given === undefined || given === null || given === '') return;
  if ((typeof given === 'string' ? given : JSON.stringify(given)) !== current.metadata.resourceVersion) {
    throw new ApiError(409, 'Conflict', `Operation cannot be fulfilled on ${r.plural}${r.group === '' ? '' : `.${r.group}`} "${name}": the object has been modified; please apply your changes to the latest version and try again`, { name, group: r.group, kind: r.plural });
  }
}

function statusObject(e: ApiError): KubeObject {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: e.message, reason: e.reason, details: e.details, code: e.code };
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readJson(req: http.IncomingMessage, optional: boolean): Promise<any> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  if (text === '') {
    if (optional) return undefined;
    throw new ApiError(400, 'BadRequest', 'the request has no body');
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(400, 'BadRequest', 'the body is not JSON (the double does not read YAML)');
  }
}

function isReady(pod: KubeObject): boolean {
  return (pod.status?.conditions as KubeObject[] | undefined)?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}

function deletionCost(pod: KubeObject): number {
  const v = Number(pod.metadata.annotations?.[DELETION_COST] ?? 0);
  return Number.isFinite(v) ? v : 0;
}

function selectorString(labels: Record<string, string>): string {
  return Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(',');
}

/** `$(VAR)` → the value of VAR defined before; `$$(VAR)` → `$(VAR)`; unknown references stay as they are (Kubernetes rules). */
function expand(value: string, env: Record<string, string>): string {
  return value.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (m: string, name: string | undefined) => (m === '$$' ? '$' : env[name ?? ''] ?? m));
}

function logTail(text: string): string {
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  let tail = lines.slice(-TERMINATION_LOG_LINES).join('\n');
  while (Buffer.byteLength(tail) > TERMINATION_LOG_BYTES) tail = tail.slice(tail.indexOf('\n') + 1 || tail.length);
  return tail;
}

/** "512Mi" → 536870912, "1G" → 1e9, "1024" → 1024. */
function parseQuantity(q: unknown): number | undefined {
  if (typeof q === 'number') return q;
  if (typeof q !== 'string') return undefined;
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(q);
  if (m === null) return undefined;
  const unit: Record<string, number> = { Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Number(m[1]) * (unit[m[2] ?? ''] ?? 1);
}

async function residentBytes(pid: number): Promise<number | undefined> {
  const status = await fsp.readFile(`/proc/${pid}/status`, 'utf8').catch(() => undefined);
  const kb = status === undefined ? undefined : /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
  return kb === undefined ? undefined : Number(kb) * 1024;
}

function probeHttp(host: string, port: number, pathname: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ host, port, path: pathname, agent: false, timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 400);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

/** `labelSelector` (equality and set-based) and `fieldSelector` (metadata.name / metadata.namespace) of a list or watch. */
function selectorFilter(q: URLSearchParams): (obj: KubeObject) => boolean {
  const tests: Array<(obj: KubeObject) => boolean> = [];
  for (const term of splitSelector(q.get('labelSelector') ?? '')) {
    const labels = (o: KubeObject): Record<string, string> => (o.metadata.labels ?? {}) as Record<string, string>;
    let m: RegExpExecArray | null;
    if ((m = /^([^!=\s]+)\s*(==|=|!=)\s*(.*)$/.exec(term)) !== null) {
      const [, k = '', op, v = ''] = m;
      tests.push(op === '!=' ? (o) => labels(o)[k] !== v : (o) => labels(o)[k] === v);
    } else if ((m = /^(\S+)\s+(in|notin)\s+\((.*)\)$/.exec(term)) !== null) {
      const [, k = '', op, list = ''] = m;
      const values = new Set(list.split(',').map((s) => s.trim()));
      tests.push(op === 'in' ? (o) => values.has(labels(o)[k] ?? '\0') : (o) => !values.has(labels(o)[k] ?? '\0'));
    } else if (term.startsWith('!')) {
      tests.push((o) => !(term.slice(1) in labels(o)));
    } else {
      tests.push((o) => term in labels(o));
    }
  }
  for (const term of splitSelector(q.get('fieldSelector') ?? '')) {
    const m = /^(metadata\.name|metadata\.namespace)\s*(==|=|!=)\s*(.*)$/.exec(term);
    if (m === null) throw new ApiError(400, 'BadRequest', `field label not supported by the double: ${term}`);
    const [, field = '', op, v] = m;
    const get = (o: KubeObject): unknown => (field === 'metadata.name' ? o.metadata.name : o.metadata.namespace);
    tests.push(op === '!=' ? (o) => get(o) !== v : (o) => get(o) === v);
  }
  return (obj) => tests.every((t) => t(obj));
}

/** Splits a selector at the commas outside parentheses. */
function splitSelector(s: string): string[] {
  const terms: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      terms.push(cur.trim());
      cur = '';
    } else {
      cur += ch;
    }
  }
  if (cur.trim() !== '') terms.push(cur.trim());
  return terms.filter((t) => t !== '');
}

function applyPatch(current: KubeObject, body: unknown, contentType: string | undefined): KubeObject {
  const type = (contentType ?? '').split(';')[0]?.trim();
  if (type === 'application/json-patch+json') {
    if (!Array.isArray(body)) throw new ApiError(400, 'BadRequest', 'a JSON patch is an array of operations');
    return jsonPatch(structuredClone(current), body as KubeObject[]);
  }
  if (type === 'application/merge-patch+json' || type === 'application/strategic-merge-patch+json') {
    return mergePatch(structuredClone(current), body) as KubeObject;
  }
  throw new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got ${String(contentType)})`);
}

/** RFC 7386. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return structuredClone(patch);
  const out: Record<string, unknown> = typeof target === 'object' && target !== null && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** RFC 6902: add, remove, replace, test, move, copy. */
function jsonPatch(doc: KubeObject, ops: KubeObject[]): KubeObject {
  const parse = (p: string): string[] => p.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  const parentOf = (p: string): [any, string] => {
    const segs = parse(p);
    const last = segs.pop();
    let node: any = doc;
    for (const s of segs) {
      node = node?.[s];
      if (node === undefined || node === null) throw new ApiError(422, 'Invalid', `the JSON patch path ${p} does not exist`);
    }
    if (last === undefined) throw new ApiError(422, 'Invalid', 'the JSON patch path must not be the root');
    return [node, last];
  };
  const getAt = (p: string): unknown => {
    const [node, last] = parentOf(p);
    return node[last];
  };
  const remove = (p: string): unknown => {
    const [node, last] = parentOf(p);
    if (!(last in node)) throw new ApiError(422, 'Invalid', `the JSON patch path ${p} does not exist`);
    const v = node[last];
    if (Array.isArray(node)) node.splice(Number(last), 1);
    else delete node[last];
    return v;
  };
  const add = (p: string, value: unknown): void => {
    const [node, last] = parentOf(p);
    if (Array.isArray(node)) node.splice(last === '-' ? node.length : Number(last), 0, structuredClone(value));
    else node[last] = structuredClone(value);
  };
  for (const op of ops) {
    const p = String(op.path);
    switch (op.op) {
      case 'add': add(p, op.value); break;
      case 'remove': remove(p); break;
      case 'replace': remove(p); add(p, op.value); break;
      case 'test':
        if (JSON.stringify(getAt(p)) !== JSON.stringify(op.value)) throw new ApiError(422, 'Invalid', `the JSON patch test of ${p} failed`);
        break;
      case 'move': add(p, remove(String(op.from))); break;
      case 'copy': add(p, getAt(String(op.from))); break;
      default: throw new ApiError(422, 'Invalid', `unknown JSON patch op ${String(op.op)}`);
    }
  }
  return doc;
}

/** `nvidia.com/gpu` a pod's containers ask for. */
function gpusOf(pod: KubeObject): number {
  let n = 0;
  for (const c of (pod.spec?.containers as KubeObject[] | undefined) ?? []) n += Number(c.resources?.limits?.['nvidia.com/gpu'] ?? c.resources?.requests?.['nvidia.com/gpu'] ?? 0);
  return n;
}
