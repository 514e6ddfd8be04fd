/**
 * The pieces of a safe update that do not need the controller's state: how a canary step blends
 * the old and new routes, how a step is judged from gateway stats, and how a new replica is
 * validated with a scoring request. The controller runs them in order:
 *
 *   start new replicas → validate each new entity → canary steps (optional) → swap → drain old
 *
 * and any failure, or a cancel, unwinds to the old config (see EndpointController.rollout).
 */
import type { Backend } from '../gateway/index.js';
import type { StatsSummary } from '../gateway/index.js';
import type { RolloutConfig, ServedEntityConfig } from './config.js';

/** A rollout that must stop: its message becomes the endpoint's `config_update_message`. */
export class RolloutFailure extends Error {}

/** The rollout was canceled, or its endpoint deleted or the server is closing: unwind, write nothing. */
export class RolloutAborted extends Error {
  constructor() {
    super('rollout aborted');
  }
}

/** One entry of a route: what serves (a deployment) and its share of traffic, 0-100. */
export interface Weighted<T> {
  target: T;
  trafficPercentage: number;
}

/**
 * The route of a canary step: the old route scaled to (100 − p)% and the new one to p%, with a
 * target present in both (an entity the update keeps) getting the sum. Shares may be fractional;
 * they add up to 100 like the inputs. Example: old {A: 100}, new {B: 100}, p = 10 → A 90, B 10;
 * old {A: 50, K: 50}, new {B: 50, K: 50}, p = 20 → A 40, K 50, B 10.
 */
export function blendRoutes<T>(from: ReadonlyArray<Weighted<T>>, to: ReadonlyArray<Weighted<T>>, toPercentage: number): Array<Weighted<T>> {
  const out: Array<Weighted<T>> = [];
  const add = (target: T, share: number): void => {
    const existing = out.find((w) => w.target === target);
    if (existing) existing.trafficPercentage += share;
    else out.push({ target, trafficPercentage: share });
  };
  for (const w of from) add(w.target, (w.trafficPercentage * (100 - toPercentage)) / 100);
  for (const w of to) add(w.target, (w.trafficPercentage * toPercentage) / 100);
  return out;
}

/**
 * A p99 under this is not compared by ratio: 0.3 ms against 0.8 ms is scheduling noise on a busy
 * machine, not a slower model. The old p99 counts as at least this much.
 */
export const LATENCY_FLOOR_MS = 10;

/**
 * Why a canary step failed, or undefined when it passed. No requests for the new entities in the
 * step → no data, no decision: it passes. Examples (max_error_rate 0.05, ratio 2):
 * new 4 errors in 10 → "error rate 0.40 > 0.05"; new p99 45 ms vs old 20 ms → "p99 latency 45 ms >
 * 2 × 20 ms"; new p99 12 ms vs old 1 ms → passes (the old p99 counts as 10 ms, 12 < 20).
 */
export function judgeCanaryStep(spec: RolloutConfig, candidate: StatsSummary, baseline: StatsSummary): string | undefined {
  if (candidate.requests === 0) return undefined;
  if (candidate.errorRate > spec.maxErrorRate) {
    return `error rate ${candidate.errorRate.toFixed(2)} > ${spec.maxErrorRate} (${candidate.errors} of ${candidate.requests} requests answered 5xx)`;
  }
  if (candidate.p99LatencyMs !== undefined && baseline.p99LatencyMs !== undefined) {
    const reference = Math.max(baseline.p99LatencyMs, LATENCY_FLOOR_MS);
    if (candidate.p99LatencyMs > spec.maxP99LatencyRatio * reference) {
      return `p99 latency ${round(candidate.p99LatencyMs)} ms > ${spec.maxP99LatencyRatio} × ${round(reference)} ms (old entities' p99 ${round(baseline.p99LatencyMs)} ms)`;
    }
  }
  return undefined;
}

/** "canary step 2/3: 50% for 5 s" (the progress message while a step holds). */
export function describeStep(index: number, spec: RolloutConfig): string {
  const step = spec.canarySteps[index];
  return step === undefined ? '' : `canary step ${index + 1}/${spec.canarySteps.length}: ${step.trafficPercentage}% for ${round(step.durationMs / 1000)} s`;
}

/** What validates a new entity: its validation_request, else its version's input example, else nothing. */
export function validationRequestOf(e: ServedEntityConfig): { body: unknown; source: string } | undefined {
  if (e.validationRequest !== undefined) return { body: e.validationRequest, source: 'validation_request' };
  if (e.inputExample !== undefined && e.inputExample !== null) return { body: e.inputExample, source: 'input example' };
  return undefined;
}

/** Error bodies quoted in messages are cut to this many characters. */
const MAX_QUOTED_BODY_CHARS = 1000;

/**
 * Scores one validation request on one replica (`POST /invocations`, MLflow scoring JSON).
 * Passes on a 200; any other status, a dropped connection or a timeout fails, and `detail` quotes
 * the replica's own answer: "replica ep.m-2.1a2b3c answered the input example with 400: {...}".
 */
export async function scoreValidation(backend: Backend, request: { body: unknown; source: string }, timeoutMs: number): Promise<{ ok: boolean; detail: string }> {
  const t0 = performance.now();
  backend.outstanding++; // a drain waits for it like for any request
  try {
    const res = await backend.channel.request({ method: 'POST', path: '/invocations', body: Buffer.from(JSON.stringify(request.body)) }, timeoutMs);
    const ms = round(performance.now() - t0);
    if (res.status === 200) return { ok: true, detail: `the ${request.source} was scored by replica ${backend.id} (200 in ${ms} ms)` };
    const text = res.body.toString('utf8');
    const quoted = text.length > MAX_QUOTED_BODY_CHARS ? `${text.slice(0, MAX_QUOTED_BODY_CHARS)}…` : text;
    return { ok: false, detail: `replica ${backend.id} answered the ${request.source} with ${res.status}: ${quoted}` };
  } catch (err) {
    return { ok: false, detail: `replica ${backend.id} did not answer the ${request.source}: ${err instanceof Error ? err.message : String(err)}` };
  } finally {
    backend.outstanding--;
  }
}

/** Resolves like `p`, or rejects with RolloutAborted as soon as `signal` aborts. */
export function untilAborted<T>(signal: AbortSignal, p: Promise<T>): Promise<T> {
  if (signal.aborted) return Promise.reject(new RolloutAborted());
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new RolloutAborted());
    signal.addEventListener('abort', onAbort, { once: true });
    p.then((v) => {
      signal.removeEventListener('abort', onAbort);
      resolve(v);
    }, (err: unknown) => {
      signal.removeEventListener('abort', onAbort);
      reject(err instanceof Error ? err : new Error(String(err)));
    });
  });
}

/** Waits `ms`, or rejects with RolloutAborted when `signal` aborts first. */
export function sleepUnlessAborted(signal: AbortSignal, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return untilAborted(signal, new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  })).finally(() => clearTimeout(timer));
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}
