/**
 * The simulate API's shapes (`POST /api/2.0/serving-endpoints/{name}/simulate`; `ferry simulate`
 * prints the same answer offline): the request, each simulated config's result, and the
 * recommendation.
 */
import type { AutoscalingTunables, ServedEntityInput } from './serving-endpoints.js';

type ScalingKey = 'workload_size' | 'workload_type' | 'scale_to_zero_enabled' | 'min_provisioned_concurrency' | 'max_provisioned_concurrency';

/** A served entity's scaling fields, as `PUT .../config` takes them (an undefined field counts as absent). */
export type ScalingFields = { [K in ScalingKey]?: ServedEntityInput[K] | undefined } & {
  autoscaling?: { [K in keyof AutoscalingTunables]?: number | undefined } | undefined;
};

/** Where the simulated requests come from. */
export type TraceSourceInput =
  | { source: 'series'; window_ms?: number | undefined }
  | { source: 'inference_table'; window_ms?: number | undefined }
  | { source: 'file'; format?: 'csv' | 'jsonl' | undefined; data: string }
  | { source: 'pattern'; pattern: 'diurnal' | 'bursty' | 'steady' | 'step' | 'spike' | 'on_off'; duration_ms?: number | undefined; rps: number; peak_rps?: number | undefined; at_ms?: number | undefined; burst_ms?: number | undefined; gap_ms?: number | undefined; seed?: number | undefined }
  | { source: 'bundled'; name: 'diurnal' | 'bursty' };

/** The body of a simulate call (defaults not applied; an undefined field counts as absent). */
export interface SimulateRequestBody {
  /** Which served entity's config and measurements to start from (default: the first). */
  served_entity_name?: string | undefined;
  /** Scaling fields of a served entity (as in PUT .../config) that replace the current ones. */
  candidate?: Record<string, unknown> | undefined;
  trace: TraceSourceInput;
  replica?: {
    service_time_ms?: number | undefined;
    cold_start_ms?: number | undefined;
    max_concurrency_per_replica?: number | undefined;
    buffer_depth?: number | undefined;
    buffer_timeout_ms?: number | undefined;
    overhead_ms?: number | undefined;
  } | undefined;
  /** One number, or per workload type and size: {"CPU": 0.1, "GPU_SMALL/Large": 2.0}. */
  price_per_replica_hour?: number | Record<string, number> | undefined;
  recommend?: { target_p99_ms: number; max_cold_starts_per_hour?: number | undefined } | undefined;
  seed?: number | undefined;
}

/** How long one request keeps a replica busy: a constant, or draws from a histogram. */
export type ServiceTime =
  | { readonly kind: 'fixed'; readonly ms: number }
  /**
   * `boundsMs[i]` is bucket i's upper bound; `counts` has one more entry (the +Inf bucket, drawn
   * as the last bound). Draws are uniform within a bucket, then scaled so that their mean is
   * `meanMs` (the measured sum / count) when given: buckets are coarse (25–50 ms is one), the
   * mean is exact.
   */
  | { readonly kind: 'histogram'; readonly boundsMs: readonly number[]; readonly counts: readonly number[]; readonly meanMs?: number | undefined };

/** One point of the timeline: a span of `intervalS` seconds starting at `tS`. */
export interface TimelinePoint {
  t_s: number;
  /** Most replicas (ready + starting) at a tick in the span. */
  replicas: number;
  /** Fewest ready replicas at a tick in the span. */
  ready: number;
  /** Average of the concurrency samples the policy got. */
  concurrency: number;
  /** Requests per second that arrived. */
  rps: number;
  /** p99 latency of the requests that arrived in the span (ms); null when none was served. */
  p99_ms: number | null;
}

export interface SimulationResult {
  requests: number;
  served: number;
  /** Refused because the buffer was full (429). */
  refused_buffer_full: number;
  /** Refused after waiting `bufferTimeoutMs` (503). */
  refused_deadline: number;
  /** Requests that had to wait for room, and how long they waited. */
  waited: number;
  mean_wait_ms: number;
  max_wait_ms: number;
  p50_ms: number | null;
  p99_ms: number | null;
  max_ms: number | null;
  /** ∫ (ready + starting replicas) dt over the trace, in seconds. */
  replica_seconds: number;
  /** replica-hours × price, when a price was given. */
  cost: number | null;
  /** Replica starts, and those from zero ready replicas (each a cold start a request waits for). */
  replica_starts: number;
  cold_starts: number;
  cold_starts_per_hour: number;
  max_replicas: number;
  /** Autoscaler decisions that changed the desired count. */
  scale_events: number;
  duration_s: number;
  interval_s: number;
  timeline: TimelinePoint[];
}

/** The tunables and switches the search varies, in API shape. */
export interface SearchSetting {
  target_concurrency: number;
  scale_to_zero_enabled: boolean;
  stable_window_ms: number;
  scale_down_delay_ms: number;
}

export interface SimulatedConfig {
  config: ScalingFields;
  result: SimulationResult;
}

export interface SimulateAnswer {
  trace: { source: string; requests: number; duration_s: number };
  replica_model: {
    service_time: ServiceTime;
    service_time_source: 'request' | 'measured' | 'default';
    cold_start_ms: readonly number[];
    cold_start_source: 'request' | 'measured' | 'default';
    max_concurrency_per_replica: number;
    buffer_depth: number;
    buffer_timeout_ms: number;
    overhead_ms: number;
  };
  current: SimulatedConfig | null;
  candidate: SimulatedConfig;
  recommendation: null | {
    goal: { target_p99_ms: number; max_cold_starts_per_hour: number | null };
    setting: SearchSetting | null;
    config: ScalingFields | null;
    result: SimulationResult | null;
    evaluated: number;
    feasible: number;
    static_peak: { replicas: number; result: SimulationResult } | null;
    knative_defaults: SimulationResult;
    /** 1 − recommended / static replica-seconds (0.4 = 40% fewer); null without both. */
    savings_vs_static_peak: number | null;
  };
}

/** The answer of the simulate route: the simulate answer for one served entity of an endpoint. */
export type SimulateResponse = SimulateAnswer & { endpoint: string; served_entity_name: string };
