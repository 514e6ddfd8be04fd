/**
 * Fixed-bucket histograms (Prometheus semantics): each bucket counts observations ≤ its upper
 * bound, plus a last +Inf bucket; `sum` and `count` of all observations. The buckets are fixed per
 * quantity so that histograms from many replicas (and from before a replica restarted) add up
 * bucket by bucket.
 */

/**
 * Upper bounds (seconds) of the gateway's request time: a tiny model answers in well under a
 * millisecond through the gateway, a heavy one in tens of ms, and the default request timeout is
 * 30 s (requests cut off at 600 s at most land in +Inf).
 */
export const REQUEST_SECONDS_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/**
 * Upper bounds (seconds) of the wait in an entity's buffer: 0 for almost every request (a replica
 * had room), up to `bufferTimeout` (default 10 s) while replicas start or are all busy.
 */
export const QUEUE_SECONDS_BUCKETS: readonly number[] = [0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10];
/**
 * Upper bounds (seconds) of one model call in a replica: from a few µs (linear model, inline) to
 * seconds (a large batch on a heavy model).
 */
export const MODEL_SECONDS_BUCKETS: readonly number[] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/**
 * Upper bounds (seconds) of a replica start (asked → ready): ~0.1 s from the warm pool for a small
 * model, ~0.3 s spawned, up to `replicaStartTimeout` (default 60 s) for a large model.
 */
export const COLD_START_SECONDS_BUCKETS: readonly number[] = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
/** Upper bounds of the rows in one model call: powers of two up to the default max batch, then coarse. */
export const BATCH_ROWS_BUCKETS: readonly number[] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 16384];

/** A histogram's state as plain data (what a replica sends, what the writer prints). */
export interface HistogramSnapshot {
  /** Observations per bucket, NOT cumulative: one per bound, then the +Inf bucket. */
  counts: number[];
  sum: number;
  count: number;
}

export class Histogram {
  private readonly counts: Float64Array;
  private sum = 0;
  private count = 0;

  /** `bounds`: increasing upper bounds, without +Inf. */
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && value > (b[i] as number)) i++;
    this.counts[i] = (this.counts[i] ?? 0) + 1;
    this.sum += value;
    this.count++;
  }

  /** Adds another histogram of the same bounds (a replica's, a finished replica's last state). */
  add(s: HistogramSnapshot): void {
    for (let i = 0; i < this.counts.length; i++) this.counts[i] = (this.counts[i] ?? 0) + (s.counts[i] ?? 0);
    this.sum += s.sum;
    this.count += s.count;
  }

  snapshot(): HistogramSnapshot {
    return { counts: [...this.counts], sum: this.sum, count: this.count };
  }
}

/** Whether `v` is a snapshot of a histogram with `bounds` (a replica's answer is checked before use). */
export function isSnapshotOf(v: unknown, bounds: readonly number[]): v is HistogramSnapshot {
  if (typeof v !== 'object' || v === null) return false;
  const s = v as Record<string, unknown>;
  const finite = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x) && x >= 0;
  return Array.isArray(s.counts) && s.counts.length === bounds.length + 1 && s.counts.every(finite) && finite(s.sum) && finite(s.count);
}
