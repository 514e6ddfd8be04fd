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
 * Parts, one job per file: `options.ts` (the options and their defaults), `objects.ts` (a group's
 * objects), `pod-watch.ts` (the pod cache, list and watch), `pods.ts` (what a pod's status and
 * log say), `pod-logs.ts` (log tails, kept ones of gone pods), `adoption.ts` (groups left at `open`).
 *
 * Assumes one runtime (the control plane's leader) manages a namespace's Ferry objects at a time.
 */
import {
  AppsV1Api, CoreV1Api, KubeConfig, NetworkingV1Api, PatchStrategy, PolicyV1Api, setHeaderOptions, type V1Pod,
} from '@kubernetes/client-node';
import { FerryError, invalidParameter } from '../../errors.js';
import type { LogFn } from '../../logs/index.js';
import type { ReplicaExit, ReplicaHandle, ReplicaSpec, Runtime } from '../types.js';
import { listLeftGroups } from './adoption.js';
import {
  ANNOTATION_REPLICA, CONTAINER, DELETION_COST, LABEL_GROUP, LOWEST_DELETION_COST,
  groupObjects, groupOf, type Group, type PodSettings,
} from './objects.js';
import { DEFAULT_ADOPTION_GRACE_MS, podSettings, type KubernetesRuntimeOptions } from './options.js';
import { PodLogs } from './pod-logs.js';
import { PodWatch, type PodEvent } from './pod-watch.js';
import { describeApiError, hasCode, isReady, lastLines, podFailure, replicaError, type PodFailure } from './pods.js';

export { KubernetesCluster, ROLE_LABEL } from './cluster.js';
export type { KubernetesRuntimeOptions } from './options.js';

/** Ids, endpoint and entity names, as the local runtime accepts them (labels get them through `labelValue`). */
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;
/** How long a stop waits past the pod's grace period for the pod to be gone. */
const STOP_EXTRA_WAIT_MS = 10_000;
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
  private readonly listeners: ((exit: ReplicaExit) => void)[] = [];
  private readonly podLogs: PodLogs;
  /** Resolvers waiting for a pod to be gone. */
  private readonly goneWaiters = new Map<string, Array<() => void>>();
  private readonly watch: PodWatch;
  private readonly log: LogFn;
  private graceTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly core: CoreV1Api;
  private readonly apps: AppsV1Api;
  private readonly networking: NetworkingV1Api;
  private readonly policy: PolicyV1Api;

  private constructor(kc: KubeConfig, private readonly settings: PodSettings, private readonly opts: KubernetesRuntimeOptions) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.apps = kc.makeApiClient(AppsV1Api);
    this.networking = kc.makeApiClient(NetworkingV1Api);
    this.policy = kc.makeApiClient(PolicyV1Api);
    this.log = opts.log ?? (() => undefined);
    this.podLogs = new PodLogs(this.core, settings.namespace);
    this.watch = new PodWatch(kc, this.core, settings.namespace, this.log, (type, name, pod) => this.onPod(type, name, pod));
  }

  /**
   * Connects, lists the objects Ferry left in the namespace (kept for adoption during
   * `adoptionGraceMs`), and starts watching its pods. Rejects when the API cannot be reached.
   */
  static async open(opts: KubernetesRuntimeOptions): Promise<KubernetesRuntime> {
    const kc = new KubeConfig();
    if (opts.kubeconfig === undefined) kc.loadFromDefault();
    else kc.loadFromString(opts.kubeconfig);
    const settings = podSettings(opts);
    const rt = new KubernetesRuntime(kc, settings, opts);
    try {
      await rt.watch.watch(await rt.reconcileOnOpen());
    } catch (err) {
      throw new FerryError('TEMPORARILY_UNAVAILABLE', `Cannot reach the Kubernetes API for namespace '${opts.namespace}': ${describeApiError(err)}`, { cause: err });
    }
    return rt;
  }

  private get ns(): string {
    return this.settings.namespace;
  }

  /** The runtime's pods by name (the watch's cache). */
  private get pods(): ReadonlyMap<string, V1Pod> {
    return this.watch.pods;
  }

  /** Lists the objects and pods Ferry left; returns the pod list's resourceVersion (the watch starts there). */
  private async reconcileOnOpen(): Promise<string> {
    for (const g of await listLeftGroups({ core: this.core, apps: this.apps, networking: this.networking, policy: this.policy }, this.ns)) {
      if (!this.groups.has(g.name)) this.groups.set(g.name, newGroupState(g, undefined));
    }
    const resourceVersion = await this.watch.list();
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

  // --- pod changes ---

  /** A change the watch saw (`pods` has it already). */
  private onPod(type: PodEvent, name: string, pod: V1Pod): void {
    if (type === 'DELETED') {
      for (const resolve of this.goneWaiters.get(name) ?? []) resolve();
      this.goneWaiters.delete(name);
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
      const log = pod === undefined ? '' : await this.podLogs.read(r.podName, { previous: restarted, maxBytes: 64 * 1024 });
      this.podLogs.keep(r.handle.spec, log);
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
    const log = await this.podLogs.read(podName, { previous: failure.restarted, maxBytes: 64 * 1024 }) || failure.terminationMessage;
    if (group.spec !== undefined) this.podLogs.keep(group.spec, log);
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
    this.podLogs.keep(r.handle.spec, await this.podLogs.read(r.podName, { previous: false, maxBytes: 64 * 1024 }));
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
    this.podLogs.deleteEndpoint(endpoint);
  }

  async logs(endpoint: string, servedEntity: string, maxBytes: number): Promise<string> {
    if (!NAME_PATTERN.test(endpoint)) throw invalidParameter('endpoint', endpoint, 'an endpoint name');
    if (!NAME_PATTERN.test(servedEntity)) throw invalidParameter('servedEntity', servedEntity, 'a served entity name');
    return this.podLogs.entity(endpoint, servedEntity, maxBytes);
  }

  /**
   * Stops watching and forgets this runtime's replicas, leaving their pods serving (see the file
   * comment): the next `open` adopts them. Starts still waiting fail with TEMPORARILY_UNAVAILABLE.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.graceTimer);
    this.watch.close();
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
}

function newGroupState(group: Group, spec: ReplicaSpec | undefined): GroupState {
  return { ...group, spec, claimed: new Set(), waiters: [], adoptable: new Set(), retired: new Set(), chain: Promise.resolve() };
}
