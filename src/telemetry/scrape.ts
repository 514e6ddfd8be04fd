/**
 * Reads the replicas' model-side metrics when the server's `/metrics` is read, and adds them up
 * per served entity. Between scrapes nothing happens.
 *
 * A replica's histograms start at zero when the process starts and vanish when it exits. So that
 * an entity's totals never go down (Prometheus would read a decrease as a counter reset), the last
 * snapshot of every replica that is gone is folded into a per-entity carry. What a replica
 * counted after its last scrape and before it exited is lost.
 */
import type { ReplicaHandle } from '../runtime/index.js';
import { BATCH_ROWS_BUCKETS, Histogram, MODEL_SECONDS_BUCKETS, type HistogramSnapshot } from './histogram.js';
import { fetchReplicaSnapshot, type ReplicaMetricsSnapshot } from './replica.js';

export interface ScrapeOptions {
  /** Replicas read at the same time. */
  concurrency: number;
  /** How long one replica may take to answer; a late one is skipped and counted as an error. */
  timeoutMs: number;
}

/** Model-side totals of one served entity. */
export interface EntityModelTotals {
  batchRows: HistogramSnapshot;
  modelSeconds: HistogramSnapshot;
}

interface Totals {
  batchRows: Histogram;
  modelSeconds: Histogram;
}

/** The key of a served entity in per-entity maps. */
export const entityKey = (endpoint: string, servedEntity: string): string => `${endpoint}\0${servedEntity}`;

export class ReplicaScraper {
  /** The last snapshot of each live replica, with its entity. */
  private readonly last = new Map<string, { endpoint: string; servedEntity: string; snapshot: ReplicaMetricsSnapshot }>();
  /** Totals of replicas that are gone, per entity key. */
  private readonly carried = new Map<string, Totals>();
  /** Failed scrapes, per endpoint. */
  readonly errors = new Map<string, number>();

  constructor(private readonly opts: ScrapeOptions) {}

  /**
   * Reads the replicas among `live` whose endpoint passes `wanted`, at most `concurrency` at a
   * time. `live` must list every live replica: one missing from it is taken as gone.
   */
  async scrape(live: readonly ReplicaHandle[], wanted: (endpoint: string) => boolean): Promise<void> {
    const liveIds = new Set(live.map((h) => h.id));
    for (const [id, r] of this.last) {
      if (liveIds.has(id)) continue;
      this.last.delete(id);
      this.carry(r.endpoint, r.servedEntity).batchRows.add(r.snapshot.batch_rows);
      this.carry(r.endpoint, r.servedEntity).modelSeconds.add(r.snapshot.model_seconds);
    }
    const queue = live.filter((h) => wanted(h.spec.endpoint));
    const worker = async (): Promise<void> => {
      for (let h = queue.shift(); h !== undefined; h = queue.shift()) {
        const { endpoint, servedEntity } = h.spec;
        try {
          const snapshot = await fetchReplicaSnapshot(h.address, this.opts.timeoutMs);
          const prev = this.last.get(h.id);
          // Two overlapping scrapes may finish out of order: keep the newer (larger) snapshot.
          if (prev === undefined || snapshot.model_seconds.count >= prev.snapshot.model_seconds.count) this.last.set(h.id, { endpoint, servedEntity, snapshot });
        } catch {
          this.errors.set(endpoint, (this.errors.get(endpoint) ?? 0) + 1);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.opts.concurrency, queue.length) }, worker));
  }

  /** Per entity key (`endpoint\0entity`): carried totals plus the live replicas' last snapshots. */
  totals(): Map<string, EntityModelTotals> {
    const sums = new Map<string, Totals>();
    const sum = (key: string): Totals => {
      let t = sums.get(key);
      if (t === undefined) sums.set(key, t = { batchRows: new Histogram(BATCH_ROWS_BUCKETS), modelSeconds: new Histogram(MODEL_SECONDS_BUCKETS) });
      return t;
    };
    for (const [key, c] of this.carried) {
      sum(key).batchRows.add(c.batchRows.snapshot());
      sum(key).modelSeconds.add(c.modelSeconds.snapshot());
    }
    for (const r of this.last.values()) {
      const t = sum(entityKey(r.endpoint, r.servedEntity));
      t.batchRows.add(r.snapshot.batch_rows);
      t.modelSeconds.add(r.snapshot.model_seconds);
    }
    return new Map([...sums].map(([k, t]) => [k, { batchRows: t.batchRows.snapshot(), modelSeconds: t.modelSeconds.snapshot() }]));
  }

  /** Forgets what belongs to endpoints that no longer exist. */
  prune(exists: (endpoint: string) => boolean): void {
    for (const key of this.carried.keys()) if (!exists(key.slice(0, key.indexOf('\0')))) this.carried.delete(key);
    for (const endpoint of this.errors.keys()) if (!exists(endpoint)) this.errors.delete(endpoint);
  }

  private carry(endpoint: string, servedEntity: string): Totals {
    const key = entityKey(endpoint, servedEntity);
    let c = this.carried.get(key);
    if (c === undefined) this.carried.set(key, c = { batchRows: new Histogram(BATCH_ROWS_BUCKETS), modelSeconds: new Histogram(MODEL_SECONDS_BUCKETS) });
    return c;
  }
}
