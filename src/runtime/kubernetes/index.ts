/**
 * The Kubernetes runtime: replicas are pods. Per replica group (one served entity with one replica
 * identity, see objects.ts) a Deployment running `ferry replica` in pod mode (TCP on the pod IP,
 * the model fetched from the artifact store and verified), a Service, a NetworkPolicy admitting
 * only the Ferry server pods, and a PodDisruptionBudget. Ferry's autoscaler decides how many
 * replicas; this runtime turns each start and stop into a change of the Deployment's replica count
 * through the scale subresource, and hands out pods one by one:
 *
 * - `startReplica`: ensures the group's objects (create; 409 is fine), counts the start as pending,
 *   scales the Deployment to claimed + pending (+ pods kept for adoption, below), and waits, by a
 *   watch on the runtime's pods, for a ready pod no handle has claimed: that pod becomes the
 *   replica (its IP and the replica port; annotated with the replica id). A pod that fails first
 *   (its container terminated, or waiting in CrashLoopBackOff / an image error) fails the oldest
 *   waiting start with MODEL_ERROR holding the container's termination message (the replica's
 *   own "replica failed to start" line); past `startTimeoutMs` a start fails with
 *   DEADLINE_EXCEEDED. Either way the count goes back down, the start's pod goes (see `scale`),
 *   and a group left with nothing is deleted: nothing is left running.
 * - `stopReplica`: gives the replica's pod the lowest `controller.kubernetes.io/pod-deletion-cost`,
 *   scales down by one and deletes that pod (the cost is only a hint, see `scale`); the pod drains
 *   on SIGTERM, and the stop waits until it is gone. The last replica of a group deletes the
 *   group's objects.
 * - Failures: a claimed pod whose container terminates or restarts, or that disappears, is reported
 *   once through `onExit` ('oom' for OOMKilled, else 'crashed'; the log lines from the previous
 *   container's log, else its termination message) and retired like a stop, so the controller's
 *   replacement start gets a fresh pod.
 * - `logs`: the entity's pods' logs, after the kept tails of its pods that are gone (Kubernetes
 *   deletes a pod's log with the pod; the runtime keeps up to 256 KiB per entity in memory).
 * - Reconcile on `open`: the runtime lists its objects (label `app.kubernetes.io/managed-by=ferry`).
 *   Their pods are kept for `adoptionGraceMs` (default 2 min): a `startReplica` of an existing
 *   group claims a ready pod first, with no cold start. When the grace ends, unclaimed pods are
 *   scaled away and groups without replicas deleted.
 * - `close`: stops watching and forgets its replicas, but leaves every pod serving: a control-plane
 *   restart (an upgrade, a crashed leader) must not take endpoints down; the next `open` adopts
 *   them, or deletes them after the grace period.
 *
 * Assumes one runtime (the control plane's leader) manages a namespace's Ferry objects at a time.
 */
import {
  ApiException, AppsV1Api, CoreV1Api, KubeConfig, NetworkingV1Api, PatchStrategy, PolicyV1Api, Watch, setHeaderOptions,
  type KubernetesObject, type V1Pod,
} from '@kubernetes/client-node';
import { backoffDelayMs, type Backoff } from '../../backoff.js';
import { FerryError, invalidParameter } from '../../errors.js';
import type { LogFn, LogLevel } from '../../logs/index.js';
import type { ArtifactStoreLocation } from '../../artifacts/index.js';
import type { ReplicaExit, ReplicaHandle, ReplicaSpec, Runtime } from '../types.js';
import {
  ANNOTATION_REPLICA, CONTAINER, DELETION_COST, LABEL_GROUP, LOWEST_DELETION_COST, MANAGED_BY,
  entitySelector, groupObjects, groupOf, labelValue, type Group, type PodSettings,
} from './objects.js';

export { KubernetesCluster, ROLE_LABEL } from './cluster.js';

export interface KubernetesRuntimeOptions {
  /** Namespace of every object the runtime creates (and lists at `open`). */
  namespace: string;
  /** The Ferry image replicas run (`ferry replica`). */
  image: string;
  /** The image replicas of flavors that run Python (a flavor's `pythonEnvironment`) run; default `image`. */
  pythonImage?: string | undefined;
  imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never' | undefined;
  /** A kubeconfig's text; undefined: the default (KUBECONFIG, ~/.kube/config, or the pod's service account). */
  kubeconfig?: string;
  /** How long a replica may take from the start call to a ready pod (image pull and model load included). */
  startTimeoutMs: number;
  /** How long a stopping replica drains; its pod's grace period is this plus 5 s. */
  drainTimeoutMs: number;
  /** Port replicas listen on; default 8080. */
  replicaPort?: number;
  /** Labels of the Ferry server pods, the only ones the NetworkPolicy admits; default name=ferry, component=server. */
  serverPodLabels?: Readonly<Record<string, string>>;
  /** Non-root uid/gid of replica containers; default 10001. */
  replicaUid?: number;
  /** Model threads per replica, and its CPU request; default 1. */
  replicaThreads?: number;
  /** Where replicas fetch artifacts (JSON for `ferry replica`; credentials only via `artifactStoreSecret`). */
  artifactStore: ArtifactStoreLocation;
  /** Secret mapped into replicas' environment (S3 credentials); undefined: none. */
  artifactStoreSecret?: string | undefined;
  /** How long objects found at `open` wait to be claimed before they are deleted; default 2 min. */
  adoptionGraceMs?: number;
  logLevel?: LogLevel;
  /** The server's log (a pod watch that keeps failing is logged); default: none. */
  log?: LogFn;
}

/** Ids, endpoint and entity names, as the local runtime accepts them (labels get them through `labelValue`). */
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;
const DEFAULT_SERVER_POD_LABELS = { 'app.kubernetes.io/name': 'ferry', 'app.kubernetes.io/component': 'server' };
const DEFAULT_ADOPTION_GRACE_MS = 120_000;
/** Waiting reasons after which a container will not become ready without a change. */
const FAILED_WAITING = new Set(['CrashLoopBackOff', 'ErrImagePull', 'ImagePullBackOff', 'InvalidImageName', 'CreateContainerConfigError', 'CreateContainerError']);
const LAST_LOG_LINES = 20;
/** Log tails of gone pods kept per entity. */
const KEPT_LOG_BYTES = 256 * 1024;
/** How long a stop waits past the pod's grace period for the pod to be gone. */
const STOP_EXTRA_WAIT_MS = 10_000;
/** Pause before re-listing after a watch failed (the API server restarting, a network blip). */
const REWATCH_BACKOFF: Backoff = { baseMs: 1000, maxMs: 30_000 };
/** Most bytes of a pod's log read at once (a crash report or `logs()` needs the tail only). */
const POD_LOG_LIMIT_BYTES = 1024 * 1024;
const MERGE_PATCH = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

interface GroupState extends Group {
  /** Objects to create, known once a start of this group arrives (groups found at `open` have none yet). */
  spec: ReplicaSpec | undefined;
  /** Pods serving a replica of this runtime. */
  claimed: Set<string>;
  /** Starts waiting for a pod, oldest first. */
  waiters: Waiter[];
  /** Pods found at `open`, kept until claimed or the grace ends. */
  adoptable: Set<string>;
  /** Pods that failed or were given up: never claimed, being scaled away. */
  retired: Set<string>;
  /** Serialises the group's API writes (ensure, scale, delete). */
  chain: Promise<void>;
}

interface Waiter {
  id: string;
  /** Gets the claimed pod and its container's restart count at the claim (a later restart is a crash). */
  resolve: (claim: { podName: string; restartCount: number }) => void;
  reject: (err: Error) => void;
}

interface PodReplica {
  handle: ReplicaHandle;
  group: GroupState;
  podName: string;
  /** The container's restart count when claimed: more means it crashed. */
  restartCount: number;
  stopping: boolean;
  reported: boolean;
}

export class KubernetesRuntime implements Runtime {
  /** Pods fetch their model from the artifact store (`ferry replica --artifact-path`). */
  readonly fetchesArtifacts = true;
  private readonly groups = new Map<string, GroupState>();
  private readonly replicas = new Map<string, PodReplica>();
  /** Ids of starts in progress (duplicates are refused). */
  private readonly starting = new Set<string>();
  private readonly pods = new Map<string, V1Pod>();
  private readonly listeners: ((exit: ReplicaExit) => void)[] = [];
  /** Per entity ("endpoint/entity"): log tails of its pods that are gone, oldest first. */
  private readonly keptLogs = new Map<string, string>();
  /** Resolvers waiting for a pod to be gone. */
  private readonly goneWaiters = new Map<string, Array<() => void>>();
  private watchAbort: AbortController | undefined;
  private rewatchTimer: NodeJS.Timeout | undefined;
  /** Failed re-lists in a row (the retry delay doubles with each). */
  private rewatchFailures = 0;
  private readonly log: LogFn;
  private graceTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly core: CoreV1Api;
  private readonly apps: AppsV1Api;
  private readonly networking: NetworkingV1Api;
  private readonly policy: PolicyV1Api;

  private constructor(private readonly kc: KubeConfig, private readonly settings: PodSettings, private readonly opts: KubernetesRuntimeOptions) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.apps = kc.makeApiClient(AppsV1Api);
    this.networking = kc.makeApiClient(NetworkingV1Api);
    this.policy = kc.makeApiClient(PolicyV1Api);
    this.log = opts.log ?? (() => undefined);
  }

  /**
   * Connects, lists the objects Ferry left in the namespace (kept for adoption during
   * `adoptionGraceMs`), and starts watching its pods. Rejects when the API cannot be reached.
   */
  static async open(opts: KubernetesRuntimeOptions): Promise<KubernetesRuntime> {
    const kc = new KubeConfig();
    if (opts.kubeconfig === undefined) kc.loadFromDefault();
    else kc.loadFromString(opts.kubeconfig);
    const settings: PodSettings = {
      namespace: opts.namespace, image: opts.image, pythonImage: opts.pythonImage ?? opts.image, imagePullPolicy: opts.imagePullPolicy, replicaPort: opts.replicaPort ?? 8080,
      serverPodLabels: opts.serverPodLabels ?? DEFAULT_SERVER_POD_LABELS, replicaUid: opts.replicaUid ?? 10001, replicaThreads: opts.replicaThreads ?? 1,
      artifactStore: opts.artifactStore, artifactStoreSecret: opts.artifactStoreSecret,
      startTimeoutMs: opts.startTimeoutMs, drainTimeoutMs: opts.drainTimeoutMs, logLevel: opts.logLevel ?? 'info',
    };
    const rt = new KubernetesRuntime(kc, settings, opts);
    try {
      await rt.watchPods(await rt.reconcileOnOpen());
    } catch (err) {
      throw new FerryError('TEMPORARILY_UNAVAILABLE', `Cannot reach the Kubernetes API for namespace '${opts.namespace}': ${describeApiError(err)}`, { cause: err });
    }
    return rt;
  }

  private get ns(): string {
    return this.settings.namespace;
  }

  /** Lists the objects and pods Ferry left; returns the pod list's resourceVersion (the watch starts there). */
  private async reconcileOnOpen(): Promise<string> {
    const selector = `${MANAGED_BY}=ferry`;
    const [deployments, services, policies, budgets] = await Promise.all([
      this.apps.listNamespacedDeployment({ namespace: this.ns, labelSelector: selector }),
      this.core.listNamespacedService({ namespace: this.ns, labelSelector: selector }),
      this.networking.listNamespacedNetworkPolicy({ namespace: this.ns, labelSelector: selector }),
      this.policy.listNamespacedPodDisruptionBudget({ namespace: this.ns, labelSelector: selector }),
    ]);
    const objects: KubernetesObject[] = [...deployments.items, ...services.items, ...policies.items, ...budgets.items];
    for (const o of objects) {
      const name = o.metadata?.labels?.[LABEL_GROUP];
      if (name !== undefined && !this.groups.has(name)) this.groups.set(name, newGroupState({ name, labels: o.metadata?.labels ?? {}, selector: { [MANAGED_BY]: 'ferry', [LABEL_GROUP]: name } }, undefined));
    }
    const resourceVersion = await this.listPods();
    for (const pod of this.pods.values()) {
      const group = this.groups.get(pod.metadata?.labels?.[LABEL_GROUP] ?? '');
      if (group !== undefined && pod.metadata?.deletionTimestamp === undefined && pod.metadata?.name !== undefined) group.adoptable.add(pod.metadata.name);
    }
    const graceMs = this.opts.adoptionGraceMs ?? DEFAULT_ADOPTION_GRACE_MS;
    this.graceTimer = setTimeout(() => this.endAdoptionGrace(), graceMs);
    this.graceTimer.unref();
    return resourceVersion;
  }

  /** Unclaimed pods found at `open` are scaled away; groups without replicas are deleted. */
  private endAdoptionGrace(): void {
    for (const group of this.groups.values()) {
      for (const name of group.adoptable) group.retired.add(name);
      group.adoptable.clear();
      this.enqueue(group, () => this.scale(group)).catch(() => undefined); // the API unreachable: the next open's grace retries
    }
  }

  // --- pod watch ---

  /** Lists the runtime's pods into the cache (pods no longer there count as deleted); returns the list's resourceVersion. */
  private async listPods(): Promise<string> {
    const list = await this.core.listNamespacedPod({ namespace: this.ns, labelSelector: `${MANAGED_BY}=ferry` });
    const seen = new Set<string>();
    for (const pod of list.items) {
      const name = pod.metadata?.name;
      if (name === undefined) continue;
      seen.add(name);
      this.onPod('MODIFIED', pod);
    }
    for (const [name, pod] of [...this.pods]) if (!seen.has(name)) this.onPod('DELETED', pod);
    return list.metadata?.resourceVersion ?? '';
  }

  /** Watches the runtime's pods from `resourceVersion`; when the watch ends for any reason, `rewatch`. */
  private async watchPods(resourceVersion: string): Promise<void> {
    if (this.closed) return;
    let ended = false;
    const end = (): void => {
      if (ended) return;
      ended = true;
      this.rewatch();
    };
    this.watchAbort = await new Watch(this.kc).watch(
      `/api/v1/namespaces/${encodeURIComponent(this.ns)}/pods`,
      { labelSelector: `${MANAGED_BY}=ferry`, resourceVersion, allowWatchBookmarks: true },
      (type: string, obj: V1Pod) => {
        // ERROR: the version is too old (410 Expired) or the server ended the watch; re-list.
        if (type === 'ERROR') end();
        else if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') this.onPod(type, obj);
      },
      end,
    );
    if (this.closed) this.watchAbort.abort();
  }

  /** Re-lists (changes missed meanwhile are applied, deletions included) and watches again; retried until closed. */
  private rewatch(): void {
    if (this.closed || this.rewatchTimer !== undefined) return;
    this.watchAbort?.abort();
    this.watchAbort = undefined;
    // 1 s, doubling while listing fails (RBAC missing, API server down), at most 30 s.
    const delayMs = backoffDelayMs(this.rewatchFailures + 1, REWATCH_BACKOFF);
    this.rewatchTimer = setTimeout(() => {
      this.rewatchTimer = undefined;
      this.listPods().then((rv) => {
        this.rewatchFailures = 0;
        return this.watchPods(rv);
      }).catch((err: unknown) => {
        this.rewatchFailures++;
        this.log('warn', 'watching pods failed; retrying', { error: err instanceof Error ? err.message : String(err), retry_in_ms: backoffDelayMs(this.rewatchFailures + 1, REWATCH_BACKOFF) });
        this.rewatch();
      });
    }, delayMs);
  }

  private onPod(type: 'ADDED' | 'MODIFIED' | 'DELETED', pod: V1Pod): void {
    const name = pod.metadata?.name;
    if (name === undefined) return;
    if (type === 'DELETED') {
      this.pods.delete(name);
      for (const resolve of this.goneWaiters.get(name) ?? []) resolve();
      this.goneWaiters.delete(name);
    } else {
      this.pods.set(name, pod);
    }
    const replica = [...this.replicas.values()].find((r) => r.podName === name);
    if (replica !== undefined) this.checkClaimed(replica, type === 'DELETED' ? undefined : pod);
    const group = this.groups.get(pod.metadata?.labels?.[LABEL_GROUP] ?? '');
    if (group !== undefined) {
      if (type === 'DELETED') {
        group.adoptable.delete(name);
        group.retired.delete(name);
      }
      this.matchWaiters(group);
    }
  }

  /** A claimed pod that crashed, restarted or disappeared: reported once and retired. */
  private checkClaimed(r: PodReplica, pod: V1Pod | undefined): void {
    if (r.stopping || r.reported) return;
    const status = pod?.status?.containerStatuses?.find((c) => c.name === CONTAINER);
    const restarted = (status?.restartCount ?? 0) > r.restartCount;
    const terminated = status?.state?.terminated;
    if (pod !== undefined && !restarted && terminated === undefined && pod.metadata?.deletionTimestamp === undefined) return;
    r.reported = true;
    this.replicas.delete(r.handle.id);
    r.group.claimed.delete(r.podName);
    const termination = terminated ?? status?.lastState?.terminated;
    void (async () => {
      const log = pod === undefined ? '' : await this.podLog(r.podName, { previous: restarted, maxBytes: 64 * 1024 });
      this.keepLog(r.handle.spec, log);
      const lastLogLines = lastLines(log) || (termination?.message ?? '').trim() || `pod ${r.podName} was deleted outside Ferry`;
      const exit: ReplicaExit = {
        id: r.handle.id, code: termination?.exitCode, signal: undefined,
        reason: termination?.reason === 'OOMKilled' ? 'oom' : 'crashed', lastLogLines,
      };
      for (const listener of this.listeners) listener(exit);
      // Also for a pod deleted outside Ferry: its replacement is not wanted.
      this.retire(r.group, r.podName);
    })();
  }

  /** Hands ready unclaimed pods to waiting starts, oldest first; fails a waiting start per failed pod. */
  private matchWaiters(group: GroupState): void {
    const pods = [...this.pods.values()].filter((p) => p.metadata?.labels?.[LABEL_GROUP] === group.name && p.metadata.deletionTimestamp === undefined);
    for (const pod of pods) {
      const name = pod.metadata?.name ?? '';
      if (group.claimed.has(name) || group.retired.has(name)) continue;
      // A pod found at open may have crashed and restarted before: only its current state counts.
      const failure = podFailure(pod, !group.adoptable.has(name));
      if (failure !== undefined) {
        group.adoptable.delete(name);
        group.retired.add(name);
        const waiter = group.waiters.shift();
        void this.failPod(group, name, failure, waiter);
        continue;
      }
      if (!isReady(pod) || group.waiters.length === 0) continue;
      const waiter = group.waiters.shift();
      if (waiter === undefined) continue;
      group.adoptable.delete(name);
      group.claimed.add(name);
      waiter.resolve({ podName: name, restartCount: pod.status?.containerStatuses?.find((c) => c.name === CONTAINER)?.restartCount ?? 0 });
    }
  }

  /** A pod that failed before it was claimed: its log kept, the waiting start (if any) failed, the pod retired. */
  private async failPod(group: GroupState, podName: string, failure: PodFailure, waiter: Waiter | undefined): Promise<void> {
    const log = await this.podLog(podName, { previous: failure.restarted, maxBytes: 64 * 1024 }) || failure.terminationMessage;
    if (group.spec !== undefined) this.keepLog(group.spec, log);
    // The replica's own words when it said why; else what Kubernetes saw, with the log's last lines.
    const reason = replicaError(log) ?? `pod ${podName}: ${failure.summary}${log === '' ? '' : `. Last log lines:\n${lastLines(log)}`}`;
    waiter?.reject(new FerryError('MODEL_ERROR', `Replica '${waiter.id}' failed to start: ${reason}`));
    this.retire(group, podName);
  }

  // --- Runtime ---

  async startReplica(spec: ReplicaSpec): Promise<ReplicaHandle> {
    const calledMs = performance.now();
    for (const key of ['id', 'endpoint', 'servedEntity'] as const) {
      if (!NAME_PATTERN.test(spec[key])) throw invalidParameter(key, spec[key], 'letters, digits, ".", "_" or "-", starting with a letter or digit');
    }
    // A family pod fetches its members from the artifact store as requests name them (objects.ts).
    if (spec.family === undefined && (spec.artifactKey === undefined || spec.artifactSha256 === undefined)) {
      throw new FerryError('INVALID_PARAMETER_VALUE', `Replica '${spec.id}' has no artifactKey/artifactSha256: Kubernetes replicas fetch their model from the artifact store.`);
    }
    if (this.closed) throw new FerryError('TEMPORARILY_UNAVAILABLE', 'The runtime is shutting down.');
    if (this.replicas.has(spec.id) || this.starting.has(spec.id)) throw new FerryError('RESOURCE_ALREADY_EXISTS', `Replica '${spec.id}' is already running.`);
    const identity = groupOf(spec, this.settings);
    let group = this.groups.get(identity.name);
    if (group === undefined) {
      group = newGroupState(identity, spec);
      this.groups.set(identity.name, group);
    }
    group.spec ??= spec;
    const g = group;
    this.starting.add(spec.id);
    let timer: NodeJS.Timeout | undefined;
    try {
      const claimed = new Promise<{ podName: string; restartCount: number }>((resolve, reject) => {
        g.waiters.push({ id: spec.id, resolve, reject });
        timer = setTimeout(() => {
          const unscheduled = this.unschedulable(g);
          reject(new FerryError('DEADLINE_EXCEEDED', `Replica '${spec.id}' did not become ready within ${this.opts.startTimeoutMs} ms; its pod was removed.${unscheduled === undefined ? '' : ` The scheduler could not place it: ${unscheduled}`}`));
        }, this.opts.startTimeoutMs);
      });
      // Settled by whichever comes first below; a later rejection has no one to tell.
      claimed.catch(() => undefined);
      // An adoptable pod may be ready already: then no scale-up is needed.
      this.matchWaiters(g);
      const ensured = this.enqueue(g, async () => {
        await this.ensureObjects(g, spec);
        await this.scale(g);
      });
      ensured.catch(() => undefined);
      const { podName, restartCount } = await Promise.race([claimed, ensured.then(() => claimed)]);
      clearTimeout(timer);
      const pod = this.pods.get(podName);
      const handle: ReplicaHandle = {
        id: spec.id, spec, pid: undefined, coldStartMs: performance.now() - calledMs,
        address: { kind: 'tcp', host: pod?.status?.podIP ?? '', port: this.settings.replicaPort },
      };
      const r: PodReplica = { handle, group: g, podName, restartCount, stopping: false, reported: false };
      this.replicas.set(spec.id, r);
      await this.core.patchNamespacedPod({ name: podName, namespace: this.ns, body: { metadata: { annotations: { [ANNOTATION_REPLICA]: spec.id } } } }, MERGE_PATCH)
        .catch(() => undefined); // diagnostics only; a pod gone meanwhile is reported by the watch
      this.checkClaimed(r, this.pods.get(podName));
      return handle;
    } catch (err) {
      clearTimeout(timer);
      const i = g.waiters.findIndex((w) => w.id === spec.id);
      if (i >= 0) g.waiters.splice(i, 1);
      // The count goes back down (a failed pod is already retired); a closed runtime leaves it for the next one to adopt.
      if (!this.closed) this.enqueue(g, () => this.scale(g)).catch(() => undefined);
      if (err instanceof FerryError) throw err;
      throw new FerryError('INTERNAL_ERROR', `Could not start replica '${spec.id}' in Kubernetes namespace '${this.ns}': ${describeApiError(err)}`, { cause: err });
    } finally {
      this.starting.delete(spec.id);
    }
  }

  async stopReplica(id: string): Promise<void> {
    const r = this.replicas.get(id);
    if (r === undefined || r.stopping) return;
    r.stopping = true;
    this.replicas.delete(id);
    const gone = this.podGone(r.podName);
    this.keepLog(r.handle.spec, await this.podLog(r.podName, { previous: false, maxBytes: 64 * 1024 }));
    r.group.claimed.delete(r.podName);
    this.retire(r.group, r.podName);
    let timer: NodeJS.Timeout | undefined;
    const waitMs = this.opts.drainTimeoutMs + 5000 + STOP_EXTRA_WAIT_MS;
    const outcome = await Promise.race([gone.then(() => 'gone' as const), new Promise<'late'>((resolve) => { timer = setTimeout(() => resolve('late'), waitMs); })]);
    clearTimeout(timer);
    if (outcome === 'late') {
      // The kubelet did not report it gone in time (a lost node): force it.
      await this.core.deleteNamespacedPod({ name: r.podName, namespace: this.ns, gracePeriodSeconds: 0 }).catch(() => undefined);
    }
  }

  onExit(listener: (exit: ReplicaExit) => void): void {
    this.listeners.push(listener);
  }

  list(): ReplicaHandle[] {
    return [...this.replicas.values()].map((r) => r.handle);
  }

  /** The kept tails of the endpoint's gone pods (its live pods are deleted with it, their logs too). */
  async deleteLogs(endpoint: string): Promise<void> {
    if (!NAME_PATTERN.test(endpoint)) throw invalidParameter('endpoint', endpoint, 'an endpoint name');
    const prefix = `${labelValue(endpoint)}/`;
    for (const key of this.keptLogs.keys()) if (key.startsWith(prefix)) this.keptLogs.delete(key);
  }

  async logs(endpoint: string, servedEntity: string, maxBytes: number): Promise<string> {
    if (!NAME_PATTERN.test(endpoint)) throw invalidParameter('endpoint', endpoint, 'an endpoint name');
    if (!NAME_PATTERN.test(servedEntity)) throw invalidParameter('servedEntity', servedEntity, 'a served entity name');
    const list = await this.core.listNamespacedPod({ namespace: this.ns, labelSelector: entitySelector(endpoint, servedEntity) }).catch((err: unknown) => {
      throw new FerryError('TEMPORARILY_UNAVAILABLE', `Cannot list the pods of '${endpoint}/${servedEntity}' in Kubernetes namespace '${this.ns}': ${describeApiError(err)}`, { cause: err, retryAfterS: 1 });
    });
    // creationTimestamp is a Date in client-node: compare times, not their text.
    const pods = list.items.sort((a, b) => new Date(a.metadata?.creationTimestamp ?? 0).getTime() - new Date(b.metadata?.creationTimestamp ?? 0).getTime());
    const live = await Promise.all(pods.map((p) => this.podLog(p.metadata?.name ?? '', { previous: false, maxBytes })));
    const all = Buffer.from((this.keptLogs.get(entityKey(endpoint, servedEntity)) ?? '') + live.join(''));
    return all.subarray(Math.max(0, all.length - Math.max(0, maxBytes))).toString('utf8');
  }

  /**
   * Stops watching and forgets this runtime's replicas, leaving their pods serving (see the file
   * comment): the next `open` adopts them. Starts still waiting fail with TEMPORARILY_UNAVAILABLE.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.graceTimer);
    clearTimeout(this.rewatchTimer);
    this.watchAbort?.abort();
    for (const group of this.groups.values()) {
      for (const w of group.waiters.splice(0)) w.reject(new FerryError('TEMPORARILY_UNAVAILABLE', 'The runtime is shutting down.'));
      await group.chain;
    }
    this.replicas.clear();
    for (const waiters of this.goneWaiters.values()) for (const resolve of waiters) resolve();
    this.goneWaiters.clear();
  }

  // --- group writes ---

  private enqueue(group: GroupState, op: () => Promise<void>): Promise<void> {
    const next = group.chain.then(op);
    group.chain = next.catch(() => undefined);
    return next;
  }

  /** Creates the group's objects; those that exist (409) are fine. */
  private async ensureObjects(group: GroupState, spec: ReplicaSpec): Promise<void> {
    const o = groupObjects(spec, group, this.settings);
    const ns = this.ns;
    const creates: Array<() => Promise<unknown>> = [
      () => this.apps.createNamespacedDeployment({ namespace: ns, body: o.deployment }),
      () => this.core.createNamespacedService({ namespace: ns, body: o.service }),
      () => this.networking.createNamespacedNetworkPolicy({ namespace: ns, body: o.networkPolicy }),
      () => this.policy.createNamespacedPodDisruptionBudget({ namespace: ns, body: o.podDisruptionBudget }),
    ];
    await Promise.all(creates.map((create) => create().catch((err: unknown) => {
      if (!hasCode(err, 409)) throw err;
    })));
  }

  /**
   * Scales the group's Deployment (the scale subresource) to claimed + waiting + adoptable pods, or
   * deletes the group's objects when that is 0, and removes the pods it no longer needs: retired
   * ones, and unclaimed ones beyond the waiting starts (kept: ready ones first).
   *
   * Those pods get the lowest `pod-deletion-cost` before the scale-down, and are then deleted by
   * the runtime too: the ReplicaSet controller ranks not-ready pods before the cost, so with a
   * start still waiting for its (not yet ready) pod it would remove that pod instead of the retired
   * one. Deleting the retired pod makes the outcome exact: if the controller took another pod, it
   * creates a replacement, which serves the waiting start. A claimed, ready pod is never among
   * the pods the controller removes, as every pod it removes ranks below it (marked or not ready).
   * Example: claimed {A}, one waiting start with not-ready pod B, a stop of A: replicas 1; the
   * controller deletes B (not ready), the runtime deletes A; a new pod C comes up for the start.
   */
  private async scale(group: GroupState): Promise<void> {
    const replicas = group.claimed.size + group.waiters.length + group.adoptable.size;
    if (replicas === 0) {
      await this.deleteGroup(group);
      return;
    }
    const unclaimed = [...this.pods.values()].filter((p) => {
      const name = p.metadata?.name ?? '';
      return p.metadata?.labels?.[LABEL_GROUP] === group.name && p.metadata?.deletionTimestamp === undefined && !group.claimed.has(name) && !group.adoptable.has(name);
    });
    const kept = new Set(unclaimed.filter((p) => !group.retired.has(p.metadata?.name ?? '') && podFailure(p, true) === undefined)
      .sort((a, b) => Number(isReady(b)) - Number(isReady(a)))
      .slice(0, group.waiters.length)
      .map((p) => p.metadata?.name ?? ''));
    const surplus = unclaimed.map((p) => p.metadata?.name ?? '').filter((name) => !kept.has(name));
    for (const name of surplus) group.retired.add(name);
    // Deleted before the scale-down: a terminating pod no longer counts for the ReplicaSet
    // controller, so the scale-down never has to choose, whichever of the two it sees first (its
    // informers are not ordered with ours). At worst it creates a replacement in between, which
    // the scale-down then removes (not ready, it ranks first) or a waiting start claims.
    await Promise.all(surplus.map((name) => this.markForDeletion(name)));
    await Promise.all(surplus.map((name) => this.core.deleteNamespacedPod({ name, namespace: this.ns }).catch((err: unknown) => {
      if (!hasCode(err, 404)) throw err;
    })));
    await this.apps.patchNamespacedDeploymentScale({ name: group.name, namespace: this.ns, body: { spec: { replicas } } }, MERGE_PATCH);
  }

  private async deleteGroup(group: GroupState): Promise<void> {
    // The group's state stays (in `groups`): a later start of the same identity queues behind this delete.
    const ns = this.ns;
    const name = group.name;
    const deletes: Array<() => Promise<unknown>> = [
      () => this.apps.deleteNamespacedDeployment({ name, namespace: ns }),
      () => this.core.deleteNamespacedService({ name, namespace: ns }),
      () => this.networking.deleteNamespacedNetworkPolicy({ name, namespace: ns }),
      () => this.policy.deleteNamespacedPodDisruptionBudget({ name, namespace: ns }),
    ];
    await Promise.all(deletes.map((del) => del().catch((err: unknown) => {
      if (!hasCode(err, 404)) throw err;
    })));
  }

  /**
   * Why the scheduler left a pod of the group Pending, e.g. "Unschedulable: 0/3 nodes are available:
   * 3 Insufficient nvidia.com/gpu." (a GPU entity on a cluster without free GPUs); undefined when none is.
   */
  private unschedulable(group: GroupState): string | undefined {
    for (const p of this.pods.values()) {
      if (p.metadata?.labels?.[LABEL_GROUP] !== group.name) continue;
      const c = p.status?.conditions?.find((x) => x.type === 'PodScheduled' && x.status === 'False');
      if (c !== undefined) return `${c.reason ?? 'Unschedulable'}: ${c.message ?? ''}`.trim();
    }
    return undefined;
  }

  /** Takes a pod out: a scale-down that removes exactly it (see `scale`). */
  private retire(group: GroupState, podName: string): void {
    group.retired.add(podName);
    this.enqueue(group, () => this.scale(group)).catch(() => undefined);
  }

  private async markForDeletion(podName: string): Promise<void> {
    await this.core.patchNamespacedPod({ name: podName, namespace: this.ns, body: { metadata: { annotations: { [DELETION_COST]: LOWEST_DELETION_COST } } } }, MERGE_PATCH)
      .catch((err: unknown) => {
        if (!hasCode(err, 404)) throw err;
      });
  }

  private podGone(podName: string): Promise<void> {
    if (!this.pods.has(podName)) return Promise.resolve();
    return new Promise((resolve) => {
      const list = this.goneWaiters.get(podName) ?? [];
      list.push(resolve);
      this.goneWaiters.set(podName, list);
    });
  }

  /** The pod's container log tail ('' when the pod or its log is gone). */
  private async podLog(podName: string, o: { previous: boolean; maxBytes: number }): Promise<string> {
    if (o.maxBytes <= 0 || podName === '') return '';
    try {
      // limitBytes bounds what the API server sends (from the start of the log); the tail is cut here.
      return await this.core.readNamespacedPodLog({ name: podName, namespace: this.ns, container: CONTAINER, previous: o.previous, limitBytes: Math.max(o.maxBytes, POD_LOG_LIMIT_BYTES) })
        .then((text) => tailBytes(text, o.maxBytes));
    } catch {
      return '';
    }
  }

  private keepLog(spec: ReplicaSpec, log: string): void {
    if (log === '') return;
    const key = entityKey(spec.endpoint, spec.servedEntity);
    this.keptLogs.set(key, tailBytes((this.keptLogs.get(key) ?? '') + (log.endsWith('\n') ? log : `${log}\n`), KEPT_LOG_BYTES));
  }
}

function newGroupState(group: Group, spec: ReplicaSpec | undefined): GroupState {
  return { ...group, spec, claimed: new Set(), waiters: [], adoptable: new Set(), retired: new Set(), chain: Promise.resolve() };
}

function entityKey(endpoint: string, servedEntity: string): string {
  return `${labelValue(endpoint)}/${labelValue(servedEntity)}`;
}

function isReady(pod: V1Pod): boolean {
  return pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}

interface PodFailure {
  /** What Kubernetes saw, e.g. "its container terminated (exit code 137, OOMKilled)" or "ErrImagePull (...)". */
  summary: string;
  /** The container's termination message (with FallbackToLogsOnError: its log's tail); '' when none. */
  terminationMessage: string;
  /** The failed container was restarted since: its log is the previous container's. */
  restarted: boolean;
}

/**
 * Why a pod will not become ready: its container terminated (now or, with `includePast`, before a
 * restart), or waits for good (crash loop, image errors).
 */
function podFailure(pod: V1Pod, includePast: boolean): PodFailure | undefined {
  const status = pod.status?.containerStatuses?.find((c) => c.name === CONTAINER);
  if (status === undefined) return undefined;
  const terminated = status.state?.terminated ?? (includePast ? status.lastState?.terminated : undefined);
  if (terminated !== undefined) {
    const what = `its container terminated (exit code ${terminated.exitCode}${terminated.reason === undefined ? '' : `, ${terminated.reason}`})`;
    return { summary: what, terminationMessage: terminated.message?.trim() ?? '', restarted: status.state?.terminated === undefined };
  }
  const waiting = status.state?.waiting;
  if (waiting?.reason !== undefined && FAILED_WAITING.has(waiting.reason)) {
    return { summary: `${waiting.reason}${waiting.message === undefined ? '' : ` (${waiting.message})`}`, terminationMessage: '', restarted: false };
  }
  return undefined;
}

/** The replica's own reason from its "replica failed to start" log line, if `text` holds one. */
function replicaError(text: string): string | undefined {
  for (const line of text.split('\n').reverse()) {
    try {
      const entry = JSON.parse(line) as { msg?: unknown; error?: unknown };
      if (entry.msg === 'replica failed to start' && typeof entry.error === 'string') return entry.error;
    } catch {
      // Not a JSON log line.
    }
  }
  return undefined;
}

function lastLines(text: string): string {
  return text.split('\n').filter((l) => l !== '').slice(-LAST_LOG_LINES).join('\n');
}

function tailBytes(text: string, maxBytes: number): string {
  const buf = Buffer.from(text);
  return buf.length <= maxBytes ? text : buf.subarray(buf.length - maxBytes).toString('utf8');
}

function hasCode(err: unknown, code: number): boolean {
  return err instanceof ApiException && err.code === code;
}

function describeApiError(err: unknown): string {
  if (err instanceof ApiException) {
    let message: unknown;
    try {
      message = (typeof err.body === 'string' ? JSON.parse(err.body) as { message?: unknown } : err.body as { message?: unknown }).message;
    } catch {
      message = undefined;
    }
    return `HTTP ${err.code}${typeof message === 'string' ? `: ${message}` : ''}`;
  }
  return err instanceof Error ? err.message : String(err);
}
