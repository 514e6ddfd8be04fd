/**
 * Replica discovery for the gateway in Kubernetes mode: the ready addresses of each served
 * entity's replica pods, from the EndpointSlices of the entity's Services, kept current by a watch.
 *
 * Every Ferry server replica runs one, so a gateway on any of them routes to the same pods the
 * leader started. The EndpointSlice controller copies a Service's labels onto its slices, so the
 * watch selects Ferry's slices by the Services' `app.kubernetes.io/managed-by: ferry` label, maps
 * each slice to its Service by `kubernetes.io/service-name`, and finds a served entity's Services
 * by the labels the runtime gives them (`entityLabels`). A served entity may have several
 * Services at once (one per replica group: during a rollout the old version's and the new one's);
 * `addressesOfService` tells them apart.
 *
 * A watch resumes from the last resourceVersion it saw. When the API server no longer has that
 * version (410 Gone, after a long disconnect or a compaction) it lists everything afresh and
 * reports the Services whose addresses changed meanwhile.
 */
import { ApiException, DiscoveryV1Api, Watch, type KubeConfig, type V1EndpointSlice } from '@kubernetes/client-node';
import { backoffDelayMs, type Backoff } from '../../backoff.js';

/** The label Ferry puts on the objects it manages; EndpointSlices inherit it from the Services. */
export const MANAGED_BY_SELECTOR = 'app.kubernetes.io/managed-by=ferry';
const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

/** One ready replica. */
export interface DiscoveredAddress {
  host: string;
  port: number;
  /** The pod behind it, when the slice names it. */
  pod: string | undefined;
}

export interface EndpointDiscoveryOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  /** Labels that every Service of a served entity carries (the runtime's labelling rule). */
  entityLabels: (endpoint: string, servedEntity: string) => Record<string, string>;
  /** The Service port replicas listen on, by name; default: the slice's only port. */
  portName?: string;
  /** Default MANAGED_BY_SELECTOR. */
  labelSelector?: string;
  /** First wait before re-watching after an error, doubling up to 30 s; default 500 ms. */
  retryDelayMs?: number;
  /** Errors talking to the API server (discovery keeps the last known addresses and retries), and listeners' errors. */
  onError?: (err: unknown) => void;
}

/** A slice's contribution: its Service, the Service's labels and the ready addresses it lists. */
interface SliceEntry {
  service: string;
  labels: Record<string, string>;
  addresses: DiscoveredAddress[];
}

/** A Service whose ready addresses changed. */
export interface DiscoveryChange {
  service: string;
  /** The Service's labels (as its EndpointSlices carry them); empty when it has no slice left. */
  labels: Record<string, string>;
}

const MAX_RETRY_DELAY_MS = 30_000;
/** Watches end server-side after this long and resume; bounds how long a silently dead connection goes unnoticed. */
const WATCH_TIMEOUT_S = 300;

/** Watches EndpointSlices until `close()`; `start()` resolves once the first list is in. */
export class EndpointDiscovery {
  private readonly api: DiscoveryV1Api;
  private readonly watch: Watch;
  private readonly labelSelector: string;
  private readonly retryDelayMs: number;
  /** `retryDelayMs`, doubling per consecutive failure, at most 30 s. */
  private readonly backoff: Backoff;
  /** Slices by name. */
  private slices = new Map<string, SliceEntry>();
  /** Services by name, derived from `slices`. */
  private byService = new Map<string, { labels: Record<string, string>; addresses: DiscoveredAddress[] }>();
  private readonly listeners: Array<(change: DiscoveryChange) => void> = [];
  private resourceVersion = '';
  private needsList = true;
  private failures = 0;
  private abort: AbortController | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly opts: EndpointDiscoveryOptions) {
    this.api = opts.kubeConfig.makeApiClient(DiscoveryV1Api);
    this.watch = new Watch(opts.kubeConfig);
    this.labelSelector = opts.labelSelector ?? MANAGED_BY_SELECTOR;
    this.retryDelayMs = opts.retryDelayMs ?? 500;
    this.backoff = { baseMs: this.retryDelayMs, maxMs: MAX_RETRY_DELAY_MS };
  }

  /** Lists the slices (rejecting if the API server cannot be reached), then watches. */
  async start(): Promise<void> {
    await this.list();
    await this.startWatch();
  }

  /** Ready addresses of all of a served entity's replicas (empty when none is ready or it is unknown). */
  addresses(endpoint: string, servedEntity: string): DiscoveredAddress[] {
    const wanted = Object.entries(this.opts.entityLabels(endpoint, servedEntity));
    return [...this.byService.values()]
      .filter((svc) => wanted.every(([k, v]) => svc.labels[k] === v))
      .flatMap((svc) => svc.addresses);
  }

  /** Ready addresses behind one Service (one replica group). */
  addressesOfService(service: string): DiscoveredAddress[] {
    return [...(this.byService.get(service)?.addresses ?? [])];
  }

  /** Called for each Service whose set of ready addresses changes. */
  onChange(listener: (change: DiscoveryChange) => void): void {
    this.listeners.push(listener);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.abort?.abort();
  }

  private async list(): Promise<void> {
    const list = await this.api.listNamespacedEndpointSlice({ namespace: this.opts.namespace, labelSelector: this.labelSelector });
    const slices = new Map<string, SliceEntry>();
    for (const slice of list.items) {
      const entry = this.entryOf(slice);
      if (entry !== undefined && slice.metadata?.name !== undefined) slices.set(slice.metadata.name, entry);
    }
    this.resourceVersion = list.metadata?.resourceVersion ?? '';
    this.needsList = false;
    this.replace(slices);
  }

  private async startWatch(): Promise<void> {
    if (this.closed) return;
    let expired = false;
    let events = 0;
    const abort = await this.watch.watch(
      `/apis/discovery.k8s.io/v1/namespaces/${encodeURIComponent(this.opts.namespace)}/endpointslices`,
      { labelSelector: this.labelSelector, resourceVersion: this.resourceVersion, allowWatchBookmarks: true, timeoutSeconds: WATCH_TIMEOUT_S },
      (type: string, obj: V1EndpointSlice & { code?: number }) => {
        events++;
        if (type === 'ERROR') {
          // The API server's watch cache no longer has our resourceVersion: start over from a list.
          if (obj.code === 410) expired = true;
          return;
        }
        const rv = obj.metadata?.resourceVersion;
        if (rv !== undefined) this.resourceVersion = rv;
        const name = obj.metadata?.name;
        if (type === 'BOOKMARK' || name === undefined) return;
        const slices = new Map(this.slices);
        const entry = type === 'DELETED' ? undefined : this.entryOf(obj);
        if (entry === undefined) slices.delete(name);
        else slices.set(name, entry);
        this.replace(slices);
      },
      (err: unknown) => {
        if (this.closed) return;
        if (expired || (err as { statusCode?: number } | null)?.statusCode === 410) this.needsList = true;
        if (err === null || err === undefined) {
          this.failures = 0;
        } else {
          this.failures++;
          this.opts.onError?.(err);
        }
        // A watch that ended after delivering something (timeoutSeconds, 410) resumes at once; one
        // that ended empty-handed waits a little, so a server ending watches at once is not hammered.
        const delayMs = this.failures > 0 ? backoffDelayMs(this.failures, this.backoff) : events > 0 ? 0 : this.retryDelayMs;
        this.retryTimer = setTimeout(() => void this.resume(), delayMs);
      },
    );
    // close() may have come while the watch was connecting.
    if (this.closed) abort.abort();
    this.abort = abort;
  }

  private async resume(): Promise<void> {
    if (this.closed) return;
    try {
      if (this.needsList) await this.list();
      await this.startWatch();
    } catch (err) {
      if (this.closed) return;
      this.failures++;
      this.opts.onError?.(err instanceof ApiException ? new Error(`listing EndpointSlices: HTTP ${err.code}`) : err);
      this.retryTimer = setTimeout(() => void this.resume(), backoffDelayMs(this.failures, this.backoff));
    }
  }

  /** The Service and ready addresses of a slice; undefined for a slice of no Service. */
  private entryOf(slice: V1EndpointSlice): SliceEntry | undefined {
    const labels = slice.metadata?.labels ?? {};
    const service = labels[SERVICE_NAME_LABEL];
    if (service === undefined) return undefined;
    const ports = slice.ports ?? [];
    const port = this.opts.portName === undefined ? (ports.length === 1 ? ports[0] : undefined) : ports.find((p) => p.name === this.opts.portName);
    if (port?.port === undefined) return { service, labels, addresses: [] };
    const addresses: DiscoveredAddress[] = [];
    // A slice without endpoints comes as `endpoints: null` on the wire.
    for (const ep of (slice.endpoints as V1EndpointSlice['endpoints'] | null) ?? []) {
      // An unset `ready` means unknown, which consumers are to treat as ready (discovery.k8s.io/v1).
      if (ep.conditions?.ready === false) continue;
      for (const host of ep.addresses) addresses.push({ host, port: port.port, pod: ep.targetRef?.kind === 'Pod' ? ep.targetRef.name : undefined });
    }
    return { service, labels, addresses };
  }

  /** Installs a new slice map and tells listeners about each Service whose addresses changed. */
  private replace(slices: Map<string, SliceEntry>): void {
    const byService = new Map<string, { labels: Record<string, string>; addresses: DiscoveredAddress[] }>();
    for (const entry of slices.values()) {
      const svc = byService.get(entry.service) ?? { labels: entry.labels, addresses: [] };
      // A large Service has several slices; a pod moving between them may briefly be in two.
      for (const a of entry.addresses) if (!svc.addresses.some((b) => b.host === a.host && b.port === a.port)) svc.addresses.push(a);
      byService.set(entry.service, svc);
    }
    for (const svc of byService.values()) svc.addresses.sort((a, b) => (a.host === b.host ? a.port - b.port : a.host < b.host ? -1 : 1));
    const changed: DiscoveryChange[] = [];
    for (const name of new Set([...this.byService.keys(), ...byService.keys()])) {
      const before = this.byService.get(name)?.addresses ?? [];
      const after = byService.get(name);
      if (JSON.stringify(before) !== JSON.stringify(after?.addresses ?? [])) changed.push({ service: name, labels: after?.labels ?? {} });
    }
    this.slices = slices;
    this.byService = byService;
    for (const change of changed) {
      for (const listener of this.listeners) {
        try {
          listener(change);
        } catch (err) {
          // The watch client would swallow it silently; report it and tell the other listeners.
          this.opts.onError?.(err);
        }
      }
    }
  }
}
