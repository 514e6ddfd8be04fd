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
import type { MetricFamily } from './exposition.js';
import { fetchReplicaSnapshot, type FamilyCacheSnapshot, type ReplicaMetricsSnapshot } from './replica.js';

/** Family cache counters that only grow; a gone replica's last values are carried (see the file comment). */
const FAMILY_COUNTERS = [
  ['hits', 'ferry_family_cache_hits_total', 'Requests whose model was already loaded in the family replica.'],
  ['misses', 'ferry_family_cache_misses_total', 'Requests whose model had to be loaded first.'],
  ['loads', 'ferry_family_model_loads_total', 'Family models loaded (concurrent misses for one model load once).'],
  ['loadFailures', 'ferry_family_model_load_failures_total', 'Family model loads that failed.'],
  ['evictions', 'ferry_family_evictions_total', 'Family models evicted (least recently used) to stay within the cache budget.'],
  ['loadSecondsSum', 'ferry_family_model_load_seconds_total', 'Time spent loading family models (divide by loads for the mean).'],
] as const;
type FamilyCounter = (typeof FAMILY_COUNTERS)[number][0];

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
  /** Family cache counters of replicas that are gone, per entity key. */
  private readonly carriedFamily = new Map<string, Record<FamilyCounter, number>>();
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
      if (r.snapshot.family !== undefined) addCounters(this.familyCarry(entityKey(r.endpoint, r.servedEntity)), r.snapshot.family);
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

  /**
   * The family cache metrics of the endpoints `visible` shows: per replica the models and bytes
   * loaded now, per served entity the counters (live replicas plus carried ones).
   */
  familyMetrics(visible: (endpoint: string) => boolean): MetricFamily[] {
    const counters = new Map<string, Record<FamilyCounter, number>>();
    const sum = (key: string): Record<FamilyCounter, number> => {
      let c = counters.get(key);
      if (c === undefined) counters.set(key, c = zeroCounters());
      return c;
    };
    for (const [key, c] of this.carriedFamily) addCounters(sum(key), c);
    const live: Array<{ labels: Record<string, string>; f: FamilyCacheSnapshot }> = [];
    for (const [id, r] of this.last) {
      const f = r.snapshot.family;
      if (f === undefined) continue;
      const key = entityKey(r.endpoint, r.servedEntity);
      addCounters(sum(key), f);
      live.push({ labels: { endpoint: r.endpoint, served_entity: r.servedEntity, replica: id }, f });
    }
    const shown = [...counters].filter(([key]) => visible(key.slice(0, key.indexOf('\0')))).sort(([a], [b]) => a.localeCompare(b));
    if (shown.length === 0) return [];
    const entityLabels = (key: string): Record<string, string> => ({ endpoint: key.slice(0, key.indexOf('\0')), served_entity: key.slice(key.indexOf('\0') + 1) });
    const replicas = live.filter((x) => visible(x.labels.endpoint ?? '')).sort((a, b) => (a.labels.replica ?? '').localeCompare(b.labels.replica ?? ''));
    return [
      { name: 'ferry_family_models_loaded', type: 'gauge', help: 'Family models a replica holds in memory now.', samples: replicas.map((x) => ({ labels: x.labels, value: x.f.models })) },
      { name: 'ferry_family_cache_bytes', type: 'gauge', help: 'Bytes of family models a replica holds now (at most its cache budget).', samples: replicas.map((x) => ({ labels: x.labels, value: x.f.bytes })) },
      { name: 'ferry_family_cache_budget_bytes', type: 'gauge', help: 'A family replica\'s model cache budget.', samples: replicas.map((x) => ({ labels: x.labels, value: x.f.budgetBytes })) },
      ...FAMILY_COUNTERS.map(([field, name, help]): MetricFamily => ({
        name, type: 'counter', help, samples: shown.map(([key, c]) => ({ labels: entityLabels(key), value: c[field] })),
      })),
    ];
  }

  /** Forgets what belongs to endpoints that no longer exist, their replicas' last snapshots included. */
  prune(exists: (endpoint: string) => boolean): void {
    for (const [id, r] of this.last) if (!exists(r.endpoint)) this.last.delete(id);
    for (const key of this.carried.keys()) if (!exists(key.slice(0, key.indexOf('\0')))) this.carried.delete(key);
    for (const key of this.carriedFamily.keys()) if (!exists(key.slice(0, key.indexOf('\0')))) this.carriedFamily.delete(key);
    for (const endpoint of this.errors.keys()) if (!exists(endpoint)) this.errors.delete(endpoint);
  }

  private familyCarry(key: string): Record<FamilyCounter, number> {
    let c = this.carriedFamily.get(key);
    if (c === undefined) this.carriedFamily.set(key, c = zeroCounters());
    return c;
  }

  private carry(endpoint: string, servedEntity: string): Totals {
    const key = entityKey(endpoint, servedEntity);
    let c = this.carried.get(key);
    if (c === undefined) this.carried.set(key, c = { batchRows: new Histogram(BATCH_ROWS_BUCKETS), modelSeconds: new Histogram(MODEL_SECONDS_BUCKETS) });
    return c;
  }
}

function zeroCounters(): Record<FamilyCounter, number> {
  return { hits: 0, misses: 0, loads: 0, loadFailures: 0, evictions: 0, loadSecondsSum: 0 };
}

function addCounters(into: Record<FamilyCounter, number>, from: Record<FamilyCounter, number>): void {
  for (const [field] of FAMILY_COUNTERS) into[field] += from[field];
}
