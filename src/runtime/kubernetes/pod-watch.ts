/**
 * The Kubernetes runtime's view of its pods (label `app.kubernetes.io/managed-by=ferry`): a cache
 * filled by a list, then kept current by a watch from the list's resourceVersion. When the watch
 * ends for any reason (410 Expired, the API server restarting, a network blip) the pods are
 * listed again, changes missed meanwhile applied (deletions included), and watched again; retried
 * with a growing pause until closed. Every change reaches the runtime through `onPod`, after the
 * cache has it.
 */
import { Watch, type CoreV1Api, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { backoffDelayMs, type Backoff } from '../../backoff.js';
import type { LogFn } from '../../logs/index.js';
import { MANAGED_BY } from './objects.js';

/** Pause before re-listing after a watch failed (the API server restarting, a network blip). */
const REWATCH_BACKOFF: Backoff = { baseMs: 1000, maxMs: 30_000 };

export type PodEvent = 'ADDED' | 'MODIFIED' | 'DELETED';

export class PodWatch {
  /** The runtime's pods by name, as last listed or watched. */
  readonly pods = new Map<string, V1Pod>();
  private watchAbort: AbortController | undefined;
  private rewatchTimer: NodeJS.Timeout | undefined;
  /** Failed re-lists in a row (the retry delay doubles with each). */
  private rewatchFailures = 0;
  private closed = false;

  constructor(
    private readonly kc: KubeConfig,
    private readonly core: CoreV1Api,
    private readonly ns: string,
    private readonly log: LogFn,
    /** Called for each change, once `pods` holds it (a deleted pod is gone from it). */
    private readonly onPod: (type: PodEvent, name: string, pod: V1Pod) => void,
  ) {}

  /** Lists the runtime's pods into the cache (pods no longer there count as deleted); returns the list's resourceVersion. */
  async list(): Promise<string> {
    const list = await this.core.listNamespacedPod({ namespace: this.ns, labelSelector: `${MANAGED_BY}=ferry` });
    const seen = new Set<string>();
    for (const pod of list.items) {
      const name = pod.metadata?.name;
      if (name === undefined) continue;
      seen.add(name);
      this.apply('MODIFIED', pod);
    }
    for (const [name, pod] of [...this.pods]) if (!seen.has(name)) this.apply('DELETED', pod);
    return list.metadata?.resourceVersion ?? '';
  }

  /** Watches the runtime's pods from `resourceVersion`; when the watch ends for any reason, `rewatch`. */
  async watch(resourceVersion: string): Promise<void> {
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
        else if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') this.apply(type, obj);
      },
      end,
    );
    if (this.closed) this.watchAbort.abort();
  }

  /** Stops watching (and re-listing) for good. */
  close(): void {
    this.closed = true;
    clearTimeout(this.rewatchTimer);
    this.watchAbort?.abort();
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
      this.list().then((rv) => {
        this.rewatchFailures = 0;
        return this.watch(rv);
      }).catch((err: unknown) => {
        this.rewatchFailures++;
        this.log('warn', 'watching pods failed; retrying', { error: err instanceof Error ? err.message : String(err), retry_in_ms: backoffDelayMs(this.rewatchFailures + 1, REWATCH_BACKOFF) });
        this.rewatch();
      });
    }, delayMs);
  }

  private apply(type: PodEvent, pod: V1Pod): void {
    const name = pod.metadata?.name;
    if (name === undefined) return;
    if (type === 'DELETED') this.pods.delete(name);
    else this.pods.set(name, pod);
    this.onPod(type, name, pod);
  }
}
