/**
 * Pod logs for the Kubernetes runtime: a pod's container log tail, and the tails of an entity's
 * pods that are gone, kept in memory (Kubernetes deletes a pod's log with the pod; up to 256 KiB
 * per entity), so that `logs()` and crash reports still show them.
 */
import type { CoreV1Api } from '@kubernetes/client-node';
import { FerryError } from '../../errors.js';
import type { ReplicaSpec } from '../types.js';
import { CONTAINER, entitySelector, labelValue } from './objects.js';
import { describeApiError, tailBytes } from './pods.js';

/** Log tails of gone pods kept per entity. */
const KEPT_LOG_BYTES = 256 * 1024;
/** Most bytes of a pod's log read at once (a crash report or `logs()` needs the tail only). */
const POD_LOG_LIMIT_BYTES = 1024 * 1024;

export class PodLogs {
  /** Per entity ("endpoint/entity"): log tails of its pods that are gone, oldest first. */
  private readonly kept = new Map<string, string>();

  constructor(private readonly core: CoreV1Api, private readonly ns: string) {}

  /** The pod's container log tail ('' when the pod or its log is gone). */
  async read(podName: string, o: { previous: boolean; maxBytes: number }): Promise<string> {
    if (o.maxBytes <= 0 || podName === '') return '';
    try {
      // limitBytes bounds what the API server sends (from the start of the log); the tail is cut here.
      return await this.core.readNamespacedPodLog({ name: podName, namespace: this.ns, container: CONTAINER, previous: o.previous, limitBytes: Math.max(o.maxBytes, POD_LOG_LIMIT_BYTES) })
        .then((text) => tailBytes(text, o.maxBytes));
    } catch {
      return '';
    }
  }

  /** Keeps a gone (or going) pod's log under its entity. */
  keep(spec: ReplicaSpec, log: string): void {
    if (log === '') return;
    const key = entityKey(spec.endpoint, spec.servedEntity);
    this.kept.set(key, tailBytes((this.kept.get(key) ?? '') + (log.endsWith('\n') ? log : `${log}\n`), KEPT_LOG_BYTES));
  }

  /** Forgets the kept tails of the endpoint's entities. */
  deleteEndpoint(endpoint: string): void {
    const prefix = `${labelValue(endpoint)}/`;
    for (const key of this.kept.keys()) if (key.startsWith(prefix)) this.kept.delete(key);
  }

  /** The entity's kept tails, then its live pods' logs, oldest pod first; the last `maxBytes`. */
  async entity(endpoint: string, servedEntity: string, maxBytes: number): Promise<string> {
    const list = await this.core.listNamespacedPod({ namespace: this.ns, labelSelector: entitySelector(endpoint, servedEntity) }).catch((err: unknown) => {
      throw new FerryError('TEMPORARILY_UNAVAILABLE', `Cannot list the pods of '${endpoint}/${servedEntity}' in Kubernetes namespace '${this.ns}': ${describeApiError(err)}`, { cause: err, retryAfterS: 1 });
    });
    // creationTimestamp is a Date in client-node: compare times, not their text.
    const pods = list.items.sort((a, b) => new Date(a.metadata?.creationTimestamp ?? 0).getTime() - new Date(b.metadata?.creationTimestamp ?? 0).getTime());
    const live = await Promise.all(pods.map((p) => this.read(p.metadata?.name ?? '', { previous: false, maxBytes })));
    const all = Buffer.from((this.kept.get(entityKey(endpoint, servedEntity)) ?? '') + live.join(''));
    return all.subarray(Math.max(0, all.length - Math.max(0, maxBytes))).toString('utf8');
  }
}

function entityKey(endpoint: string, servedEntity: string): string {
  return `${labelValue(endpoint)}/${labelValue(servedEntity)}`;
}
