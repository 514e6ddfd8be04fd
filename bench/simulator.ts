/**
 * The simulator section (`--only simulator`):
 *
 * 1. **Fidelity.** A real Ferry server serves a js model that answers after a 40 ms timer (its
 *    time does not depend on load, as the simulator's replica model assumes; batching off) with
 *    short autoscaling windows. Two traces are replayed for real, open loop, by this process on
 *    127.0.0.1 (each request sent at its scheduled time, at most {@link MAX_IN_FLIGHT} at once,
 *    10 s timeout): a load step (5 → 100 req/s) and a bursty pattern (5 req/s with 100 req/s
 *    bursts). The endpoint's replicas (ready + starting) are polled every 100 ms and integrated
 *    into replica-seconds; client latencies give the p99. Then the server's own
 *    `POST .../simulate` replays the exact timestamps sent, with the entity's measured model time,
 *    the replica start time seen in the polls and the gateway overhead measured in the first
 *    5 s (client p50 − model mean, at 1 replica and no wait). Predicted vs measured.
 * 2. **Savings.** The bundled bursty and (full runs only) diurnal traces, offline, each with a
 *    replica model and p99 goal ({@link SAVINGS}): the recommendation against static
 *    provisioning for the peak and Knative's default tunables.
 * 3. **Speed.** A day at 1,000 req/s for one endpoint, timed.
 *
 * Nothing here asserts a goal: the goals table compares.
 */
import http from 'node:http';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { scalingSpecFor } from '../src/autoscaler/index.js';
import {
  BUNDLED_TRACES, generateTrace, parseSimulateRequest, runSimulation, seededRandom, simulate, type PatternParams, type SimulateAnswer, type SimulationResult,
} from '../src/simulator/index.js';
import { sleep, stopServer } from './procs.js';
import { ferryApi, registerVersion, startFerryServer, waitEndpointsReady } from './targets.js';
import { goal, type Goal } from './report.js';
import { percentile } from './scaling.js';
import { round } from './wrk.js';

const SERVICE_MS = 40;
const MAX_IN_FLIGHT = 256;
const REQUEST_TIMEOUT_MS = 10_000;
const POLL_MS = 100;
/** Short windows, so a minute of traffic shows scale-ups and scale-downs. */
const AUTOSCALING = { target_concurrency: 2, stable_window_ms: 10_000, panic_window_ms: 2000, scale_down_delay_ms: 2000 } as const;
/** 16 concurrent requests at most → 1..8 replicas at target 2. */
const MAX_PROVISIONED_CONCURRENCY = 16;
/**
 * The savings section's replica model and p99 goal per bundled trace: the bursty trace on a
 * 100 ms model with 1 s cold starts; the diurnal one (15 req/s at most) on a 2 s model (an LLM
 * answering one request in 2 s, 4 sequences per replica) with 10 s cold starts (a GPU model load).
 */
const SAVINGS = {
  bursty: { replica: { service_time_ms: 100, max_concurrency_per_replica: 4, cold_start_ms: 1000 }, p99Ms: 500 },
  diurnal: { replica: { service_time_ms: 2000, max_concurrency_per_replica: 4, cold_start_ms: 10_000 }, p99Ms: 3000 },
} as const;

const MODEL_MJS = `export async function predict(input) {
  await new Promise((resolve) => setTimeout(resolve, ${SERVICE_MS}));
  return { score: input.text.map((t) => t.length) };
}
`;
const MANIFEST = {
  flavor: 'js', main: 'model.mjs',
  signature: { inputs: [{ name: 'text', dtype: 'string', shape: [-1] }], outputs: [{ name: 'score', dtype: 'float32', shape: [-1] }] },
};

export interface FidelityRow {
  trace: string;
  requests: number;
  durationS: number;
  errors: number;
  measuredReplicaSeconds: number;
  predictedReplicaSeconds: number;
  replicaSecondsError: number;
  measuredP99Ms: number | null;
  predictedP99Ms: number | null;
  p99Error: number | null;
  measuredMaxReplicas: number;
  predictedMaxReplicas: number;
  replicaStartMs: number;
  overheadMs: number;
}

export interface SavingsRow {
  trace: string;
  model: string;
  requests: number;
  recommended: string;
  recommendedReplicaSeconds: number | null;
  recommendedP99Ms: number | null;
  staticReplicas: number | null;
  staticReplicaSeconds: number | null;
  staticP99Ms: number | null;
  knativeReplicaSeconds: number;
  knativeP99Ms: number | null;
  savings: number | null;
  seconds: number;
}

export interface SimulatorReport {
  fidelity: FidelityRow[];
  savings: SavingsRow[];
  dayAt1000: { requests: number; seconds: number };
}

/** Arrival times (ms) of a rate trace as a Poisson process per second, seeded. */
function arrivals(p: PatternParams): number[] {
  const t = generateTrace(p);
  const random = seededRandom(p.seed);
  const out: number[] = [];
  t.ratesPerS.forEach((rate, i) => {
    let at = i * 1000;
    for (;;) {
      at += (-Math.log(1 - random()) / rate) * 1000;
      if (!(at < (i + 1) * 1000)) break;
      out.push(at);
    }
  });
  return out;
}

/** Sends one request per arrival time; resolves with each request's latency (ms; NaN on error). */
async function replay(url: string, token: string, endpoint: string, times: readonly number[]): Promise<number[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: MAX_IN_FLIGHT });
  const body = JSON.stringify({ inputs: ['hello'] });
  const target = new URL(`/serving-endpoints/${endpoint}/invocations`, url);
  const latencies = new Array<number>(times.length).fill(NaN);
  const t0 = performance.now();
  const sent: Array<Promise<void>> = [];
  for (const [i, at] of times.entries()) {
    const wait = at - (performance.now() - t0);
    if (wait > 1) await sleep(wait);
    sent.push(new Promise<void>((resolve) => {
      const start = performance.now();
      const req = http.request(target, { method: 'POST', agent, timeout: REQUEST_TIMEOUT_MS, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } }, (res) => {
        res.resume();
        res.on('end', () => {
          if (res.statusCode === 200) latencies[i] = performance.now() - start;
          resolve();
        });
      });
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve());
      req.end(body);
    }));
  }
  await Promise.all(sent);
  agent.destroy();
  return latencies;
}

interface Poll { tMs: number; ready: number; starting: number }

/** Polls the endpoint's replica counts until `stop()` says so. */
async function pollReplicas(url: string, token: string, endpoint: string, stop: () => boolean): Promise<Poll[]> {
  const polls: Poll[] = [];
  const t0 = performance.now();
  while (!stop()) {
    const ep = await ferryApi(url, token, 'GET', `/api/2.0/serving-endpoints/${endpoint}`);
    const a = ep?.config?.served_entities?.[0]?.autoscaling;
    polls.push({ tMs: performance.now() - t0, ready: a?.ready_replicas ?? 0, starting: a?.starting_replicas ?? 0 });
    await sleep(POLL_MS);
  }
  return polls;
}

/** ∫ (ready + starting) dt over [0, untilMs], in seconds (each poll's count holds until the next). */
function replicaSeconds(polls: readonly Poll[], untilMs: number): number {
  let sum = 0;
  for (const [i, p] of polls.entries()) {
    const next = Math.min(polls[i + 1]?.tMs ?? untilMs, untilMs);
    if (next > p.tMs) sum += (p.ready + p.starting) * (next - p.tMs);
  }
  return sum / 1000;
}

/** Mean time from a poll that first shows a replica starting to the poll that shows it ready. */
function startTimeMs(polls: readonly Poll[]): number | undefined {
  const spans: number[] = [];
  let since: number | undefined;
  for (const p of polls) {
    if (p.starting > 0 && since === undefined) since = p.tMs;
    if (p.starting === 0 && since !== undefined) {
      spans.push(p.tMs - since);
      since = undefined;
    }
  }
  return spans.length === 0 ? undefined : spans.reduce((a, b) => a + b, 0) / spans.length;
}

const relError = (predicted: number | null, measured: number | null): number | null =>
  predicted === null || measured === null || measured === 0 ? null : round((predicted - measured) / measured, 3);

async function fidelity(url: string, token: string, endpoint: string, name: string, p: PatternParams, log: (line: string) => void): Promise<FidelityRow> {
  const times = arrivals(p);
  log(`bench: simulator fidelity ${name}: replaying ${times.length} requests over ${p.durationMs / 1000} s...`);
  let done = false;
  const polling = pollReplicas(url, token, endpoint, () => done);
  const latencies = await replay(url, token, endpoint, times);
  done = true;
  const polls = await polling;
  const ok = latencies.filter((l) => !Number.isNaN(l));
  const first = latencies.filter((l, i) => !Number.isNaN(l) && (times[i] ?? Infinity) < 5000);

  // The entity's own measurements, read by the simulate call; the overhead from the first 5 s.
  const base = { trace: { source: 'file', format: 'csv', data: `timestamp\n${times.map((t) => (1_800_000_000_000 + t).toFixed(3)).join('\n')}\n` } };
  const probe = await ferryApi(url, token, 'POST', `/api/2.0/serving-endpoints/${endpoint}/simulate`, base) as SimulateAnswer;
  const model = probe.replica_model.service_time;
  const modelMeanMs = model.kind === 'fixed' ? model.ms : model.meanMs ?? SERVICE_MS;
  const overheadMs = Math.max(0, (percentile(first, 50) ?? modelMeanMs) - modelMeanMs);
  const startMs = startTimeMs(polls) ?? 300;
  const answer = await ferryApi(url, token, 'POST', `/api/2.0/serving-endpoints/${endpoint}/simulate`, {
    ...base, replica: { cold_start_ms: round(startMs, 0), overhead_ms: round(overheadMs, 2) },
  }) as SimulateAnswer;
  const predicted = (answer.current ?? answer.candidate).result;
  const measuredRs = round(replicaSeconds(polls, p.durationMs), 1);
  const measuredP99 = percentile(ok, 99);
  return {
    trace: name, requests: times.length, durationS: p.durationMs / 1000, errors: times.length - ok.length,
    measuredReplicaSeconds: measuredRs, predictedReplicaSeconds: predicted.replica_seconds, replicaSecondsError: relError(predicted.replica_seconds, measuredRs) ?? 0,
    measuredP99Ms: measuredP99 === null ? null : round(measuredP99, 1), predictedP99Ms: predicted.p99_ms, p99Error: relError(predicted.p99_ms, measuredP99),
    measuredMaxReplicas: Math.max(...polls.map((x) => x.ready + x.starting)), predictedMaxReplicas: predicted.max_replicas,
    replicaStartMs: round(startMs, 0), overheadMs: round(overheadMs, 2),
  };
}

function savings(name: 'diurnal' | 'bursty'): SavingsRow {
  const t0 = performance.now();
  const req = parseSimulateRequest({
    trace: { source: 'bundled', name }, candidate: { max_provisioned_concurrency: 256 }, replica: SAVINGS[name].replica, recommend: { target_p99_ms: SAVINGS[name].p99Ms },
  });
  const a = runSimulation(req, {
    trace: generateTrace(BUNDLED_TRACES[name]), current: undefined, measuredServiceTime: undefined, measuredColdStartsMs: [],
    gateway: { maxConcurrencyPerReplica: 64, maxQueued: 1000, queueTimeoutMs: 10_000 },
  });
  const rec = a.recommendation;
  const r = (x: SimulationResult | null | undefined): [number | null, number | null] => [x?.replica_seconds ?? null, x?.p99_ms ?? null];
  const [recRs, recP99] = r(rec?.result);
  const [stRs, stP99] = r(rec?.static_peak?.result);
  return {
    trace: name, model: `${SAVINGS[name].replica.service_time_ms} ms per request, ${SAVINGS[name].replica.max_concurrency_per_replica} per replica, ${SAVINGS[name].replica.cold_start_ms / 1000} s cold start, p99 ≤ ${SAVINGS[name].p99Ms} ms`,
    requests: a.trace.requests,
    recommended: rec?.setting == null ? 'none' : `target ${rec.setting.target_concurrency}, scale to zero ${rec.setting.scale_to_zero_enabled ? 'on' : 'off'}, stable ${rec.setting.stable_window_ms / 1000} s, delay ${rec.setting.scale_down_delay_ms / 1000} s`,
    recommendedReplicaSeconds: recRs, recommendedP99Ms: recP99,
    staticReplicas: rec?.static_peak?.replicas ?? null, staticReplicaSeconds: stRs, staticP99Ms: stP99,
    knativeReplicaSeconds: rec?.knative_defaults.replica_seconds ?? 0, knativeP99Ms: rec?.knative_defaults.p99_ms ?? null,
    savings: rec?.savings_vs_static_peak ?? null,
    seconds: round((performance.now() - t0) / 1000, 1),
  };
}

export async function runSimulatorBench(opts: { quick: boolean; serverNodeArgs: string[] }, token: string, tmp: string, log: (line: string) => void): Promise<SimulatorReport> {
  const durationMs = opts.quick ? 30_000 : 90_000;
  const modelDir = join(tmp, 'sleep-model');
  await mkdir(modelDir, { recursive: true });
  await writeFile(join(modelDir, 'model.mjs'), MODEL_MJS);
  await writeFile(join(modelDir, 'ferry.json'), JSON.stringify(MANIFEST));
  const server = await startFerryServer(join(tmp, 'ferry-simulator'), token, opts.serverNodeArgs);
  const rows: FidelityRow[] = [];
  try {
    if (new URL(server.url).hostname !== '127.0.0.1') throw new Error(`refusing to use ${server.url}: the bench only talks to 127.0.0.1`);
    await registerVersion(server.url, token, 'sleep40', modelDir);
    const traces: Array<[string, PatternParams]> = [
      ['load step 5 → 100 req/s', { pattern: 'step', durationMs, rps: 5, peakRps: 100, atMs: durationMs / 3, burstMs: 0, gapMs: 0, seed: 11 }],
      ['bursty 5 / 100 req/s', { pattern: 'bursty', durationMs, rps: 5, peakRps: 100, atMs: 0, burstMs: 8000, gapMs: 15_000, seed: 12 }],
    ];
    for (const [i, [name, p]] of traces.entries()) {
      // A fresh endpoint per trace: each starts at rest on one replica.
      const endpoint = `fidelity-${i}`;
      await ferryApi(server.url, token, 'POST', '/api/2.0/serving-endpoints', {
        name: endpoint,
        config: { served_entities: [{ entity_name: 'sleep40', entity_version: '1', max_provisioned_concurrency: MAX_PROVISIONED_CONCURRENCY, autoscaling: AUTOSCALING, batching: { enabled: false } }] },
      });
      await waitEndpointsReady(server.url, token, [endpoint]);
      rows.push(await fidelity(server.url, token, endpoint, name, p, log));
      await ferryApi(server.url, token, 'DELETE', `/api/2.0/serving-endpoints/${endpoint}`);
    }
  } finally {
    await stopServer(server);
  }
  log('bench: simulator savings on the bundled traces...');
  // The diurnal search simulates a day ~130 times (~40 s here): full runs only.
  const saved = opts.quick ? [savings('bursty')] : [savings('bursty'), savings('diurnal')];
  log('bench: simulator speed: a day at 1,000 req/s...');
  const spec = scalingSpecFor({ workloadSize: 'Small', scaleToZeroEnabled: false, maxProvisionedConcurrency: 1000 }, {});
  const t0 = performance.now();
  const day = simulate(generateTrace({ pattern: 'steady', durationMs: 86_400_000, rps: 1000, peakRps: 1000, atMs: 0, burstMs: 0, gapMs: 0, seed: 1 }), spec, {
    serviceTime: { kind: 'fixed', ms: 10 }, coldStartMs: [1000], maxConcurrencyPerReplica: 64, bufferDepth: 1000, bufferTimeoutMs: 10_000, overheadMs: 0,
  });
  return { fidelity: rows, savings: saved, dayAt1000: { requests: day.requests, seconds: round((performance.now() - t0) / 1000, 2) } };
}

function table(header: string[], rows: Array<Array<string | number | null>>): string[] {
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.map((c) => (c === null ? '-' : String(c))).join(' | ')} |`)];
}

const pct = (x: number | null): string => (x === null ? '-' : `${x > 0 ? '+' : ''}${round(x * 100, 1)}%`);

export function simulatorMarkdown(r: SimulatorReport): string[] {
  return [
    '## Autoscaling simulator (bench/simulator.ts)',
    '',
    `Fidelity: a js model answering after a ${SERVICE_MS} ms timer, batching off, target ${AUTOSCALING.target_concurrency}, stable ${AUTOSCALING.stable_window_ms / 1000} s, panic ${AUTOSCALING.panic_window_ms / 1000} s, delay ${AUTOSCALING.scale_down_delay_ms / 1000} s, 1..${MAX_PROVISIONED_CONCURRENCY / AUTOSCALING.target_concurrency} replicas; open-loop replay on 127.0.0.1 vs the server's own POST .../simulate on the same timestamps.`,
    '',
    ...table(
      ['trace', 'requests', 'errors', 'replica-s measured', 'replica-s predicted', 'error', 'p99 ms measured', 'p99 ms predicted', 'error', 'max replicas measured / predicted', 'replica start ms', 'overhead ms'],
      r.fidelity.map((x) => [x.trace, x.requests, x.errors, x.measuredReplicaSeconds, x.predictedReplicaSeconds, pct(x.replicaSecondsError), x.measuredP99Ms, x.predictedP99Ms, pct(x.p99Error), `${x.measuredMaxReplicas} / ${x.predictedMaxReplicas}`, x.replicaStartMs, x.overheadMs]),
    ),
    '',
    'Savings: the bundled traces, offline; the cheapest setting of the search grid that meets the p99 goal, static provisioning for the peak (the fewest always-on replicas that meet it) and Knative\'s default tunables at the same target.',
    '',
    ...table(
      ['trace', 'replica model and goal', 'requests', 'recommended', 'replica-s', 'p99 ms', 'static for the peak', 'replica-s', 'p99 ms', 'Knative defaults replica-s', 'p99 ms', 'savings vs static', 'search s'],
      r.savings.map((x) => [x.trace, x.model, x.requests, x.recommended, x.recommendedReplicaSeconds, x.recommendedP99Ms, x.staticReplicas === null ? 'none meets p99' : `${x.staticReplicas} replicas`, x.staticReplicaSeconds, x.staticP99Ms, x.knativeReplicaSeconds, x.knativeP99Ms, pct(x.savings), x.seconds]),
    ),
    '',
    `Speed: a day at 1,000 req/s (${r.dayAt1000.requests} requests) simulated in ${r.dayAt1000.seconds} s.`,
    '',
  ];
}

/** The goals: fidelity ±15% replica-seconds and ±25% p99, ≥ 40% savings, a day at 1,000 req/s < 2 s. */
export function simulatorGoals(r: SimulatorReport | null): Goal[] {
  if (r === null) return [];
  const abs = (x: number | null): number | null => (x === null ? null : round(Math.abs(x), 3));
  return [
    ...r.fidelity.flatMap((x) => [
      goal(`simulator fidelity ${x.trace}: |replica-seconds error|`, abs(x.replicaSecondsError), '≤', 0.15),
      goal(`simulator fidelity ${x.trace}: |p99 error|`, abs(x.p99Error), '≤', 0.25),
    ]),
    ...r.savings.map((x) => goal(`simulator savings ${x.trace}: recommended vs static for the peak (share of replica-seconds saved)`, x.savings, '≥', 0.4)),
    goal('simulator: a day at 1,000 req/s, seconds', r.dayAt1000.seconds, '<', 2),
  ];
}
