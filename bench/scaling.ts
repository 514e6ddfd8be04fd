/**
 * Autoscaling measurements (`--only scaling`), on Ferry servers of their own, after the load rows:
 *
 * 1. **Cold start from zero.** Two servers side by side: one with the default warm pool (1 generic
 *    replica process kept started) and one with `{"warmPoolSize": 0}`. Each serves linear and mlp
 *    on an endpoint with scale-to-zero and short windows ({@link COLD_AUTOSCALING}). A run waits
 *    until the endpoint has 0 replicas (ready, starting and desired, and no replica pid file left),
 *    then times ONE request from the client (it must answer 200 with the fixture's answer) and
 *    reads the server's new `cold_starts_ms` entry. The 4 endpoints take turns, so one endpoint's
 *    wait for zero (~3–4 s: grace 2 s, then the 3 s stable window must be all zeros) overlaps the
 *    others' runs; a run starts only when both servers' process trees have been quiet (< 10% of a
 *    core for 300 ms), so no pool refill, replica start or stop competes with it for CPU.
 * 2. **Load step.** On the warm-pool server, an MLP 256 → 2048 → 2048 → 256 with
 *    `max_provisioned_concurrency` 8 and target 2 (1..4 replicas), at rest on 1 replica, gets 8
 *    closed-loop clients (`wrk -t1 -c8`) for `loadS`; the endpoint is polled every 250 ms from load
 *    start until it is back to 1 replica after the load. wrk rather than Node clients: it is the
 *    load generator of every other row (same latency and error accounting, its 2 s timeout counts
 *    as an error), it costs far less CPU per request on a 2-core machine, and it leaves this
 *    process's event loop free, so the 250 ms polls are on time.
 *
 * Nothing here asserts a goal: report.ts compares the results with them.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AutoscalingStatus } from '../src/api/index.js';
import { mlpFixture, writeMlp } from '../src/fixtures/index.js';
import { closeEnough, prepareModels, requestsFor, type BenchModel, type ModelKey } from './models.js';
import { cpuSnapshot, processTree, sleep, stopServer, type ServerProcess, type TreeLabels } from './procs.js';
import { ferryApi, registerVersion, replicaPids, startFerryServer, waitEndpointsReady } from './targets.js';
import { round, runWrk, writeWrkScript, type WrkResult } from './wrk.js';

/** The cold-start endpoints' autoscaling extension: short windows, so an idle endpoint is at zero ~3–4 s after its last request. */
export const COLD_AUTOSCALING = {
  target_concurrency: 2, stable_window_ms: 3000, panic_window_ms: 1000, scale_down_delay_ms: 0, scale_to_zero_grace_ms: 2000,
} as const;
/** The load-step endpoint's: the same windows, no scale to zero (1 replica at least). */
export const STEP_AUTOSCALING = { target_concurrency: 2, stable_window_ms: 3000, panic_window_ms: 1000, scale_down_delay_ms: 0 } as const;
export const STEP_LAYERS = [256, 2048, 2048, 256] as const;
export const STEP_MAX_PROVISIONED_CONCURRENCY = 8;
export const STEP_CLIENTS = 8;
/** ceil(8 clients / target 2) = 4, also ceil(max_provisioned_concurrency 8 / target 2). */
export const STEP_EXPECTED_REPLICAS = Math.ceil(STEP_CLIENTS / STEP_AUTOSCALING.target_concurrency);
const COLD_MODELS: readonly ModelKey[] = ['linear', 'mlp'];

/** The two server setups of the cold-start rows and the p50 goal of each (first request, client side). */
export const POOL_VARIANTS = [
  { key: 'pool', label: 'warm pool (default: 1)', serverConfig: undefined, goalMs: 100 },
  { key: 'nopool', label: 'no warm pool (warmPoolSize 0)', serverConfig: { warmPoolSize: 0 }, goalMs: 250 },
] as const;
type PoolVariant = (typeof POOL_VARIANTS)[number];

const POLL_MS = 250;
/** Give up on an endpoint that is not at zero (or the servers not quiet) this long after its previous run. */
const SLOT_TIMEOUT_MS = 25_000;
/** One cold-start request's deadline (the gateway's own buffer deadline is 10 s). */
const REQUEST_TIMEOUT_MS = 30_000;
/** How long after the response the server's `cold_starts_ms` entry may take to appear. */
const COLD_ENTRY_WAIT_MS = 2000;
const QUIET_WINDOW_MS = 300;
const QUIET_MAX_CORES = 0.1;
/** After the load: how long to wait for the endpoint to be back to 1 replica. */
const BACK_TO_ONE_TIMEOUT_MS = 30_000;

export interface ScalingSettings {
  /** Cold-start runs per model and warm-pool setting. */
  coldRuns: number;
  /** Seconds of load in the load step. */
  loadS: number;
  serverNodeArgs: string[];
}

export interface ColdStartRun {
  /** Client-side ms from sending the request to reading the whole answer; null when it failed. */
  clientMs: number | null;
  /** The server's new `cold_starts_ms` entry (decision to scale up from zero → replica ready); null when none appeared. */
  serverMs: number | null;
  /** Whether the replica that answered was a claimed warm-pool process (its command line says `--pool`). */
  fromPool: boolean | null;
  error?: string;
}

export interface ColdStartRow {
  model: ModelKey;
  pool: string;
  warmPoolSize: number;
  runs: ColdStartRun[];
  okRuns: number;
  clientP50Ms: number | null;
  clientMaxMs: number | null;
  serverP50Ms: number | null;
  serverMaxMs: number | null;
  /** Runs whose replica came from the warm pool. */
  fromPoolRuns: number;
  goalMs: number;
}

export interface StepSample {
  /** ms since the load started (negative: before). */
  tMs: number;
  ready: number;
  starting: number;
  desired: number;
  inFlight: number;
  queued: number;
}

export interface LoadStepResult {
  model: string;
  clients: number;
  loadS: number;
  minReplicas: number | null;
  maxReplicas: number | null;
  expectedReplicas: number;
  /** ms from load start to the first poll that saw `expectedReplicas` ready; null when never during the load. */
  timeToExpectedMs: number | null;
  maxReadySeen: number;
  /** ms from load start to the first poll that saw `maxReadySeen` ready. */
  timeToMaxMs: number | null;
  /** ms from the end of the load to the first poll with 1 ready and none starting; null when not within 30 s. */
  backToOneMs: number | null;
  /** ms from load start to the end of the load (wrk exited). */
  loadEndMs: number;
  wrk: WrkResult;
  errors: number;
  samples: StepSample[];
  /** The entity's `last_decisions` at the end (JSON only). */
  lastDecisions: unknown[];
}

export interface ScalingReport {
  settingsLine: string;
  coldStarts: ColdStartRow[];
  loadStep: LoadStepResult | null;
  /** Per server: its stderr counts by level and its first distinct non-info lines. */
  stderr: Record<string, { levels: Record<string, number>; notable: string[] }>;
  totalS: number;
}


async function entityScaling(base: string, token: string, endpoint: string): Promise<AutoscalingStatus | undefined> {
  const ep = await ferryApi(base, token, 'GET', `/api/2.0/serving-endpoints/${endpoint}`);
  return ep?.config?.served_entities?.[0]?.autoscaling as AutoscalingStatus | undefined;
}

function requireLoopback(url: string): void {
  if (new URL(url).hostname !== '127.0.0.1') throw new Error(`refusing to use ${url}: the bench only talks to 127.0.0.1`);
}

/** Nearest-rank percentile of `xs` (p50 of 7 values is the 4th smallest); null when empty. */
export function percentile(xs: number[], p: number): number | null {
  if (xs.length === 0) return null;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] ?? null;
}

const EVERY_PROCESS: TreeLabels = { rootLabel: 'server', labelOf: () => 'child' };

/**
 * Whether the servers' process trees (gateway, replicas, pool processes) have been idle since the
 * last {@link QuietMeter.restart}: each `sample()` adds the CPU they used since the previous one
 * (a new pid counts all of its CPU, a pid that went away counts nothing) and answers whether at
 * least {@link QUIET_WINDOW_MS} passed since the restart and the samples of the last
 * {@link QUIET_WINDOW_MS} used less than {@link QUIET_MAX_CORES} of a core. Restart after each run:
 * otherwise the quiet samples from before a run dilute the run and the pool refill it triggers
 * (a pool process 8 ms old has used almost no CPU yet). /proc's 10 ms CPU resolution makes the
 * threshold 3 ticks.
 */
class QuietMeter {
  private last = new Map<number, number>();
  private lastMs = 0;
  private sinceMs = 0;
  private recent: Array<{ atMs: number; spanMs: number; us: number }> = [];

  constructor(private readonly roots: () => number[]) {
    this.restart();
  }

  /** Forgets every sample; quiet again only after a full window of new ones. */
  restart(): void {
    this.last = this.snapshot();
    this.lastMs = performance.now();
    this.sinceMs = this.lastMs;
    this.recent = [];
  }

  sample(): boolean {
    const cur = this.snapshot();
    const now = performance.now();
    let us = 0;
    for (const [pid, v] of cur) us += v - (this.last.get(pid) ?? 0);
    this.recent.push({ atMs: now, spanMs: now - this.lastMs, us });
    this.last = cur;
    this.lastMs = now;
    this.recent = this.recent.filter((r) => now - r.atMs < QUIET_WINDOW_MS);
    const spanMs = this.recent.reduce((a, r) => a + r.spanMs, 0);
    const busyUs = this.recent.reduce((a, r) => a + r.us, 0);
    return now - this.sinceMs >= QUIET_WINDOW_MS && busyUs < QUIET_MAX_CORES * spanMs * 1000;
  }

  private snapshot(): Map<number, number> {
    const cur = new Map<number, number>();
    for (const root of this.roots()) for (const [pid, us] of cpuSnapshot(processTree(root, EVERY_PROCESS).keys())) cur.set(pid, us);
    return cur;
  }
}

function commandLine(pid: number): string {
  try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' '); } catch { return ''; }
}

interface ColdSlot {
  variant: PoolVariant;
  server: ServerProcess;
  dataDir: string;
  model: BenchModel;
  endpoint: string;
  url: string;
  runs: ColdStartRun[];
  /** When the previous run ended (or the slot began waiting for its first zero). */
  sinceMs: number;
  gaveUp: boolean;
}

/** POSTs one of the model's check rows and times it; reads the new `cold_starts_ms` entry after. */
async function coldRun(slot: ColdSlot, token: string, before: number[]): Promise<ColdStartRun> {
  const check = slot.model.checks[slot.runs.length % slot.model.checks.length]!;
  const t0 = performance.now();
  let status: number;
  let text: string;
  try {
    const res = await fetch(slot.url, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: check.body,
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    text = await res.text();
    status = res.status;
  } catch (err) {
    return { clientMs: null, serverMs: null, fromPool: null, error: `request failed after ${Math.round(performance.now() - t0)} ms: ${err instanceof Error ? err.message : String(err)}` };
  }
  const clientMs = round(performance.now() - t0, 1);
  const pids = [...replicaPids(slot.dataDir, slot.endpoint)];
  const fromPool = pids.length === 0 ? null : pids.some((pid) => / --pool /.test(commandLine(pid)));
  let serverMs: number | null = null;
  const until = performance.now() + COLD_ENTRY_WAIT_MS;
  const was = JSON.stringify(before);
  while (performance.now() < until) {
    const after = (await entityScaling(slot.server.url, token, slot.endpoint))?.cold_starts_ms ?? [];
    const newest = after[after.length - 1];
    if (JSON.stringify(after) !== was && newest !== undefined) { serverMs = round(newest, 1); break; }
    await sleep(20);
  }
  let prediction: unknown;
  try { prediction = (JSON.parse(text) as { predictions?: unknown[] }).predictions?.[0]; } catch { /* reported below */ }
  if (status !== 200 || !closeEnough(prediction, check.expected)) {
    return { clientMs: null, serverMs, fromPool, error: `expected 200 with the fixture's answer, got ${status} after ${clientMs} ms: ${text.slice(0, 200)}` };
  }
  return { clientMs, serverMs, fromPool };
}

function coldRow(slot: ColdSlot): ColdStartRow {
  const ok = slot.runs.filter((r) => r.clientMs !== null);
  const client = ok.map((r) => r.clientMs!);
  const server = slot.runs.flatMap((r) => (r.serverMs === null ? [] : [r.serverMs]));
  return {
    model: slot.model.key,
    pool: slot.variant.label,
    warmPoolSize: slot.variant.serverConfig?.warmPoolSize ?? 1,
    runs: slot.runs,
    okRuns: ok.length,
    clientP50Ms: percentile(client, 50),
    clientMaxMs: client.length === 0 ? null : Math.max(...client),
    serverP50Ms: percentile(server, 50),
    serverMaxMs: server.length === 0 ? null : Math.max(...server),
    fromPoolRuns: slot.runs.filter((r) => r.fromPool === true).length,
    goalMs: slot.variant.goalMs,
  };
}

/**
 * Runs the cold-start turns until every slot has `runs` runs (or gave up). Each loop: sample the
 * quiet meter, then take the first slot (round robin) that is at zero; measure it if quiet.
 */
async function coldStartTurns(slots: ColdSlot[], token: string, runs: number, meter: QuietMeter, log: (line: string) => void): Promise<void> {
  const done = (s: ColdSlot): boolean => s.gaveUp || s.runs.length >= runs;
  let next = 0;
  while (!slots.every(done)) {
    const quiet = meter.sample();
    let measured = false;
    for (let i = 0; i < slots.length && !measured; i++) {
      const slot = slots[(next + i) % slots.length]!;
      if (done(slot)) continue;
      const sc = await entityScaling(slot.server.url, token, slot.endpoint);
      const atZero = sc !== undefined && sc.ready_replicas === 0 && sc.starting_replicas === 0 && sc.desired_replicas === 0
        && replicaPids(slot.dataDir, slot.endpoint).size === 0;
      if (!atZero || !quiet) {
        if (performance.now() - slot.sinceMs > SLOT_TIMEOUT_MS) {
          slot.gaveUp = true;
          const why = atZero ? 'the servers were not quiet' : `the endpoint was not at zero replicas (${JSON.stringify(sc)?.slice(0, 300)})`;
          slot.runs.push({ clientMs: null, serverMs: null, fromPool: null, error: `gave up: ${SLOT_TIMEOUT_MS} ms after the previous run ${why}` });
          log(`bench:   ${slot.endpoint} (${slot.variant.key}): gave up, ${why}`);
        }
        continue;
      }
      const run = await coldRun(slot, token, sc.cold_starts_ms ?? []);
      slot.runs.push(run);
      slot.sinceMs = performance.now();
      meter.restart();
      log(`bench:   ${slot.model.key}, ${slot.variant.key}, run ${slot.runs.length}/${runs}: `
        + (run.error ?? `${run.clientMs} ms (server cold start ${run.serverMs ?? '–'} ms, ${run.fromPool ? 'from pool' : 'spawned'})`));
      next = (next + i + 1) % slots.length;
      measured = true;
    }
    if (!measured) await sleep(100);
  }
}

async function coldStarts(s: ScalingSettings, token: string, tmp: string, servers: Map<PoolVariant, { proc: ServerProcess; dataDir: string }>, log: (line: string) => void): Promise<ColdStartRow[]> {
  const models = await prepareModels(join(tmp, 'scaling-models'), COLD_MODELS);
  const slots: ColdSlot[] = [];
  for (const [variant, { proc, dataDir }] of servers) {
    const base = proc.url;
    requireLoopback(base);
    try {
      for (const model of models) {
        await registerVersion(base, token, model.key, model.path);
        const endpoint = `${model.key}-cold`;
        await ferryApi(base, token, 'POST', '/api/2.0/serving-endpoints', {
          name: endpoint,
          config: { served_entities: [{ entity_name: model.key, entity_version: '1', scale_to_zero_enabled: true, autoscaling: COLD_AUTOSCALING }] },
        });
        slots.push({ variant, server: proc, dataDir, model, endpoint, url: `${base}/serving-endpoints/${endpoint}/invocations`, runs: [], sinceMs: performance.now(), gaveUp: false });
      }
      await waitEndpointsReady(base, token, models.map((m) => `${m.key}-cold`));
    } catch (err) {
      throw new Error(`Ferry setup failed (${variant.label}): ${err instanceof Error ? err.message : String(err)}\n--- ferry server stderr (tail) ---\n${proc.stderrTail()}`);
    }
  }
  const roots = [...servers.values()].map((x) => x.proc.pid);
  const meter = new QuietMeter(() => roots);
  const t0 = performance.now();
  for (const slot of slots) slot.sinceMs = t0;
  await coldStartTurns(slots, token, s.coldRuns, meter, log);
  return slots.map(coldRow);
}

async function loadStep(s: ScalingSettings, token: string, tmp: string, proc: ServerProcess, log: (line: string) => void): Promise<LoadStepResult> {
  const base = proc.url;
  requireLoopback(base);
  const name = 'mlp-step';
  const fixture = mlpFixture(STEP_LAYERS);
  const path = join(tmp, fixture.file);
  await writeMlp(path, STEP_LAYERS);
  const checks = requestsFor(fixture, STEP_LAYERS[0], 4);
  const url = `${base}/serving-endpoints/${name}/invocations`;
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  try {
    await registerVersion(base, token, name, path);
    await ferryApi(base, token, 'POST', '/api/2.0/serving-endpoints', {
      name,
      config: { served_entities: [{ entity_name: name, entity_version: '1', max_provisioned_concurrency: STEP_MAX_PROVISIONED_CONCURRENCY, autoscaling: STEP_AUTOSCALING }] },
    });
    await waitEndpointsReady(base, token, [name]);
  } catch (err) {
    throw new Error(`Ferry setup failed (load step): ${err instanceof Error ? err.message : String(err)}\n--- ferry server stderr (tail) ---\n${proc.stderrTail()}`);
  }
  // One at a time: the check must not look like load to the autoscaler.
  for (const { body, expected } of checks) {
    const res = await fetch(url, { method: 'POST', headers, body });
    const text = await res.text();
    let prediction: unknown;
    try { prediction = (JSON.parse(text) as { predictions?: unknown[] }).predictions?.[0]; } catch { /* reported below */ }
    if (res.status !== 200 || !closeEnough(prediction, expected)) throw new Error(`${name}: expected 200 with the fixture's answer, got ${res.status} ${text.slice(0, 300)}`);
  }
  // At rest: 1 replica, nothing starting, and the server idle (the pool refilled).
  const meter = new QuietMeter(() => [proc.pid]);
  const restDeadline = performance.now() + 20_000;
  let first: AutoscalingStatus | undefined;
  for (;;) {
    const quiet = meter.sample();
    first = await entityScaling(base, token, name);
    if (quiet && first !== undefined && first.ready_replicas === 1 && first.starting_replicas === 0 && first.desired_replicas === 1) break;
    if (performance.now() > restDeadline) throw new Error(`${name}: not at rest on 1 replica after 20 s: ${JSON.stringify(first)}`);
    await sleep(100);
  }
  const script = await writeWrkScript(tmp, name, { body: checks[0]!.body, headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` } });
  log(`bench: scaling: load step, ${name} ${first.min_replicas}..${first.max_replicas} replicas, wrk -c${STEP_CLIENTS} for ${s.loadS} s...`);

  const t0 = performance.now();
  let outcome: { ok: WrkResult } | { err: unknown } | undefined;
  let loadEndMs: number | undefined;
  void runWrk(url, script, STEP_CLIENTS, s.loadS).then(
    (ok) => { outcome = { ok }; loadEndMs = performance.now() - t0; },
    (err: unknown) => { outcome = { err }; loadEndMs = performance.now() - t0; },
  );
  const samples: StepSample[] = [];
  let backToOneMs: number | null = null;
  for (let k = 0; ; k++) {
    const sc = await entityScaling(base, token, name);
    const tMs = performance.now() - t0;
    if (sc !== undefined) {
      samples.push({ tMs: Math.round(tMs), ready: sc.ready_replicas, starting: sc.starting_replicas, desired: sc.desired_replicas, inFlight: sc.in_flight_requests, queued: sc.queued_requests });
    }
    if (outcome !== undefined && 'err' in outcome) break;
    if (loadEndMs === undefined && tMs > s.loadS * 1000 + 60_000) throw new Error(`wrk still running ${Math.round(tMs / 1000)} s after a ${s.loadS} s load`);
    if (loadEndMs !== undefined && tMs > loadEndMs) {
      if (sc !== undefined && sc.ready_replicas === 1 && sc.starting_replicas === 0) { backToOneMs = Math.round(tMs - loadEndMs); break; }
      if (tMs - loadEndMs > BACK_TO_ONE_TIMEOUT_MS) break;
    }
    await sleep(Math.max(0, t0 + (k + 1) * POLL_MS - performance.now()));
  }
  if (outcome === undefined || 'err' in outcome || loadEndMs === undefined) throw (outcome !== undefined && 'err' in outcome ? outcome.err : new Error('wrk did not finish'));
  const wrk = outcome.ok;
  const during = samples.filter((x) => x.tMs <= loadEndMs!);
  const maxReadySeen = Math.max(0, ...during.map((x) => x.ready));
  const firstWith = (n: number): number | null => during.find((x) => x.ready >= n)?.tMs ?? null;
  const end = await entityScaling(base, token, name);
  return {
    model: `MLP ${STEP_LAYERS.join(' → ')}`,
    clients: STEP_CLIENTS,
    loadS: s.loadS,
    minReplicas: first.min_replicas ?? null,
    maxReplicas: first.max_replicas ?? null,
    expectedReplicas: STEP_EXPECTED_REPLICAS,
    timeToExpectedMs: firstWith(STEP_EXPECTED_REPLICAS),
    maxReadySeen,
    timeToMaxMs: maxReadySeen === 0 ? null : firstWith(maxReadySeen),
    backToOneMs,
    loadEndMs: Math.round(loadEndMs),
    wrk,
    errors: wrk.non2xx + wrk.socketErrors,
    samples,
    lastDecisions: end?.last_decisions ?? [],
  };
}

/** Both parts; every server it starts is stopped before it returns (the caller's cleanup covers a throw). */
export async function runScaling(s: ScalingSettings, token: string, tmp: string, log: (line: string) => void): Promise<ScalingReport> {
  const t0 = performance.now();
  const servers = new Map<PoolVariant, { proc: ServerProcess; dataDir: string }>();
  const stderr: ScalingReport['stderr'] = {};
  const stop = async (variant: PoolVariant): Promise<void> => {
    const x = servers.get(variant);
    if (x === undefined) return;
    stderr[`scaling, ${variant.label}`] = { levels: Object.fromEntries(x.proc.stderrLevels), notable: [...x.proc.stderrNotable] };
    await stopServer(x.proc);
    servers.delete(variant);
  };
  try {
    for (const variant of POOL_VARIANTS) {
      const dataDir = join(tmp, `scaling-${variant.key}`);
      servers.set(variant, { proc: await startFerryServer(dataDir, token, s.serverNodeArgs, variant.serverConfig), dataDir });
    }
    log(`bench: scaling: cold start from zero, ${COLD_MODELS.join(' + ')} × ${POOL_VARIANTS.map((v) => v.key).join(' + ')}, ${s.coldRuns} runs each...`);
    const coldStartRows = await coldStarts(s, token, tmp, servers, log);
    const [pool, noPool] = POOL_VARIANTS;
    await stop(noPool);
    const poolServer = servers.get(pool);
    const loadStepResult = poolServer === undefined ? null : await loadStep(s, token, tmp, poolServer.proc, log);
    if (loadStepResult !== null) {
      log(`bench:   ${loadStepResult.maxReadySeen} ready at most (first at ${loadStepResult.timeToMaxMs ?? '–'} ms), ${loadStepResult.expectedReplicas} at ${loadStepResult.timeToExpectedMs ?? '–'} ms; `
        + `errors ${loadStepResult.errors}; back to 1 replica ${loadStepResult.backToOneMs ?? '–'} ms after the load`);
    }
    return {
      settingsLine: settingsLine(s),
      coldStarts: coldStartRows,
      loadStep: loadStepResult,
      stderr,
      totalS: Math.round((performance.now() - t0) / 1000),
    };
  } finally {
    for (const variant of [...servers.keys()]) await stop(variant);
  }
}

function settingsLine(s: ScalingSettings): string {
  return `Cold start: ${s.coldRuns} runs per model and warm-pool setting, each from 0 replicas, endpoint served entity `
    + `\`"scale_to_zero_enabled": true, "autoscaling": ${JSON.stringify(COLD_AUTOSCALING)}\`; one request timed at the client. `
    + `Load step: wrk -t1 -c${STEP_CLIENTS} -d${s.loadS}s on \`"max_provisioned_concurrency": ${STEP_MAX_PROVISIONED_CONCURRENCY}, "autoscaling": ${JSON.stringify(STEP_AUTOSCALING)}\`, `
    + `endpoint polled every ${POLL_MS} ms (times are ±${POLL_MS} ms).`;
}
