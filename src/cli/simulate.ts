/**
 * `ferry simulate` (`simulateCommand`): its options → a simulate request body, and the answer → a
 * table. With an endpoint name the server simulates (its traffic and measurements available);
 * without one the same code runs here, offline, on a trace file, a pattern or a bundled trace.
 */
import fsp from 'node:fs/promises';
import { FerryClient } from '../client/index.js';
import { compileServerConfig, parseDurationMs } from '../config/index.js';
import { localTrace, parseSimulateRequest, runSimulation, type SimulateAnswer, type SimulateRequestInput, type SimulationResult } from '../simulator/index.js';
import { out, parse, UsageError } from './args.js';

export const SIMULATE_OPTIONS = {
  trace: { type: 'string' }, pattern: { type: 'string' }, bundled: { type: 'string' }, source: { type: 'string' }, window: { type: 'string' },
  rps: { type: 'string' }, 'peak-rps': { type: 'string' }, duration: { type: 'string' }, at: { type: 'string' }, burst: { type: 'string' }, gap: { type: 'string' }, seed: { type: 'string' },
  candidate: { type: 'string' }, 'served-entity': { type: 'string' },
  'service-time-ms': { type: 'string' }, 'cold-start-ms': { type: 'string' }, 'max-concurrency': { type: 'string' }, 'overhead-ms': { type: 'string' },
  price: { type: 'string' }, 'target-p99-ms': { type: 'string' }, 'max-cold-starts-per-hour': { type: 'string' },
} as const;

export const SIMULATE_HELP = `  simulate [endpoint] (--trace FILE.csv|.jsonl | --bundled diurnal|bursty
                    | --pattern steady|step|diurnal|bursty|spike|on_off --rps N [--peak-rps N]
                      [--duration 1h] [--at 10m] [--burst 20s] [--gap 2m] [--seed N]
                    | --source series|inference-table [--window 1h])   (the last: with an endpoint)
                    [--candidate '{"autoscaling":{"target_concurrency":2}}' | --candidate @file.json]
                    [--service-time-ms N] [--cold-start-ms N] [--max-concurrency N] [--overhead-ms N]
                    [--price PER_REPLICA_HOUR] [--target-p99-ms N [--max-cold-starts-per-hour N]]
                              What a scaling config would have cost on a trace (replica-seconds,
                              p50/p99, cold starts) next to the current one, and with a p99 target
                              the cheapest setting that meets it; offline without an endpoint`;

type Values = Record<string, string | boolean | undefined>;

/** A usage mistake, reported with the command's usage. */
export class SimulateUsageError extends Error {}

function numberOf(values: Values, key: string): number | undefined {
  const v = values[key];
  if (typeof v !== 'string') return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new SimulateUsageError(`simulate: --${key} ${JSON.stringify(v)} is not a number`);
  return n;
}

function durationOf(values: Values, key: string): number | undefined {
  const v = values[key];
  if (typeof v !== 'string') return undefined;
  const ms = parseDurationMs(v);
  if (ms === undefined) throw new SimulateUsageError(`simulate: --${key} ${JSON.stringify(v)} is not a duration such as 90s, 10m or 1h`);
  return ms;
}

const defined = <T extends object>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;

/** The request body the options describe. */
export async function simulateBody(values: Values, withServer: boolean): Promise<SimulateRequestInput> {
  const str = (k: string): string | undefined => (typeof values[k] === 'string' ? values[k] : undefined);
  const sources = ['trace', 'pattern', 'bundled', 'source'].filter((k) => str(k) !== undefined);
  if (sources.length !== 1) throw new SimulateUsageError('simulate: give exactly one of --trace FILE, --pattern NAME, --bundled NAME, --source series|inference-table');
  let trace: SimulateRequestInput['trace'];
  const file = str('trace');
  const source = str('source');
  if (file !== undefined) {
    trace = { source: 'file', format: /\.(jsonl|ndjson)$/i.test(file) ? 'jsonl' : 'csv', data: await fsp.readFile(file, 'utf8') };
  } else if (str('bundled') !== undefined) {
    trace = { source: 'bundled', name: str('bundled') as 'diurnal' };
  } else if (source !== undefined) {
    if (!withServer) throw new SimulateUsageError(`simulate: --source ${source} reads an endpoint's traffic: give the endpoint name`);
    if (source !== 'series' && source !== 'inference-table') throw new SimulateUsageError(`simulate: --source ${JSON.stringify(source)}: expected series or inference-table`);
    trace = defined({ source: source === 'series' ? 'series' : 'inference_table', window_ms: durationOf(values, 'window') });
  } else {
    trace = defined({
      source: 'pattern', pattern: str('pattern') as 'steady', rps: numberOf(values, 'rps') ?? 0, peak_rps: numberOf(values, 'peak-rps'),
      duration_ms: durationOf(values, 'duration'), at_ms: durationOf(values, 'at'), burst_ms: durationOf(values, 'burst'), gap_ms: durationOf(values, 'gap'), seed: numberOf(values, 'seed'),
    });
  }
  const candidateText = str('candidate');
  let candidate: Record<string, unknown> | undefined;
  if (candidateText !== undefined) {
    const text = candidateText.startsWith('@') ? await fsp.readFile(candidateText.slice(1), 'utf8') : candidateText;
    try {
      candidate = JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw new SimulateUsageError('simulate: --candidate is not JSON (served-entity scaling fields, e.g. {"scale_to_zero_enabled": true, "autoscaling": {"target_concurrency": 2}})');
    }
  }
  const target = numberOf(values, 'target-p99-ms');
  const maxColdStarts = numberOf(values, 'max-cold-starts-per-hour');
  if (maxColdStarts !== undefined && target === undefined) throw new SimulateUsageError('simulate: --max-cold-starts-per-hour goes with --target-p99-ms');
  return defined({
    trace,
    served_entity_name: str('served-entity'),
    candidate,
    replica: defined({
      service_time_ms: numberOf(values, 'service-time-ms'), cold_start_ms: numberOf(values, 'cold-start-ms'),
      max_concurrency_per_replica: numberOf(values, 'max-concurrency'), overhead_ms: numberOf(values, 'overhead-ms'),
    }),
    price_per_replica_hour: numberOf(values, 'price'),
    recommend: target === undefined ? undefined : defined({ target_p99_ms: target, max_cold_starts_per_hour: maxColdStarts }),
  });
}

/** Runs a request here, without a server: the server's default gateway settings, no measurements. */
export function simulateOffline(body: SimulateRequestInput): SimulateAnswer {
  const req = parseSimulateRequest(body);
  const trace = localTrace(req.trace);
  if (trace === undefined) throw new SimulateUsageError('simulate: this trace source needs an endpoint');
  const defaults = compileServerConfig({});
  return runSimulation(req, {
    trace, current: undefined, measuredServiceTime: undefined, measuredColdStartsMs: [],
    gateway: { maxConcurrencyPerReplica: defaults.replicaMaxConcurrency, maxQueued: defaults.bufferDepth, queueTimeoutMs: defaults.bufferTimeoutMs },
  });
}

/** The answer as a table: one row per simulated config. */
export function formatSimulation(a: SimulateAnswer): string {
  const ms = (v: number | null): string => (v === null ? '-' : v < 10 ? v.toFixed(2) : v.toFixed(0));
  const row = (label: string, r: SimulationResult): string[] => [
    label, r.replica_seconds.toFixed(0), r.cost === null ? '-' : r.cost.toFixed(2), ms(r.p50_ms), ms(r.p99_ms), String(r.waited),
    String(r.refused_buffer_full + r.refused_deadline), String(r.cold_starts), String(r.max_replicas),
  ];
  const rows: string[][] = [];
  if (a.current !== null) rows.push(row('current', a.current.result));
  rows.push(row('candidate', a.candidate.result));
  const rec = a.recommendation;
  if (rec?.result != null) rows.push(row('recommended', rec.result));
  if (rec?.static_peak != null) rows.push(row(`static ${rec.static_peak.replicas} (peak)`, rec.static_peak.result));
  if (rec != null) rows.push(row('knative defaults', rec.knative_defaults));
  const header = ['CONFIG', 'REPLICA-S', 'COST', 'P50 MS', 'P99 MS', 'WAITED', 'REFUSED', 'COLD STARTS', 'MAX REPLICAS'];
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  const lines = [
    `Trace: ${a.trace.source}, ${a.trace.requests} requests over ${a.trace.duration_s} s. Replica model: service time ${a.replica_model.service_time.kind === 'fixed' ? `${a.replica_model.service_time.ms} ms` : 'measured histogram'} (${a.replica_model.service_time_source}), cold start ${a.replica_model.cold_start_ms.join('/')} ms (${a.replica_model.cold_start_source}), ${a.replica_model.max_concurrency_per_replica} requests per replica.`,
    '',
    ...all.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ')),
  ];
  if (rec != null) {
    lines.push('');
    lines.push(rec.setting === null
      ? `No setting of the ${rec.evaluated} tried meets p99 ≤ ${rec.goal.target_p99_ms} ms.`
      : `Recommended for p99 ≤ ${rec.goal.target_p99_ms} ms: ${JSON.stringify(rec.config)}${rec.savings_vs_static_peak === null ? '' : ` (${Math.round(rec.savings_vs_static_peak * 100)}% fewer replica-seconds than static provisioning for the peak)`}.`);
  }
  return lines.join('\n');
}

/** `ferry simulate [endpoint] …`: on the server with an endpoint name, offline without. */
export async function simulateCommand(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, SIMULATE_OPTIONS);
  const endpoint = positionals[0];
  try {
    const body = await simulateBody(values, endpoint !== undefined);
    const answer = endpoint === undefined ? simulateOffline(body) : await FerryClient.fromEnv().simulate(endpoint, body);
    out(values, answer, formatSimulation(answer));
  } catch (err) {
    throw err instanceof SimulateUsageError ? new UsageError(err.message) : err;
  }
}

