/**
 * The metrics series API's shape (`GET /api/2.0/serving-endpoints/{name}/metrics/series?window=15m`):
 * an endpoint's recent history in fixed slots, for dashboards.
 */

/** One point of a series: a slot of `interval_s` seconds starting at `timestamp_ms`. */
export interface SeriesPoint {
  timestamp_ms: number;
  /** Inference requests answered in the slot, per second. */
  qps: number;
  /** Latency percentiles of the successful (2xx) requests; null when there were none. */
  p50_ms: number | null;
  p99_ms: number | null;
  /** Share of answers that were 5xx; null without requests. */
  error_rate: number | null;
  /** Replica counts at the slot's last sample; in-flight and queued requests averaged over its samples. Null when not sampled. */
  replicas_ready: number | null;
  replicas_desired: number | null;
  in_flight: number | null;
  queued: number | null;
}

/** The answer: the endpoint's points, oldest first, and each served entity's, by entity name. */
export interface MetricsSeries {
  endpoint: string;
  interval_s: number;
  points: SeriesPoint[];
  served_entities: Record<string, SeriesPoint[]>;
}
