/**
 * Model-side metrics, kept by each replica process and read by the server: rows per model call
 * (the batcher's batch sizes, or a request's rows when it ran alone) and the duration of each
 * model call. A replica answers `GET /metrics` with a `ReplicaMetricsSnapshot` (JSON) on its
 * socket; the server scrapes its live replicas when its own `/metrics` is read (./scrape.ts), so
 * between scrapes this costs the replica two histogram updates per model call and nothing else.
 */
import http from 'node:http';
import type { ModelCacheStats } from '../multi/replica.js';
import { BATCH_ROWS_BUCKETS, Histogram, isSnapshotOf, MODEL_SECONDS_BUCKETS, type HistogramSnapshot } from './histogram.js';

/** A replica's answer to `GET /metrics`: histograms since the replica started. */
export interface ReplicaMetricsSnapshot {
  batch_rows: HistogramSnapshot;
  model_seconds: HistogramSnapshot;
  /** A family replica's model cache (src/multi `ModelCacheStats`): counters since it started, and its size now. */
  family?: FamilyCacheSnapshot;
}

/** A family replica's cache stats as the server reads them (the maximum load time is not summed). */
export type FamilyCacheSnapshot = Omit<ModelCacheStats, 'loadSecondsMax'>;

const FAMILY_FIELDS = ['models', 'bytes', 'budgetBytes', 'hits', 'misses', 'loads', 'loadFailures', 'evictions', 'loadSecondsSum'] as const;

function parseFamily(v: unknown): FamilyCacheSnapshot | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  return FAMILY_FIELDS.every((k) => typeof o[k] === 'number' && Number.isFinite(o[k]) && o[k] >= 0)
    ? Object.fromEntries(FAMILY_FIELDS.map((k) => [k, o[k]])) as unknown as FamilyCacheSnapshot
    : undefined;
}

export class ModelCallMetrics {
  private readonly batchRows = new Histogram(BATCH_ROWS_BUCKETS);
  private readonly modelSeconds = new Histogram(MODEL_SECONDS_BUCKETS);

  /** One model call of `rows` rows that took `seconds` (failed calls too). */
  observe(rows: number, seconds: number): void {
    this.batchRows.observe(rows);
    this.modelSeconds.observe(seconds);
  }

  snapshot(): ReplicaMetricsSnapshot {
    return { batch_rows: this.batchRows.snapshot(), model_seconds: this.modelSeconds.snapshot() };
  }
}

/** Checks a replica's answer field by field; undefined when it is not a snapshot. */
export function parseReplicaSnapshot(v: unknown): ReplicaMetricsSnapshot | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  if (!isSnapshotOf(o.batch_rows, BATCH_ROWS_BUCKETS) || !isSnapshotOf(o.model_seconds, MODEL_SECONDS_BUCKETS)) return undefined;
  const family = parseFamily(o.family);
  return { batch_rows: o.batch_rows, model_seconds: o.model_seconds, ...(family === undefined ? {} : { family }) };
}

/** Where a replica listens (the runtime's `ReplicaAddress`). */
export type ScrapeAddress = { kind: 'unix'; socketPath: string } | { kind: 'tcp'; host: string; port: number };

/** Largest `/metrics` answer read from a replica; a snapshot is ~1 KiB. */
const MAX_SNAPSHOT_BYTES = 64 * 1024;

/** GET /metrics from one replica over HTTP; rejects on any failure, a bad answer or after `timeoutMs`. */
export function fetchReplicaSnapshot(address: ScrapeAddress, timeoutMs: number): Promise<ReplicaMetricsSnapshot> {
  let timer: NodeJS.Timeout | undefined;
  return new Promise<ReplicaMetricsSnapshot>((resolve, reject) => {
    const target = address.kind === 'unix' ? { socketPath: address.socketPath } : { host: address.host, port: address.port };
    const req = http.get({ ...target, path: '/metrics', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_SNAPSHOT_BYTES) req.destroy(new Error(`answer over ${MAX_SNAPSHOT_BYTES} bytes`));
        else chunks.push(c);
      });
      res.on('end', () => {
        let parsed: unknown;
        try {
          parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          parsed = undefined;
        }
        const snapshot = res.statusCode === 200 ? parseReplicaSnapshot(parsed) : undefined;
        if (snapshot === undefined) reject(new Error(`unexpected answer (HTTP ${res.statusCode ?? '?'})`));
        else resolve(snapshot);
      });
      res.on('error', reject);
    });
    // One deadline for the whole exchange (connect, head and body), not per socket read.
    timer = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('error', reject);
  }).finally(() => clearTimeout(timer));
}
