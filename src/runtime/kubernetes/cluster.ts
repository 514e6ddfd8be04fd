/**
 * A Ferry server's place among its peers in one namespace: the leader election over a Lease
 * (./leader.ts), the `ferry.dev/role=leader` label on the leader's own pod (the `ferry-api`
 * Service selects the leader by it), and the ready replica addresses from EndpointSlices
 * (./discovery.ts) that a follower's gateway routes to.
 */
import { ApiException, CoreV1Api, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import type { Cluster, ClusterOptions, DiscoveredReplica } from '../types.js';
import { EndpointDiscovery } from './discovery.js';
import { LeaderElector } from './leader.js';
import { LABEL_ENDPOINT, LABEL_ENTITY, MANAGED_BY, labelValue } from './objects.js';

/** The label the leader puts on its own pod; the install manifests' `ferry-api` Service selects it. */
export const ROLE_LABEL = 'ferry.dev/role';
const MERGE_PATCH = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

export class KubernetesCluster implements Cluster {
  private readonly core: CoreV1Api;

  private constructor(
    private readonly opts: ClusterOptions,
    private readonly elector: LeaderElector,
    private readonly discovery: EndpointDiscovery,
    kc: KubeConfig,
  ) {
    this.core = kc.makeApiClient(CoreV1Api);
  }

  /** Lists the replicas' EndpointSlices and watches them (rejects when the API cannot be reached); the election starts with `elect`. */
  static async open(opts: ClusterOptions): Promise<KubernetesCluster> {
    const kc = new KubeConfig();
    if (opts.kubeconfig === undefined) kc.loadFromDefault();
    else kc.loadFromString(opts.kubeconfig);
    const discovery = new EndpointDiscovery({
      kubeConfig: kc, namespace: opts.namespace, onError: opts.onError,
      // The labels the runtime gives every object of an entity's replica groups (objects.ts groupOf).
      entityLabels: (endpoint, servedEntity) => ({ [MANAGED_BY]: 'ferry', [LABEL_ENDPOINT]: labelValue(endpoint), [LABEL_ENTITY]: labelValue(servedEntity) }),
    });
    const elector = new LeaderElector({
      kubeConfig: kc, namespace: opts.namespace, leaseName: opts.leaseName, identity: opts.identity,
      leaseDurationMs: opts.leaseDurationMs, renewIntervalMs: opts.renewIntervalMs, onError: opts.onError,
    });
    await discovery.start();
    return new KubernetesCluster(opts, elector, discovery, kc);
  }

  get identity(): string {
    return this.opts.identity;
  }

  async elect(): Promise<void> {
    this.elector.start();
    await this.elector.looked();
  }

  isLeader(): boolean {
    return this.elector.isLeader();
  }

  onLeadershipChange(listener: (leading: boolean) => void): void {
    this.elector.onChange(listener);
  }

  addresses(endpoint: string, servedEntity: string): DiscoveredReplica[] {
    return this.discovery.addresses(endpoint, servedEntity);
  }

  onAddressesChange(listener: () => void): void {
    this.discovery.onChange(() => listener());
  }

  async markLeader(leading: boolean): Promise<void> {
    const pod = this.opts.podName;
    if (pod === undefined) return;
    try {
      // A merge patch's null removes the label.
      await this.core.patchNamespacedPod({ name: pod, namespace: this.opts.namespace, body: { metadata: { labels: { [ROLE_LABEL]: leading ? 'leader' : null } } } }, MERGE_PATCH);
    } catch (err) {
      throw new Error(`Labelling pod '${pod}' ${ROLE_LABEL}=${leading ? 'leader' : '(none)'} failed: ${err instanceof ApiException ? `HTTP ${err.code}` : String(err)}`, { cause: err });
    }
  }

  async close(): Promise<void> {
    this.discovery.close();
    await this.elector.close();
  }
}
