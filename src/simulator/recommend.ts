/**
 * Recommendation: the cheapest scaling setting (fewest replica-seconds) that meets a p99 target
 * on a trace, found by simulating a grid of tunables; and the two references it is judged
 * against, static provisioning for the peak and Knative's default tunables.
 */
import type { SearchSetting as Setting } from '../api/index.js';
import type { ScalingSpec } from '../autoscaler/index.js';
import { simulate, type ReplicaModel, type SimulationOptions, type SimulationResult } from './engine.js';
import type { Trace } from './trace.js';

export type { SearchSetting as Setting } from '../api/index.js';

/** What a setting must meet. */
export interface Goal {
  targetP99Ms: number;
  /** Scale-ups from zero per hour at most (each one a request waiting for a cold start). */
  maxColdStartsPerHour?: number | undefined;
}


/**
 * The grid: 9 targets × scale to zero or not × 3 stable windows × 3 scale-down delays = 162 runs
 * (targets above the per-replica bound are skipped). Half steps between 2 and 4, where a replica's
 * bound of a few requests makes one step of 1 a big change: on the bundled diurnal trace (4 per
 * replica) target 3.5 is the cheapest setting that meets a 3 s p99, 2% below target 3.
 */
export const SEARCH_GRID = Object.freeze({
  target_concurrency: [1, 2, 2.5, 3, 3.5, 4, 6, 8, 16],
  scale_to_zero_enabled: [false, true],
  stable_window_ms: [10_000, 30_000, 60_000],
  scale_down_delay_ms: [0, 10_000, 60_000],
});

/**
 * Knative's defaults (config-autoscaler: stable-window 60s, panic-window-percentage 10 → 6 s,
 * panic-threshold-percentage 200, scale-down-delay 0s, scale-to-zero-grace-period 30s,
 * max-scale-up-rate 1000); the target stays the candidate's, because Knative's target (100
 * requests per pod × 70% utilization) is for pods without a per-replica concurrency bound.
 */
export const KNATIVE_DEFAULTS = Object.freeze({
  stableWindowMs: 60_000, panicWindowMs: 6_000, panicThreshold: 2, scaleDownDelayMs: 0, scaleToZeroGraceMs: 30_000, maxScaleUpRate: 1000,
});

/** Whether a result meets the goal: p99 within the target, nothing refused, few enough cold starts. */
export function meets(r: SimulationResult, goal: Goal): boolean {
  return r.p99_ms !== null && r.p99_ms <= goal.targetP99Ms && r.refused_buffer_full + r.refused_deadline === 0
    && (goal.maxColdStartsPerHour === undefined || r.cold_starts_per_hour <= goal.maxColdStartsPerHour);
}

export interface Recommendation {
  /** The cheapest setting that meets the goal, or null when none of the grid does. */
  setting: Setting | null;
  result: SimulationResult | null;
  /** Settings simulated, and how many met the goal. */
  evaluated: number;
  feasible: number;
}

/**
 * Simulates every setting of {@link SEARCH_GRID} (`specOf` compiles one, or returns undefined when
 * the candidate's bounds rule it out, e.g. scale to zero with a minimum provisioned concurrency)
 * and returns the one with the fewest replica-seconds that meets `goal` (ties: the lower p99).
 */
export function recommend(trace: Trace, specOf: (s: Setting) => ScalingSpec | undefined, model: ReplicaModel, goal: Goal, opts: SimulationOptions): Recommendation {
  let best: { setting: Setting; result: SimulationResult } | undefined;
  let evaluated = 0;
  let feasible = 0;
  const quiet = { ...opts, timelinePoints: 0 };
  for (const target of SEARCH_GRID.target_concurrency) {
    if (target > model.maxConcurrencyPerReplica) continue;
    for (const stz of SEARCH_GRID.scale_to_zero_enabled) {
      for (const stable of SEARCH_GRID.stable_window_ms) {
        for (const delay of SEARCH_GRID.scale_down_delay_ms) {
          const setting: Setting = { target_concurrency: target, scale_to_zero_enabled: stz, stable_window_ms: stable, scale_down_delay_ms: delay };
          const spec = specOf(setting);
          if (spec === undefined) continue;
          const result = simulate(trace, spec, model, quiet);
          evaluated++;
          if (!meets(result, goal)) continue;
          feasible++;
          if (best === undefined || result.replica_seconds < best.result.replica_seconds
            || (result.replica_seconds === best.result.replica_seconds && (result.p99_ms ?? Infinity) < (best.result.p99_ms ?? Infinity))) {
            best = { setting, result };
          }
        }
      }
    }
  }
  return best === undefined
    ? { setting: null, result: null, evaluated, feasible }
    : { setting: best.setting, result: simulate(trace, specOf(best.setting) as ScalingSpec, model, opts), evaluated, feasible };
}

/**
 * Static provisioning for the peak: the fewest replicas that, always on, meet `goal` (at most
 * `maxReplicas`; found by bisection, since more replicas never wait longer). Null when even
 * `maxReplicas` does not.
 */
export function staticForPeak(trace: Trace, specFor: (replicas: number) => ScalingSpec, maxReplicas: number, model: ReplicaModel, goal: Goal, opts: SimulationOptions): { replicas: number; result: SimulationResult } | null {
  const quiet = { ...opts, timelinePoints: 0 };
  const run = (n: number, o: SimulationOptions): SimulationResult => simulate(trace, specFor(n), model, { ...o, initialReplicas: n });
  if (!meets(run(maxReplicas, quiet), { targetP99Ms: goal.targetP99Ms })) return null;
  let lo = 1;
  let hi = maxReplicas;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (meets(run(mid, quiet), { targetP99Ms: goal.targetP99Ms })) hi = mid;
    else lo = mid + 1;
  }
  return { replicas: lo, result: run(lo, opts) };
}
