/**
 * Safe updates. The runner rolls an endpoint's pending config out as a sequence of steps:
 *
 *   start new replicas → validate each new entity → canary steps (optional) → swap → drain old
 *
 * - A served entity that is unchanged between configs (same model version, same workload) keeps
 *   its replicas, so a traffic-only change restarts nothing.
 * - Before traffic moves, each new served entity scores its validation request (or its version's
 *   input example) on one of its replicas; with a `rollout` config, traffic then shifts to the new
 *   entities in canary steps judged from gateway stats.
 * - A failed rollout (a replica that does not start, a refused validation request, a canary step
 *   over its limits) leaves the serving config serving (routed back if a canary had shifted
 *   traffic) and marks the update UPDATE_FAILED with the reason; a cancel does the same and marks
 *   it UPDATE_CANCELED (the cancel writes that; the runner only unwinds).
 *
 * The pure pieces (how a canary step blends routes, how a step is judged, how a replica is
 * validated) come first; `RolloutRunner` orders them.
 */
import type { Backend, GatewayStats, RoutingTable, StatsSummary } from '../gateway/index.js';
import { statsKey } from '../gateway/index.js';
import type { MetadataStore } from '../store/index.js';
import type { EndpointConfig, RolloutConfig, ServedEntityConfig } from './config.js';
import type { ReplicaSupervisor } from './replicas.js';
import { aiGatewayOf, buildEndpointRoute } from './routes.js';
import { describeEntity, type ControlLog, type EndpointState, type EntityReplicas, type NewEntityReplicas, type RolloutRun } from './state.js';

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

export interface RolloutRunnerOptions {
  supervisor: ReplicaSupervisor;
  newEntityReplicas: NewEntityReplicas;
  store: MetadataStore;
  table: RoutingTable;
  /** Per-entity answers as the gateway saw them (canary analysis). */
  stats: GatewayStats;
  defaultRequestTimeoutMs: number;
  now: () => number;
  log: ControlLog;
}

export class RolloutRunner {
  constructor(private readonly opts: RolloutRunnerOptions) {}

  /**
   * Rolls out the endpoint's pending config: start the new entities' replicas, validate them,
   * shift traffic in canary steps (when configured), then swap. A failure or an abort at any step
   * unwinds to the serving config. Settles when the rollout has finished or unwound.
   */
  run(st: EndpointState): Promise<void> {
    const target = st.record.pendingConfig;
    if (!target) return Promise.resolve();
    const next = new Map<string, EntityReplicas>();
    const started: EntityReplicas[] = [];
    for (const e of target.servedEntities) {
      const existing = st.current.get(e.name);
      if (existing?.sameAs(e) && existing.state !== 'DEPLOYMENT_FAILED') {
        next.set(e.name, existing);
      } else {
        const d = this.opts.newEntityReplicas(st, e);
        next.set(e.name, d);
        started.push(d);
      }
    }
    st.pending = next;
    const run: RolloutRun = { target, started, abort: new AbortController(), shifted: false, done: Promise.resolve() };
    st.run = run;
    run.done = this.runSteps(st, run).finally(() => {
      if (st.run === run) st.run = undefined;
    });
    return run.done;
  }

  /** Routes the endpoint's traffic to `entities` as `config` splits it, in one swap. */
  publish(st: EndpointState, config: EndpointConfig, entities: Map<string, EntityReplicas>): void {
    this.publishWeighted(st, config, config.routes.map((r) => ({ target: entities.get(r.servedEntityName) as EntityReplicas, trafficPercentage: r.trafficPercentage })));
  }

  private async runSteps(st: EndpointState, run: RolloutRun): Promise<void> {
    try {
      await this.startStep(st, run);
      await this.validateStep(st, run);
      await this.canarySteps(st, run);
    } catch (err) {
      await this.unwind(st, run, err);
      return;
    }
    await this.activate(st, run);
  }

  /** Step 1: start the new entities' replicas and wait until they are all ready. */
  private async startStep(st: EndpointState, run: RolloutRun): Promise<void> {
    if (run.started.length === 0) return;
    progress(st, `starting ${run.started.map((d) => `'${d.entity.name}'`).join(', ')}`);
    const results = await untilAborted(run.abort.signal, Promise.allSettled(run.started.map((d) => this.opts.supervisor.deploy(d))));
    const failed = run.started.filter((_, i) => results[i]?.status === 'rejected');
    if (failed.length > 0) {
      throw new RolloutFailure(failed.map((d) => `served entity '${d.entity.name}' (${describeEntity(d.entity)}) failed to start: ${d.message}`).join('; '));
    }
  }

  /**
   * Step 2: each new entity scores its validation request (or input example) on one of its
   * replicas; anything but a 200 fails the update with the replica's answer.
   */
  private async validateStep(st: EndpointState, run: RolloutRun): Promise<void> {
    const timeoutMs = run.target.requestTimeoutMs ?? this.opts.defaultRequestTimeoutMs;
    const failures: string[] = [];
    for (const d of run.started) {
      const request = validationRequestOf(d.entity);
      if (request === undefined) continue; // the endpoint view says it was skipped
      const backend = d.traffic.backends[0];
      if (backend === undefined) throw new RolloutFailure(`served entity '${d.entity.name}' lost its replicas before validation: ${d.message}`);
      progress(st, `validating '${d.entity.name}' with its ${request.source}`);
      const outcome = await untilAborted(run.abort.signal, scoreValidation(backend, request, timeoutMs));
      if (outcome.ok) {
        d.validationNote = `Validated: ${outcome.detail}.`;
      } else {
        d.message = `Validation failed: ${outcome.detail}.`;
        d.state = 'DEPLOYMENT_FAILED';
        failures.push(`served entity '${d.entity.name}' (${describeEntity(d.entity)}) failed validation: ${outcome.detail}`);
      }
    }
    if (failures.length > 0) throw new RolloutFailure(failures.join('; '));
  }

  /**
   * Step 3 (with `rollout.canary_steps`, when the update replaces served entities of a serving
   * config): the new entities get each step's share of the traffic for its duration, then their
   * 5xx rate and p99 latency over the step are compared with the old entities'.
   */
  private async canarySteps(st: EndpointState, run: RolloutRun): Promise<void> {
    const spec = run.target.rollout;
    const old = st.record.config;
    if (spec === undefined || old === undefined || run.started.length === 0) return;
    const from = old.routes.map((r) => ({ target: st.current.get(r.servedEntityName) as EntityReplicas, trafficPercentage: r.trafficPercentage }));
    const to = run.target.routes.map((r) => ({ target: st.pending.get(r.servedEntityName) as EntityReplicas, trafficPercentage: r.trafficPercentage }));
    const keyOf = (d: EntityReplicas): string => statsKey(st.record.name, d.entity.name, d.entity.entityVersion);
    const candidates = run.started.map(keyOf);
    const baseline = from.filter((w) => w.trafficPercentage > 0 && !run.started.includes(w.target)).map((w) => keyOf(w.target));
    // Same name and version, another workload: the gateway's stats cannot tell old from new.
    const blind = candidates.some((k) => baseline.includes(k));
    if (blind) this.opts.log('warn', 'canary analysis off: old and new entities share a stats key', { endpoint: st.record.name, keys: candidates });
    for (const [i, step] of spec.canarySteps.entries()) {
      progress(st, describeStep(i, spec));
      this.publishWeighted(st, old, blendRoutes(from, to, step.trafficPercentage));
      run.shifted = true;
      const sinceMs = this.opts.now();
      await sleepUnlessAborted(run.abort.signal, step.durationMs);
      if (blind) continue;
      const verdict = judgeCanaryStep(spec, this.opts.stats.summary(candidates, sinceMs), this.opts.stats.summary(baseline, sinceMs));
      if (verdict !== undefined) {
        for (const d of run.started) d.message = `Rolled back: canary step ${i + 1} (${step.trafficPercentage}%): ${verdict}.`;
        throw new RolloutFailure(`canary step ${i + 1} (${step.trafficPercentage}%): ${verdict}; traffic is back on config version ${old.configVersion}`);
      }
    }
  }

  /** Last step: switch traffic to the new config in one step, then retire what it does not use. */
  private async activate(st: EndpointState, run: RolloutRun): Promise<void> {
    if (run.abort.signal.aborted) {
      await this.unwind(st, run, new RolloutAborted());
      return;
    }
    const target = run.target;
    const previous = st.current;
    const next = st.pending;
    this.publish(st, target, next);
    st.current = next;
    st.pending = new Map();
    st.record = { ...st.record, config: target, pendingConfig: undefined, configUpdate: 'NOT_UPDATING', updateMessage: '', updatedMs: this.opts.now() };
    await this.opts.store.putEndpoint(st.record);
    this.opts.log('info', 'endpoint config active', { endpoint: st.record.name, configVersion: target.configVersion });
    const retired = [...previous.values()].filter((d) => ![...next.values()].includes(d));
    await Promise.all(retired.map((d) => this.opts.supervisor.stop(d)));
  }

  /**
   * Undoes a rollout: traffic back on the serving config (if a canary moved some), the new
   * replicas stopped. A failure is recorded as UPDATE_FAILED; an abort writes nothing (a cancel
   * has written UPDATE_CANCELED; a delete or a close leaves nothing, or IN_PROGRESS, to write).
   */
  private async unwind(st: EndpointState, run: RolloutRun, err: unknown): Promise<void> {
    if (run.shifted && !st.deleted && st.record.config) this.publish(st, st.record.config, st.current);
    await Promise.all(run.started.map((d) => this.opts.supervisor.stop(d, d.state === 'DEPLOYMENT_FAILED' ? 'DEPLOYMENT_FAILED' : 'DEPLOYMENT_ABORTED')));
    if (err instanceof RolloutAborted || st.deleted) return;
    const reason = err instanceof RolloutFailure ? err.message : `internal error: ${err instanceof Error ? err.message : String(err)}`;
    if (!(err instanceof RolloutFailure)) this.opts.log('error', 'endpoint rollout crashed', { endpoint: st.record.name, error: err instanceof Error ? err.stack : String(err) });
    st.record = { ...st.record, configUpdate: 'UPDATE_FAILED', updateMessage: reason, updatedMs: this.opts.now() };
    await this.opts.store.putEndpoint(st.record);
    this.opts.log('warn', 'endpoint update failed', { endpoint: st.record.name, configVersion: run.target.configVersion, reason });
  }

  /** Swaps the endpoint's route in one step; `config` gives the request timeout and the shadows. */
  private publishWeighted(st: EndpointState, config: EndpointConfig, weighted: Array<Weighted<EntityReplicas>>): void {
    const entities = weighted.map(({ target: d, trafficPercentage }) => ({ endpoint: d.endpoint, entity: d.entity, trafficPercentage, traffic: d.traffic, family: d.family }));
    this.opts.table.set(buildEndpointRoute(st.record.name, config, entities, this.opts.defaultRequestTimeoutMs, aiGatewayOf(st.record), st.rateLimiter));
  }
}

/** Shows where a rollout is (`config_update_message` while IN_PROGRESS); not persisted. */
function progress(st: EndpointState, message: string): void {
  st.record = { ...st.record, updateMessage: message };
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}
