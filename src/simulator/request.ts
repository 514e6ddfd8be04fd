/**
 * The simulate request and answer, shared by `POST /api/2.0/serving-endpoints/{name}/simulate` and
 * `ferry simulate` (which runs the same code offline on a file or a pattern): the request's schema,
 * the traces that need no server, and {@link runSimulation}, which simulates the current config
 * (when there is one), the candidate and, when asked, the recommendation with its references.
 */
import { z } from 'zod';
import type { SimulateAnswer, SimulatedConfig as Simulated, SimulateRequestBody } from '../api/index.js';
import { configError } from '../config/index.js';
import { scalingConfigOf, type ScalingFields } from '../control/index.js';
import { FerryError, invalidParameter } from '../errors.js';
import { simulate, type ReplicaModel, type ServiceTime } from './engine.js';
import { KNATIVE_DEFAULTS, recommend, staticForPeak, type Goal, type Setting } from './recommend.js';
import { BUNDLED_TRACES, MAX_TRACE_REQUESTS, PATTERNS, checkPattern, generateTrace, parseTraceText, traceRequests, type Trace } from './trace.js';

/** The series holds the last hour; the inference table as long as its retention (a day by default). */
const MAX_SERIES_WINDOW_MS = 3_600_000;
const DEFAULT_INFERENCE_WINDOW_MS = 86_400_000;
/**
 * A recommendation simulates up to 90 settings; request-by-request traces longer than this make
 * that slower than an API call should be (rate traces are summed per second and stay fast).
 */
export const MAX_RECOMMEND_REQUESTS = 200_000;

/**
 * Expected requests of a rate trace at most: two days at 1,000 req/s. The closed form makes most
 * seconds cheap, but a config that keeps the pool full is simulated request by request.
 */
export const MAX_RATE_TRACE_REQUESTS = 172_800_000;

/** Replica model defaults when the entity has no measurements and the request gives none. */
export const DEFAULT_SERVICE_TIME_MS = 10;
export const DEFAULT_COLD_START_MS = 1000;

const num = (lo: number, hi: number): z.ZodNumber => z.number({ error: `expected a number from ${lo} to ${hi}` }).min(lo, { error: `expected a number from ${lo} to ${hi}` }).max(hi, { error: `expected a number from ${lo} to ${hi}` });
const int = (lo: number, hi: number): z.ZodNumber => num(lo, hi).int({ error: `expected an integer from ${lo} to ${hi}` });

const traceSchema = z.discriminatedUnion('source', [
  /** The endpoint's per-5-s request rate (`/metrics/series`), the last `window_ms`. */
  z.strictObject({ source: z.literal('series'), window_ms: int(5000, MAX_SERIES_WINDOW_MS).default(MAX_SERIES_WINDOW_MS) }),
  /** The endpoint's inference-table timestamps, the last `window_ms`. */
  z.strictObject({ source: z.literal('inference_table'), window_ms: int(1000, 30 * 86_400_000).default(DEFAULT_INFERENCE_WINDOW_MS) }),
  /** A CSV or JSON Lines file's text (see `parseTraceText`). */
  z.strictObject({ source: z.literal('file'), format: z.enum(['csv', 'jsonl']).default('csv'), data: z.string() }),
  z.strictObject({
    source: z.literal('pattern'),
    pattern: z.enum(PATTERNS),
    duration_ms: int(1000, 7 * 86_400_000).default(3_600_000),
    rps: num(0, 100_000),
    peak_rps: num(0, 100_000).optional(),
    at_ms: int(0, 7 * 86_400_000).default(0),
    burst_ms: int(0, 7 * 86_400_000).default(20_000),
    gap_ms: int(0, 7 * 86_400_000).default(120_000),
    seed: int(0, 2 ** 31).default(1),
  }),
  z.strictObject({ source: z.literal('bundled'), name: z.enum(['diurnal', 'bursty']) }),
], { error: 'expected a trace with "source" one of "series", "inference_table", "file", "pattern", "bundled"' });

export const simulateRequestSchema = z.strictObject({
  /** Which served entity's config and measurements to start from (default: the first). */
  served_entity_name: z.string().optional(),
  /** Scaling fields of a served entity (as in PUT .../config) that replace the current ones. */
  candidate: z.record(z.string(), z.unknown()).optional(),
  trace: traceSchema,
  replica: z.strictObject({
    service_time_ms: num(0.001, 600_000).optional(),
    cold_start_ms: num(0, 3_600_000).optional(),
    max_concurrency_per_replica: int(1, 100_000).optional(),
    buffer_depth: int(0, 1_000_000).optional(),
    buffer_timeout_ms: int(1, 3_600_000).optional(),
    overhead_ms: num(0, 60_000).default(0),
  }).default({ overhead_ms: 0 }),
  /**
   * Price of one replica-hour: one number, or per workload type and size, the most specific key
   * first: {"CPU": 0.1, "GPU_SMALL": 1.2, "GPU_SMALL/Large": 2.0}.
   */
  price_per_replica_hour: z.union([num(0, 1e6), z.record(z.string(), num(0, 1e6))]).optional(),
  recommend: z.strictObject({
    target_p99_ms: num(0.001, 3_600_000),
    max_cold_starts_per_hour: num(0, 1e6).optional(),
  }).optional(),
  seed: int(0, 2 ** 31).default(1),
});

export type SimulateRequest = z.output<typeof simulateRequestSchema>;
/** The request as a client sends it (defaults not applied yet). */
export type SimulateRequestInput = z.input<typeof simulateRequestSchema>;

/** `src/api`'s declaration of the body and this schema's input type agree both ways (checked by tsc when either changes). */
const apiBodyFits = (b: SimulateRequestBody): SimulateRequestInput => b;
const schemaInputFits = (b: SimulateRequestInput): SimulateRequestBody => b;
void apiBodyFits;
void schemaInputFits;

export type { SimulateAnswer } from '../api/index.js';
export type TraceSource = SimulateRequest['trace'];

/** Validates a simulate request body; errors are 400s naming the field. */
export function parseSimulateRequest(body: unknown): SimulateRequest {
  const r = simulateRequestSchema.safeParse(body);
  if (!r.success) throw configError(r.error, body);
  return r.data;
}

/** The trace of a source that needs no server (file, pattern, bundled); undefined for the others. */
export function localTrace(source: TraceSource): Trace | undefined {
  switch (source.source) {
    case 'file': return parseTraceText(source.data, source.format);
    case 'bundled': return generateTrace(BUNDLED_TRACES[source.name]);
    case 'pattern': {
      const p = {
        pattern: source.pattern, durationMs: source.duration_ms, rps: source.rps, peakRps: source.peak_rps ?? source.rps,
        atMs: source.at_ms, burstMs: source.burst_ms, gapMs: source.gap_ms, seed: source.seed,
      };
      checkPattern(p, 'trace');
      return generateTrace(p);
    }
    default: return undefined;
  }
}

/** What the server (or the CLI's defaults) knows about the entity besides the request. */
export interface SimulationContext {
  trace: Trace;
  /** The entity's current scaling fields; undefined offline (then only the candidate is simulated). */
  current: ScalingFields | undefined;
  /** The entity's measured model time (from its replicas' histograms), if any. */
  measuredServiceTime: ServiceTime | undefined;
  /** The entity's measured cold starts (ms), if any. */
  measuredColdStartsMs: readonly number[];
  /** The gateway's settings: per-replica bound, buffer depth and deadline. */
  gateway: { maxConcurrencyPerReplica: number; maxQueued: number; queueTimeoutMs: number };
}


/** `base` with `over`'s fields on top; `autoscaling` merged key by key. */
function merged(base: ScalingFields, over: Record<string, unknown>): ScalingFields {
  const autoscaling = over.autoscaling;
  return {
    ...base,
    ...over,
    ...(typeof autoscaling === 'object' && autoscaling !== null && !Array.isArray(autoscaling) ? { autoscaling: { ...base.autoscaling, ...autoscaling } } : {}),
  };
}

/**
 * Simulates the request: the current config (when `ctx.current` is known), the candidate (the
 * current fields with `candidate` on top) and, with `recommend`, the grid search, static
 * provisioning for the peak and Knative's defaults, all on the same trace and replica model.
 */
export function runSimulation(req: SimulateRequest, ctx: SimulationContext): SimulateAnswer {
  const r = req.replica;
  const serviceTime: ServiceTime = r.service_time_ms !== undefined ? { kind: 'fixed', ms: r.service_time_ms } : ctx.measuredServiceTime ?? { kind: 'fixed', ms: DEFAULT_SERVICE_TIME_MS };
  const coldStarts = r.cold_start_ms !== undefined ? [r.cold_start_ms] : ctx.measuredColdStartsMs.length > 0 ? ctx.measuredColdStartsMs : [DEFAULT_COLD_START_MS];
  const model: ReplicaModel = {
    serviceTime,
    coldStartMs: coldStarts,
    maxConcurrencyPerReplica: r.max_concurrency_per_replica ?? ctx.gateway.maxConcurrencyPerReplica,
    bufferDepth: r.buffer_depth ?? ctx.gateway.maxQueued,
    bufferTimeoutMs: r.buffer_timeout_ms ?? ctx.gateway.queueTimeoutMs,
    overheadMs: r.overhead_ms,
  };
  const requests = traceRequests(ctx.trace);
  if (ctx.trace.kind === 'requests' && requests > MAX_TRACE_REQUESTS) {
    throw invalidParameter('trace', `${requests} requests`, `at most ${MAX_TRACE_REQUESTS} requests (a shorter window, or a pattern)`);
  }
  if (requests > MAX_RATE_TRACE_REQUESTS) {
    throw invalidParameter('trace', `${Math.round(requests)} requests`, `at most ${MAX_RATE_TRACE_REQUESTS} requests (two days at 1,000 req/s; a lower rate or a shorter duration)`);
  }
  /** A replica-hour of this workload: "GPU_SMALL/Medium" (type and size) before "GPU_SMALL" (type). */
  const priceOf = (type: string, size: string): number | undefined => {
    const p = req.price_per_replica_hour;
    if (p === undefined || typeof p === 'number') return p;
    const v = p[`${type}/${size}`] ?? p[type];
    if (v === undefined) throw invalidParameter('price_per_replica_hour', p, `a price for "${type}/${size}" or "${type}" (workload_type/workload_size)`);
    return v;
  };
  const opts = { seed: req.seed };
  const run = (fields: ScalingFields, where: string): Simulated => {
    const { spec, workloadType, workloadSize } = scalingConfigOf(fields, where);
    const price = priceOf(workloadType, workloadSize);
    return { config: fields, result: simulate(ctx.trace, spec, model, { ...opts, ...(price === undefined ? {} : { pricePerReplicaHour: price }) }) };
  };

  const base = ctx.current ?? {};
  const candidateFields = merged(base, req.candidate ?? {});
  const answer: SimulateAnswer = {
    trace: { source: req.trace.source, requests: Math.round(requests), duration_s: ctx.trace.lengthMs / 1000 },
    replica_model: {
      service_time: serviceTime,
      service_time_source: r.service_time_ms !== undefined ? 'request' : ctx.measuredServiceTime !== undefined ? 'measured' : 'default',
      cold_start_ms: coldStarts,
      cold_start_source: r.cold_start_ms !== undefined ? 'request' : ctx.measuredColdStartsMs.length > 0 ? 'measured' : 'default',
      max_concurrency_per_replica: model.maxConcurrencyPerReplica,
      buffer_depth: model.bufferDepth,
      buffer_timeout_ms: model.bufferTimeoutMs,
      overhead_ms: model.overheadMs,
    },
    current: ctx.current === undefined ? null : run(ctx.current, 'current'),
    candidate: run(candidateFields, 'candidate'),
    recommendation: null,
  };
  if (req.recommend === undefined) return answer;

  if (ctx.trace.kind === 'requests' && requests > MAX_RECOMMEND_REQUESTS) {
    throw invalidParameter('recommend', req.recommend, `a trace of at most ${MAX_RECOMMEND_REQUESTS} requests (this one has ${requests}; use a shorter window)`);
  }
  const goal: Goal = { targetP99Ms: req.recommend.target_p99_ms, maxColdStartsPerHour: req.recommend.max_cold_starts_per_hour };
  const { workloadType, workloadSize } = scalingConfigOf(candidateFields, 'candidate');
  const price = priceOf(workloadType, workloadSize);
  const priced = { ...opts, ...(price === undefined ? {} : { pricePerReplicaHour: price }) };
  const settingFields = (s: Setting): ScalingFields => merged(candidateFields, {
    scale_to_zero_enabled: s.scale_to_zero_enabled,
    autoscaling: { target_concurrency: s.target_concurrency, stable_window_ms: s.stable_window_ms, scale_down_delay_ms: s.scale_down_delay_ms, panic_window_ms: Math.min(s.stable_window_ms, candidateFields.autoscaling?.panic_window_ms ?? 3000) },
  });
  const specOf = (s: Setting): ReturnType<typeof scalingConfigOf>['spec'] | undefined => {
    try {
      return scalingConfigOf(settingFields(s), 'candidate').spec;
    } catch (err) {
      if (err instanceof FerryError) return undefined; // ruled out by the candidate's bounds
      throw err;
    }
  };
  const found = recommend(ctx.trace, specOf, model, goal, priced);
  const candidateSpec = scalingConfigOf(candidateFields, 'candidate').spec;
  const staticPeak = staticForPeak(ctx.trace, (n) => ({ ...candidateSpec, minReplicas: n, maxReplicas: n }), candidateSpec.maxReplicas, model, goal, priced);
  const knative = simulate(ctx.trace, { ...candidateSpec, ...KNATIVE_DEFAULTS }, model, priced);
  answer.recommendation = {
    goal: { target_p99_ms: goal.targetP99Ms, max_cold_starts_per_hour: goal.maxColdStartsPerHour ?? null },
    setting: found.setting,
    config: found.setting === null ? null : settingFields(found.setting),
    result: found.result,
    evaluated: found.evaluated,
    feasible: found.feasible,
    static_peak: staticPeak,
    knative_defaults: knative,
    savings_vs_static_peak: found.result === null || staticPeak === null || staticPeak.result.replica_seconds === 0 ? null
      : Math.round((1 - found.result.replica_seconds / staticPeak.result.replica_seconds) * 1000) / 1000,
  };
  return answer;
}
