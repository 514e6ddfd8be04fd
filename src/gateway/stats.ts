/**
 * GatewayStats: what the gateway saw of each served entity's requests (status, latency), kept
 * for a short while so the control plane can judge a canary: the new entities' 5xx share and p99
 * latency against the old ones' over one canary step.
 *
 * Bounded, like every queue and buffer in Ferry: each key keeps its newest `maxSamples` requests in a ring (older ones
 * fall off, so a window holding more requests than that is judged on its newest `maxSamples`), and
 * at most `maxKeys` keys exist (one more drops the key created first). `record` is O(1) and
 * allocates nothing once a key exists, so it can sit on the request path.
 *
 * Keys are `statsKey(endpoint, servedEntity, modelVersion)`: what the gateway knows of the entity
 * that answered (`EndpointRoute.name`, `EntityRoute.name`, `EntityRoute.modelVersion`).
 */

export interface GatewayStatsOptions {
  /** Requests remembered per key (default 1024). */
  maxSamples?: number;
  /** Keys remembered at most (default 1024). */
  maxKeys?: number;
  /** The clock samples are stamped with, ms; the reader's `sinceMs` uses the same clock (default Date.now). */
  now?: () => number;
}

/** Requests, 5xx answers and p99 latency over a window. */
export interface StatsSummary {
  requests: number;
  /** Answers with a status ≥ 500 (the gateway's own 503/504 included). */
  errors: number;
  /** errors ÷ requests; 0 without requests. */
  errorRate: number;
  /** Nearest-rank 99th percentile, ms; undefined without requests. */
  p99LatencyMs: number | undefined;
}

/** The key of one served entity: "lin/linear-2/2". */
export function statsKey(endpoint: string, servedEntity: string, modelVersion: string): string {
  return `${endpoint}/${servedEntity}/${modelVersion}`;
}

/** 1024 requests × 14 bytes ≈ 14 KiB per key; 1024 keys ≈ 14 MiB at most. */
const DEFAULT_MAX_SAMPLES = 1024;
const DEFAULT_MAX_KEYS = 1024;

/** One key's newest requests, oldest overwritten first. */
class Ring {
  readonly timesMs: Float64Array;
  readonly latenciesMs: Float32Array;
  readonly statuses: Uint16Array;
  next = 0;
  size = 0;

  constructor(capacity: number) {
    this.timesMs = new Float64Array(capacity);
    this.latenciesMs = new Float32Array(capacity);
    this.statuses = new Uint16Array(capacity);
  }

  push(timeMs: number, status: number, latencyMs: number): void {
    const i = this.next;
    this.timesMs[i] = timeMs;
    this.latenciesMs[i] = latencyMs;
    this.statuses[i] = status;
    this.next = (i + 1) % this.timesMs.length;
    if (this.size < this.timesMs.length) this.size++;
  }
}

export class GatewayStats {
  private readonly rings = new Map<string, Ring>();
  private readonly maxSamples: number;
  private readonly maxKeys: number;
  private readonly now: () => number;

  constructor(opts: GatewayStatsOptions = {}) {
    this.maxSamples = opts.maxSamples ?? DEFAULT_MAX_SAMPLES;
    this.maxKeys = opts.maxKeys ?? DEFAULT_MAX_KEYS;
    this.now = opts.now ?? Date.now;
  }

  /** One answered request: its HTTP status and how long the gateway held it, ms. */
  record(key: string, status: number, latencyMs: number): void {
    let ring = this.rings.get(key);
    if (ring === undefined) {
      if (this.rings.size >= this.maxKeys) {
        const oldest = this.rings.keys().next();
        if (oldest.done !== true) this.rings.delete(oldest.value);
      }
      ring = new Ring(this.maxSamples);
      this.rings.set(key, ring);
    }
    ring.push(this.now(), status, latencyMs);
  }

  /**
   * The requests of `keys` (pooled) recorded at or after `sinceMs`. Example: 10 requests since
   * then, 4 of them 500s, latencies 1..10 ms → { requests: 10, errors: 4, errorRate: 0.4, p99LatencyMs: 10 }.
   */
  summary(keys: readonly string[], sinceMs: number): StatsSummary {
    const latencies: number[] = [];
    let errors = 0;
    for (const key of keys) {
      const ring = this.rings.get(key);
      if (ring === undefined) continue;
      for (let n = 0, i = ring.next; n < ring.size; n++) {
        i = (i - 1 + ring.timesMs.length) % ring.timesMs.length; // newest first
        if ((ring.timesMs[i] ?? 0) < sinceMs) break;
        latencies.push(ring.latenciesMs[i] ?? 0);
        if ((ring.statuses[i] ?? 0) >= 500) errors++;
      }
    }
    const requests = latencies.length;
    latencies.sort((a, b) => a - b);
    return {
      requests,
      errors,
      errorRate: requests === 0 ? 0 : errors / requests,
      p99LatencyMs: requests === 0 ? undefined : latencies[Math.ceil(0.99 * requests) - 1],
    };
  }

  /** Drops a key (its entity is gone). */
  forget(key: string): void {
    this.rings.delete(key);
  }
}
