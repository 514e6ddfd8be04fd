/**
 * The scaling policy: how many replicas one served entity should have, as a pure function of the
 * concurrency samples recorded so far, the replicas the caller has, and an injected clock
 * (Knative's `Scale(logger, now)` likewise). No timers, no `Date.now()`: the controller calls {@link record} and
 * {@link decide} once a second per served entity (and again at once when a request arrives for an
 * entity with no replicas — a "poke"), and tests walk virtual time.
 *
 * The shape follows Knative's KPA (a long stable window, a short panic window for bursts, a
 * scale-down delay, a scale-to-zero grace period, "no data → no decision") and Ray Serve's policy
 * (desired = ceil(ongoing requests / target per replica), scale from zero at once). The windows are
 * shorter than Knative's, because a replica here is a local process, not a pod: see
 * {@link DEFAULT_SCALING_TUNABLES}.
 *
 * What the policy does NOT decide, and the caller must: which replicas to stop. The caller never
 * stops a replica that is still starting (docs/architecture.md, "Control loop"); when `desiredReplicas` is
 * below ready + starting it stops ready ones only, and at most `ready + starting − desired` of them.
 * The caller also publishes each {@link Decision} (with its `inputs`) on the
 * `ferry:autoscaler:decision` diagnostics channel (src/diagnostics.ts) and logs it.
 */
import { z } from 'zod';
import { configError } from '../config/index.js';
import { invalidParameter } from '../errors.js';

// ---------------------------------------------------------------------------------------------
// Spec
// ---------------------------------------------------------------------------------------------

/** Compiled, frozen scaling parameters of one served entity. Every duration is in milliseconds. */
export interface ScalingSpec {
  /** In-flight + queued requests one replica should carry; desired = ceil(concurrency / this). */
  readonly targetConcurrency: number;
  /** Fewest replicas; 0 only when the entity has scale-to-zero enabled. */
  readonly minReplicas: number;
  /** Most replicas (≥ 1, ≥ minReplicas). */
  readonly maxReplicas: number;
  /** Window the stable (normal) desired count averages over. */
  readonly stableWindowMs: number;
  /** Short window that detects bursts (≤ stableWindowMs). */
  readonly panicWindowMs: number;
  /** Panic when the panic-window desired count ≥ this × (ready + starting) replicas. */
  readonly panicThreshold: number;
  /** The result is never below the largest desired count of this trailing window. */
  readonly scaleDownDelayMs: number;
  /** Scale to zero only after every sample of this long was 0. */
  readonly scaleToZeroGraceMs: number;
  /** One decision asks for at most ceil(this × max(ready, 1)) replicas, and always allows +1. */
  readonly maxScaleUpRate: number;
}

/** The tunable (per-server or per-entity) fields of a {@link ScalingSpec}. */
export type ScalingTunables = Omit<ScalingSpec, 'minReplicas' | 'maxReplicas'>;

/**
 * Defaults, and why:
 * - `targetConcurrency` 4: a replica runs a batching model server; 4 concurrent requests keep it
 *   busy (batches form) without queueing long behind one another.
 * - `stableWindowMs` 30 s (Knative: 60 s): a replica on one machine is a local process that loads a
 *   model in seconds, not a pod that waits for scheduling and an image pull, and there is no fleet
 *   of per-pod metrics to smooth. A wrong guess costs seconds, so the policy can react twice as fast.
 * - `panicWindowMs` 3 s: a tenth of the stable window, enough samples (3) to not panic on one spike.
 * - `panicThreshold` 2.0: panic when the burst needs at least twice the capacity we have or asked for.
 * - `scaleDownDelayMs` 10 s: a load that dips and returns within 10 s does not stop and restart a
 *   replica (a restart reloads the model).
 * - `scaleToZeroGraceMs` 30 s: an idle entity holds its last replica half a minute before the next
 *   request has to wait for a cold start.
 * - `maxScaleUpRate` 10: ×10 per decision (per second) reaches any size quickly while one bad
 *   sample cannot ask for hundreds of replicas from one.
 */
export const DEFAULT_SCALING_TUNABLES: Readonly<ScalingTunables> = Object.freeze({
  targetConcurrency: 4,
  stableWindowMs: 30_000,
  panicWindowMs: 3_000,
  panicThreshold: 2,
  scaleDownDelayMs: 10_000,
  scaleToZeroGraceMs: 30_000,
  maxScaleUpRate: 10,
});

/** Concurrent requests each workload size provisions for (the Databricks ranges). */
export const WORKLOAD_CONCURRENCY: Readonly<Record<'Small' | 'Medium' | 'Large', { readonly min: number; readonly max: number }>> = Object.freeze({
  Small: Object.freeze({ min: 0, max: 4 }),
  Medium: Object.freeze({ min: 8, max: 16 }),
  Large: Object.freeze({ min: 16, max: 64 }),
});

/**
 * The served-entity fields the policy needs. A compiled `ServedEntityConfig` (src/control) fits;
 * the shape is repeated here so that the control plane can import the autoscaler without a cycle.
 */
export interface ScalableEntity {
  workloadSize: 'Small' | 'Medium' | 'Large';
  scaleToZeroEnabled: boolean;
  minProvisionedConcurrency?: number | undefined;
  maxProvisionedConcurrency?: number | undefined;
}

const HOUR_MS = 3_600_000;

function ranged(lo: number, hi: number, integer: boolean): z.ZodOptional<z.ZodNumber> {
  const expected = `expected ${integer ? 'an integer' : 'a number'} from ${lo} to ${hi}`;
  const n = z.number({ error: expected }).min(lo, { error: expected }).max(hi, { error: expected });
  return (integer ? n.int({ error: expected }) : n).optional();
}

/** Allowed ranges of the tunables; unknown keys are errors. */
const tunablesSchema = z.strictObject({
  targetConcurrency: ranged(0.1, 1000, false),
  stableWindowMs: ranged(1000, HOUR_MS, true),
  panicWindowMs: ranged(1000, HOUR_MS, true),
  panicThreshold: ranged(1.1, 10, false),
  scaleDownDelayMs: ranged(0, HOUR_MS, true),
  scaleToZeroGraceMs: ranged(0, HOUR_MS, true),
  maxScaleUpRate: ranged(1, 1000, false),
});

/**
 * Compiles a served entity's scaling spec. The workload size gives a concurrency range (Small 0–4,
 * Medium 8–16, Large 16–64 concurrent requests; with scale-to-zero enabled the lower bound is 0,
 * as in Databricks); `min_provisioned_concurrency` / `max_provisioned_concurrency` replace either
 * bound. Concurrency becomes replicas through the target:
 * `minReplicas = ceil(minConcurrency / target)`, `maxReplicas = ceil(maxConcurrency / target)`, and
 * `minReplicas` is at least 1 unless scale-to-zero is enabled.
 *
 * Example: Medium, target 4 → ceil(8 / 4) = 2 .. ceil(16 / 4) = 4 replicas. Large → 4..16.
 * Small → 1..1 (0..1 with scale-to-zero). Medium with `max_provisioned_concurrency` 40 → 2..10.
 *
 * @throws FerryError INVALID_PARAMETER_VALUE naming the key, its value and the allowed range, e.g.
 *   `Invalid value 0.5 for 'panicThreshold': expected a number from 1.1 to 10.`
 */
export function scalingSpecFor(entity: ScalableEntity, tunables: { [K in keyof ScalingTunables]?: number | undefined } = {}): ScalingSpec {
  const parsed = tunablesSchema.safeParse(tunables);
  if (!parsed.success) throw configError(parsed.error, tunables);
  const t: { -readonly [K in keyof ScalingTunables]: number } = { ...DEFAULT_SCALING_TUNABLES };
  for (const [key, value] of Object.entries(parsed.data) as Array<[keyof ScalingTunables, number | undefined]>) {
    if (value !== undefined) t[key] = value;
  }
  if (t.panicWindowMs > t.stableWindowMs) {
    throw invalidParameter('panicWindowMs', t.panicWindowMs, `an integer from 1000 to stableWindowMs (${t.stableWindowMs})`);
  }

  const size = WORKLOAD_CONCURRENCY[entity.workloadSize];
  const minOverride = entity.minProvisionedConcurrency;
  const maxOverride = entity.maxProvisionedConcurrency;
  if (minOverride !== undefined && !(Number.isSafeInteger(minOverride) && minOverride >= 0)) {
    throw invalidParameter('min_provisioned_concurrency', minOverride, 'an integer of at least 0');
  }
  if (maxOverride !== undefined && !(Number.isSafeInteger(maxOverride) && maxOverride >= 1)) {
    throw invalidParameter('max_provisioned_concurrency', maxOverride, 'an integer of at least 1');
  }
  const minConcurrency = minOverride ?? (entity.scaleToZeroEnabled ? 0 : size.min);
  const maxConcurrency = maxOverride ?? size.max;
  if (minConcurrency > maxConcurrency) {
    throw maxOverride === undefined
      ? invalidParameter('min_provisioned_concurrency', minConcurrency, `at most the upper bound of workload_size ${entity.workloadSize} (${size.max}), or set max_provisioned_concurrency too`)
      : minOverride === undefined
        ? invalidParameter('max_provisioned_concurrency', maxConcurrency, `at least the lower bound of workload_size ${entity.workloadSize} (${minConcurrency}), or set min_provisioned_concurrency too`)
        : invalidParameter('min_provisioned_concurrency', minConcurrency, `at most max_provisioned_concurrency (${maxConcurrency})`);
  }
  const minReplicas = Math.max(entity.scaleToZeroEnabled ? 0 : 1, Math.ceil(minConcurrency / t.targetConcurrency));
  const maxReplicas = Math.max(minReplicas, Math.ceil(maxConcurrency / t.targetConcurrency));
  return Object.freeze({ ...t, minReplicas, maxReplicas });
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

/**
 * Samples are kept in one-second buckets (sum and count per bucket), so a caller that samples
 * faster than once a second, or pokes between ticks, cannot grow the state: the ring has
 * ceil(stableWindowMs / 1000) + 1 buckets, which covers every sample of the stable window.
 * Averages are still per sample (Σ sum / Σ count), not per bucket.
 */
export const SAMPLE_BUCKET_MS = 1000;

interface SampleBucket {
  /** floor(timestamp / SAMPLE_BUCKET_MS) of the samples in it; -1 when unused. */
  index: number;
  /** Timestamp of the newest sample in the bucket; window membership is judged by it. */
  lastMs: number;
  sum: number;
  count: number;
}

/**
 * What the policy remembers about one served entity. Create with {@link newScalerState} (sized by
 * the spec's stable window; make a new one when the spec's windows change). Only {@link record}
 * and {@link decide} change it; the fields are readable for logs and tests.
 */
export interface ScalerState {
  /** The stable window the ring was sized for. */
  readonly stableWindowMs: number;
  readonly buckets: SampleBucket[];
  /** Latest time passed to record or decide; time may not go backwards. */
  clockMs: number;
  /** Time and value of the newest sample. */
  latestSampleMs: number | undefined;
  latestConcurrency: number;
  /** Start of the current run of data (reset when a gap left the stable window empty). */
  dataSinceMs: number | undefined;
  /** Time of the newest sample that was > 0. */
  lastNonZeroMs: number | undefined;
  /** When panic mode began; undefined when not panicking. */
  panicSinceMs: number | undefined;
  /** Last time the panic condition held (panic ends a stable window after it). */
  lastPanicConditionMs: number | undefined;
  /** Largest desired count computed during the current panic. */
  maxPanicDesired: number;
  /**
   * Desired counts of the scale-down-delay window as a sliding-max deque: times increase and
   * values strictly decrease front to back, so the front is the window's max. Its length is at
   * most maxReplicas + 1 whatever the call rate.
   */
  readonly recentDesired: Array<{ atMs: number; desired: number }>;
}

export function newScalerState(spec: Pick<ScalingSpec, 'stableWindowMs'>): ScalerState {
  const size = Math.ceil(spec.stableWindowMs / SAMPLE_BUCKET_MS) + 1;
  return {
    stableWindowMs: spec.stableWindowMs,
    buckets: Array.from({ length: size }, () => ({ index: -1, lastMs: 0, sum: 0, count: 0 })),
    clockMs: -Infinity,
    latestSampleMs: undefined,
    latestConcurrency: 0,
    dataSinceMs: undefined,
    lastNonZeroMs: undefined,
    panicSinceMs: undefined,
    lastPanicConditionMs: undefined,
    maxPanicDesired: 0,
    recentDesired: [],
  };
}

function advanceClock(state: ScalerState, nowMs: number, fn: string): void {
  if (!Number.isFinite(nowMs)) throw new RangeError(`${fn}: nowMs must be a finite number of milliseconds, got ${nowMs}`);
  if (nowMs < state.clockMs) throw new RangeError(`${fn}: time went backwards (${nowMs} < ${state.clockMs})`);
  state.clockMs = nowMs;
}

/**
 * Records one sample: the entity's in-flight + queued requests at `nowMs`. Called every second,
 * and also when a request arrives for an entity with no replicas (then call {@link decide} at once:
 * see "poke" there).
 */
export function record(state: ScalerState, nowMs: number, concurrency: number): void {
  if (!(Number.isFinite(concurrency) && concurrency >= 0)) throw new RangeError(`record: concurrency must be a number ≥ 0, got ${concurrency}`);
  advanceClock(state, nowMs, 'record');
  if (state.latestSampleMs === undefined || nowMs - state.latestSampleMs >= state.stableWindowMs) state.dataSinceMs = nowMs;
  const index = Math.floor(nowMs / SAMPLE_BUCKET_MS);
  const bucket = state.buckets[index % state.buckets.length];
  if (bucket === undefined) throw new RangeError('record: empty sample ring'); // unreachable: the ring has ≥ 2 buckets
  if (bucket.index !== index) {
    bucket.index = index;
    bucket.sum = 0;
    bucket.count = 0;
  }
  bucket.sum += concurrency;
  bucket.count += 1;
  bucket.lastMs = nowMs;
  state.latestSampleMs = nowMs;
  state.latestConcurrency = concurrency;
  if (concurrency > 0) state.lastNonZeroMs = nowMs;
}

/** Average of the samples in (nowMs − windowMs, nowMs], or undefined when there are none. */
function windowAverage(state: ScalerState, nowMs: number, windowMs: number): number | undefined {
  let sum = 0;
  let count = 0;
  for (const b of state.buckets) {
    if (b.count > 0 && b.lastMs > nowMs - windowMs && b.lastMs <= nowMs) {
      sum += b.sum;
      count += b.count;
    }
  }
  return count === 0 ? undefined : sum / count;
}

// ---------------------------------------------------------------------------------------------
// Decision
// ---------------------------------------------------------------------------------------------

/** The replicas the caller has for the entity now. */
export interface ReplicaCounts {
  /** Ready replicas (serving traffic). */
  readyReplicas: number;
  /** Replicas started but not ready yet (loading the model); capacity that is coming. */
  startingReplicas: number;
}

export interface Decision {
  /** Replicas the entity should have (ready + starting). When `valid` is false: the current count. */
  desiredReplicas: number;
  /** False when there was no sample in the stable window: the caller keeps the current count. */
  valid: boolean;
  /** Whether the policy is in panic mode after this decision. */
  panic: boolean;
  /** The steps that produced the count, for logs, e.g. "stable 16.00/4 → 4; clamped to max 4". */
  reason: string;
  inputs: {
    /** Average concurrency over the stable window (0 when there was none). */
    stableConcurrency: number;
    /** Average concurrency over the panic window (the stable average when the panic window is empty). */
    panicConcurrency: number;
    readyReplicas: number;
    startingReplicas: number;
  };
}

/**
 * Decides the desired replica count at `nowMs`. Deterministic: its result depends only on the
 * arguments and `state`, and it changes only `state` (panic mode, the scale-down-delay window).
 * Capacity below means ready + starting: a starting replica is capacity that is coming, so the same
 * load does not start more replicas while some are loading their model.
 *
 * Steps, in order (numbers use the defaults: target 4, stable 30 s, panic 3 s, threshold 2,
 * delay 10 s, grace 30 s, rate 10; one sample per second):
 *
 * 1. **No data → no decision.** No sample in (now − stableWindowMs, now] → `valid: false`,
 *    `desiredReplicas` = ready + starting. E.g. last sample at t = 0, decide at t = 30 000 → invalid;
 *    at t = 29 999 → valid.
 * 2. **Stable.** desired = ceil(avg over the stable window / target). Steady 16 in flight → 4.
 *    After 16 for a long while, then 4: at the k-th sample of 4 the avg is 16 − 0.4k, so this
 *    step gives 3 from k = 10 and 1 from k = 30 (step 5 then delays each drop).
 * 3. **Panic.** panicDesired = ceil(avg over the panic window / target). When
 *    panicDesired ≥ panicThreshold × max(capacity, 1), panic starts (or is extended). In panic,
 *    desired = max(panicDesired, largest panicDesired of this panic) — it never goes down — and
 *    panic ends once a full stable window passed without the condition. E.g. 1 ready replica at
 *    load 2, then a burst of 40: the first second's panic window holds 2, 2, 40 → avg 14.67 →
 *    4 ≥ 2 × 1 → panic, desired 4 (stable would say ceil(3.27 / 4) = 1); then 7, then 10 by the
 *    third second (t = 60 000, 61 000, 62 000). If the load drops back to 2 at t = 63 000,
 *    desired stays 10 while panicking, until 30 s after the condition last held (t = 60 000 →
 *    panic over at 90 000); the scale-down delay (step 5) then holds the 10 of t = 89 000 up to
 *    98 000; 2 at 99 000, 1 from 100 000.
 * 4. **Scale-up rate.** When desired exceeds the capacity, it is capped at
 *    max(ceil(maxScaleUpRate × max(ready, 1)), ready + 1, capacity): at most ×10 the ready
 *    replicas, always at least +1 (so a rate of 1 still grows), and never below what is already
 *    asked for. E.g. 1 ready, load 400 (wants 100) → 10; then 10 ready → 100. With rate 1 and
 *    1 ready → 2. With 1 ready and 20 starting → at most 21.
 * 5. **Scale-down delay.** The result is the max of the step-4 results over the last
 *    scaleDownDelayMs. E.g. 4 replicas at load 16, then load 4 (as in step 2): 4 until k = 18,
 *    3 from k = 19, 2 at k = 38, 1 from k = 39 (instead of k = 30).
 * 6. **Zero.** A result of 0 stands only when the replicas are already 0, or when every sample of
 *    the last scaleToZeroGraceMs was 0 and data covers at least that long; otherwise it becomes 1.
 *    E.g. load 4 until t = 59 000 then 0: at t = 89 000 the grace has passed (59 000 + 30 000)
 *    but the delay holds 1; the result is 0 from t = 98 000. After a controller restart at t = 0
 *    with 1 replica and no load: 0 from t = 30 000. A gap in the samples that leaves the stable
 *    window empty restarts the count: zeros to t = 20 000, none until 60 000, zeros again → 0 from
 *    t = 90 000.
 * 7. **Bounds.** Clamped to [minReplicas, maxReplicas] (after the rate limit: min and max always
 *    hold).
 * 8. **Poke.** With 0 capacity and a newest sample > 0, the result is at least 1 whatever the
 *    windows say: `record(state, t, 1)` then `decide(…, { readyReplicas: 0, startingReplicas: 0 }, t)`
 *    → 1 at once, even with a 1 h stable window full of zeros.
 */
export function decide(spec: ScalingSpec, state: ScalerState, replicas: ReplicaCounts, nowMs: number): Decision {
  const { readyReplicas, startingReplicas } = replicas;
  for (const [name, v] of [['readyReplicas', readyReplicas], ['startingReplicas', startingReplicas]] as const) {
    if (!(Number.isSafeInteger(v) && v >= 0)) throw new RangeError(`decide: ${name} must be an integer ≥ 0, got ${v}`);
  }
  advanceClock(state, nowMs, 'decide');
  const capacity = readyReplicas + startingReplicas;

  // 1. No data → no decision.
  const stableConcurrency = windowAverage(state, nowMs, spec.stableWindowMs);
  if (stableConcurrency === undefined) {
    return {
      desiredReplicas: capacity,
      valid: false,
      panic: state.panicSinceMs !== undefined,
      reason: `no samples in the last ${spec.stableWindowMs} ms; keeping ${capacity}`,
      inputs: { stableConcurrency: 0, panicConcurrency: 0, readyReplicas, startingReplicas },
    };
  }
  const panicConcurrency = windowAverage(state, nowMs, spec.panicWindowMs) ?? stableConcurrency;
  const steps: string[] = [];

  // 2. Stable.
  const stableDesired = Math.ceil(stableConcurrency / spec.targetConcurrency);
  const panicDesired = Math.ceil(panicConcurrency / spec.targetConcurrency);
  let desired = stableDesired;
  steps.push(`stable ${stableConcurrency.toFixed(2)}/${spec.targetConcurrency} → ${stableDesired}`);

  // 3. Panic.
  if (panicDesired >= spec.panicThreshold * Math.max(capacity, 1)) {
    if (state.panicSinceMs === undefined) {
      state.panicSinceMs = nowMs;
      state.maxPanicDesired = 0;
    }
    state.lastPanicConditionMs = nowMs;
  } else if (state.panicSinceMs !== undefined && nowMs - (state.lastPanicConditionMs ?? state.panicSinceMs) >= spec.stableWindowMs) {
    state.panicSinceMs = undefined;
    state.lastPanicConditionMs = undefined;
    state.maxPanicDesired = 0;
    steps.push('panic over');
  }
  const panic = state.panicSinceMs !== undefined;
  if (panic) {
    state.maxPanicDesired = Math.max(state.maxPanicDesired, panicDesired);
    desired = state.maxPanicDesired;
    steps.push(`panic ${panicConcurrency.toFixed(2)}/${spec.targetConcurrency} → ${panicDesired}, holding ${desired} since ${state.panicSinceMs}`);
  }

  // 4. Scale-up rate.
  if (desired > capacity) {
    const cap = Math.max(Math.ceil(spec.maxScaleUpRate * Math.max(readyReplicas, 1)), readyReplicas + 1, capacity);
    if (desired > cap) {
      desired = cap;
      steps.push(`rate-limited to ${cap}`);
    }
  }

  // 5. Scale-down delay (sliding max).
  const recent = state.recentDesired;
  while (recent.length > 0 && recent[0]!.atMs <= nowMs - spec.scaleDownDelayMs) recent.shift();
  while (recent.length > 0 && recent[recent.length - 1]!.desired <= desired) recent.pop();
  recent.push({ atMs: nowMs, desired });
  const held = recent[0]!.desired;
  if (held > desired) {
    desired = held;
    steps.push(`held at ${held} by the ${spec.scaleDownDelayMs} ms scale-down delay`);
  }

  // 6. Zero.
  if (desired === 0 && capacity > 0) {
    const idleSinceMs = Math.max(state.lastNonZeroMs ?? -Infinity, state.dataSinceMs ?? nowMs);
    if (nowMs - idleSinceMs < spec.scaleToZeroGraceMs) {
      desired = 1;
      steps.push(`idle ${nowMs - idleSinceMs} ms < grace ${spec.scaleToZeroGraceMs} ms → 1`);
    } else {
      steps.push(`idle ${nowMs - idleSinceMs} ms ≥ grace → 0`);
    }
  }

  // 7. Bounds.
  if (desired < spec.minReplicas) {
    desired = spec.minReplicas;
    steps.push(`raised to min ${desired}`);
  } else if (desired > spec.maxReplicas) {
    desired = spec.maxReplicas;
    steps.push(`clamped to max ${desired}`);
  }

  // 8. Poke. Steps 2–7 already give ≥ 1 whenever a sample > 0 is in the stable window; this keeps
  // "a request waiting at zero replicas gets one" true whatever changes above.
  if (capacity === 0 && state.latestConcurrency > 0 && desired < 1) {
    desired = 1;
    steps.push('poke → 1');
  }

  return {
    desiredReplicas: desired,
    valid: true,
    panic,
    reason: steps.join('; '),
    inputs: { stableConcurrency, panicConcurrency, readyReplicas, startingReplicas },
  };
}
