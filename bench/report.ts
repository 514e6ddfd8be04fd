/**
 * What a run produced and how it is reported: rows, compute limits, ratios, the goals table, the
 * machine, and the Markdown of bench/results/latest.md. Ratios and goals are reported, never
 * asserted: a goal not met is a finding, not a failed run.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import type { ComputeBatch } from './compute-limit.js';
import type { BenchModel, ModelKey } from './models.js';
import type { ScalingReport } from './scaling.js';
import { TARGET_DESCRIPTIONS, type TargetName } from './targets.js';
import { round, type WrkResult } from './wrk.js';

export interface Row {
  model: ModelKey;
  target: TargetName;
  connections: number;
  wrk: WrkResult;
  /** CPU µs per request by process label ("server", "replica", "workers", ...), user + system, all threads. */
  cpuUsPerRequest: Record<string, number>;
  /** CPU cores busy on average during the run, by process label. */
  cpuCores: Record<string, number>;
  /** Whole machine (wrk included) busy during the run, 0–100. */
  machineBusyPct: number;
  /** Resident memory at the end of the run, MiB, by process label (summed over processes with that label). */
  rssMiB: Record<string, number>;
}

export interface ComputeLimit {
  model: ModelKey;
  batches: ComputeBatch[];
  bestRowsPerS: number;
  bestBatchSize: number;
}

/** A Ferry batching variant against the other targets, at one model and connection count. null: not measured. */
export interface Ratio {
  model: ModelKey;
  connections: number;
  ferry: TargetName;
  vsSingle: number | null;
  vsCluster2: number | null;
  vsBatchingOff: number | null;
  vsComputeLimit: number | null;
  p50MinusSingleMs: number | null;
  p99MinusSingleMs: number | null;
}

export interface Goal {
  goal: string;
  measured: number | null;
  op: '≥' | '≤' | '<';
  target: number;
  status: 'met' | 'not met' | 'not measured';
}

export interface Report {
  quick: boolean;
  title: string;
  settingsLine: string;
  machine: Record<string, string | number>;
  models: BenchModel[];
  computeLimits: ComputeLimit[];
  rows: Row[];
  ratios: Ratio[];
  /** The autoscaling section (bench/scaling.ts); null when not run. */
  scaling: ScalingReport | null;
  goals: Goal[];
  /** Per Ferry server (a model's, or a scaling one): its stderr counts by level and its first distinct non-info lines. */
  ferryStderr: Record<string, { levels: Record<string, number>; notable: string[] }>;
}

const FERRY_BATCHING: TargetName[] = ['ferry-on', 'ferry-on-500us', 'ferry-w2', 'ferry-w2-rl'];

function find(rows: Row[], model: ModelKey, target: TargetName, connections: number): WrkResult | undefined {
  return rows.find((r) => r.model === model && r.target === target && r.connections === connections)?.wrk;
}

/** a ÷ b to 2 decimals, or to 2 significant digits below 0.1 (Ferry ÷ compute limit of the linear model is ~0.002). */
function ratio(a: number | undefined, b: number | undefined): number | null {
  if (a === undefined || b === undefined || b === 0) return null;
  const r = a / b;
  return r < 0.1 ? Number(r.toPrecision(2)) : round(r, 2);
}

function diff(a: number | undefined, b: number | undefined): number | null {
  return a === undefined || b === undefined ? null : round(a - b, 3);
}

/** Each batching Ferry variant ÷ the others, per model and connection count it was measured at. */
export function ratios(rows: Row[], limits: ComputeLimit[]): Ratio[] {
  const out: Ratio[] = [];
  for (const r of rows) {
    if (!FERRY_BATCHING.includes(r.target)) continue;
    const single = find(rows, r.model, 'single', r.connections);
    out.push({
      model: r.model,
      connections: r.connections,
      ferry: r.target,
      vsSingle: ratio(r.wrk.requestsPerS, single?.requestsPerS),
      vsCluster2: ratio(r.wrk.requestsPerS, find(rows, r.model, 'cluster2', r.connections)?.requestsPerS),
      vsBatchingOff: ratio(r.wrk.requestsPerS, find(rows, r.model, 'ferry-off', r.connections)?.requestsPerS),
      vsComputeLimit: ratio(r.wrk.requestsPerS, limits.find((l) => l.model === r.model)?.bestRowsPerS),
      p50MinusSingleMs: diff(r.wrk.latencyP50Ms, single?.latencyP50Ms),
      p99MinusSingleMs: diff(r.wrk.latencyP99Ms, single?.latencyP99Ms),
    });
  }
  return out;
}

export function goal(name: string, measured: number | null | undefined, op: Goal['op'], target: number): Goal {
  const holds = (m: number): boolean => (op === '≥' ? m >= target : op === '≤' ? m <= target : m < target);
  return {
    goal: name,
    measured: measured ?? null,
    op,
    target,
    status: measured === null || measured === undefined ? 'not measured' : holds(measured) ? 'met' : 'not met',
  };
}

/** The performance issue's goals. "Ferry" is `ferry-on`, Ferry's default config (batching on, no added delay). */
export function goals(rows: Row[], rs: Ratio[]): Goal[] {
  const on = (model: ModelKey, c: number): Ratio | undefined => rs.find((r) => r.model === model && r.connections === c && r.ferry === 'ferry-on');
  const w2 = (model: ModelKey, c: number): Ratio | undefined => rs.find((r) => r.model === model && r.connections === c && r.ferry === 'ferry-w2');
  const ferryRows = rows.filter((r) => r.target.startsWith('ferry-'));
  const errors = ferryRows.length === 0 ? null : ferryRows.reduce((n, r) => n + r.wrk.non2xx + r.wrk.socketErrors, 0);
  return [
    goal('linear c64: Ferry ÷ single-process req/s', on('linear', 64)?.vsSingle, '≥', 1.8),
    goal('linear c64: Ferry ÷ cluster-2 req/s', on('linear', 64)?.vsCluster2, '≥', 0.95),
    goal('linear c64: Ferry p99 ms', find(rows, 'linear', 'ferry-on', 64)?.latencyP99Ms, '≤', 3),
    goal('linear c1: Ferry p50 − single-process p50 ms', on('linear', 1)?.p50MinusSingleMs, '≤', 0.1),
    goal('heavy c64: batching on ÷ off req/s', on('heavy', 64)?.vsBatchingOff, '≥', 3),
    goal('heavy c64: batching on ÷ compute limit rows/s', on('heavy', 64)?.vsComputeLimit, '≥', 0.7),
    goal('errors: non-2xx + socket errors, all Ferry rows', errors, '≤', 0),
    // A gateway on every core: the same goals for the server with 2 gateway workers.
    goal('linear c64: Ferry (2 gateway workers) ÷ cluster-2 req/s', w2('linear', 64)?.vsCluster2, '≥', 0.95),
    goal('linear c64: Ferry (2 gateway workers) ÷ single-process req/s', w2('linear', 64)?.vsSingle, '≥', 1.3),
    goal('linear c64: Ferry (2 gateway workers) p99 ms', find(rows, 'linear', 'ferry-w2', 64)?.latencyP99Ms, '≤', 3),
    goal('mlp c64: Ferry (2 gateway workers) ÷ cluster-2 req/s', w2('mlp', 64)?.vsCluster2, '≥', 0.95),
    goal('linear c1: Ferry (2 gateway workers) p50 − single-process p50 ms', w2('linear', 1)?.p50MinusSingleMs, '≤', 0.1),
  ];
}

/** The autoscaling issue's goals: first request from zero (client p50) per model and warm-pool setting, and no errors. */
export function scalingGoals(sc: ScalingReport | null): Goal[] {
  if (sc === null) return [];
  const failed = sc.coldStarts.reduce((n, r) => n + r.runs.length - r.okRuns, 0);
  return [
    ...sc.coldStarts.map((r) => goal(`cold start ${r.model}, ${r.pool}: first-request p50 ms`, r.clientP50Ms, '<', r.goalMs)),
    goal('cold start: failed first requests (non-200, wrong answer, gave up)', sc.coldStarts.length === 0 ? null : failed, '≤', 0),
    goal('load step: non-2xx + socket errors', sc.loadStep?.errors, '≤', 0),
  ];
}

export function machineInfo(root: string): Record<string, string | number> {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  let ortVersion = 'unknown';
  try { ortVersion = (JSON.parse(readFileSync(join(root, 'node_modules', 'onnxruntime-node', 'package.json'), 'utf8')) as { version: string }).version; } catch { /* keep unknown */ }
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' }).trim();
    // "abc1234 (uncommitted changes in bench, docs)": which top-level folders differ from the commit.
    const changed = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: root, encoding: 'utf8' })
      .split('\n').filter((l) => l.length > 3).map((l) => l.slice(3).split('/')[0]);
    if (changed.length > 0) commit += ` (uncommitted changes in ${[...new Set(changed)].join(', ')})`;
  } catch { /* not a git checkout */ }
  return {
    cpuModel: model,
    cores: os.cpus().length,
    memoryGiB: round(os.totalmem() / 2 ** 30, 1),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    onnxruntimeNode: ortVersion,
    commit,
    date: new Date().toISOString(),
  };
}

const cell = (v: number | null | undefined): string => (v === null || v === undefined ? '–' : String(v));
const byLabel = (m: Record<string, number>): string => Object.entries(m).map(([label, v]) => `${label} ${v}`).join(' + ');

function table(head: string[], body: Array<Array<string | number>>): string[] {
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...body.map((r) => `| ${r.join(' | ')} |`)];
}

export function markdown(r: Report): string {
  const limitOf = (m: ModelKey): number | undefined => r.computeLimits.find((l) => l.model === m)?.bestRowsPerS;
  const batchSizes = [...new Set(r.computeLimits.flatMap((l) => l.batches.map((b) => b.batchSize)))];
  const lines = [
    `# ${r.title}`,
    '',
    r.settingsLine,
    '',
    ...table(['machine', ''], Object.entries(r.machine).map(([k, v]) => [k, v])),
    '',
    ...r.models.map((m) => `- **${m.key}**: ${m.description}; body ${m.body.length > 70 ? `${m.body.slice(0, 60)}… (${m.body.length} bytes)` : `\`${m.body}\``}`),
    '',
  ];
  if (r.computeLimits.length > 0) {
    lines.push(
      '## Compute limit (onnxruntime in process, no HTTP, 1 intra-op thread)',
      '',
      ...table(
        ['model', ...batchSizes.map((b) => `rows/s at batch ${b}`), 'best rows/s (batch)'],
        r.computeLimits.map((l) => [l.model, ...batchSizes.map((b) => cell(l.batches.find((x) => x.batchSize === b)?.rowsPerS)), `${l.bestRowsPerS} (${l.bestBatchSize})`]),
      ),
      '',
    );
  }
  if (r.rows.length > 0) {
    lines.push(
      '## Load (wrk -t1, one row per request: req/s = rows/s)',
      '',
      ...table(
        ['model', 'target', 'conns', 'req/s', '÷ compute limit', 'p50 ms', 'p99 ms', 'max ms', 'non-2xx', 'socket errors', 'CPU µs/request', 'CPU cores', 'machine busy %', 'RSS MiB after'],
        r.rows.map((x) => [
          x.model, x.target, x.connections, x.wrk.requestsPerS, cell(ratio(x.wrk.requestsPerS, limitOf(x.model))), x.wrk.latencyP50Ms, x.wrk.latencyP99Ms,
          x.wrk.latencyMaxMs, x.wrk.non2xx, x.wrk.socketErrors, byLabel(x.cpuUsPerRequest), byLabel(x.cpuCores), x.machineBusyPct, byLabel(x.rssMiB),
        ]),
      ),
      '',
    );
  }
  if (r.ratios.length > 0) {
    lines.push(
      '## Ratios (req/s of the Ferry batching variant ÷ the other target; latency differences against single)',
      '',
      ...table(
        ['model', 'conns', 'Ferry', '÷ single', '÷ cluster-2', '÷ batching off', '÷ compute limit', 'p50 − single ms', 'p99 − single ms'],
        r.ratios.map((x) => [x.model, x.connections, x.ferry, cell(x.vsSingle), cell(x.vsCluster2), cell(x.vsBatchingOff), cell(x.vsComputeLimit), cell(x.p50MinusSingleMs), cell(x.p99MinusSingleMs)]),
      ),
      '',
    );
  }
  if (r.scaling !== null) lines.push(...scalingMarkdown(r.scaling));
  lines.push(
    '## Goals (Ferry = ferry-on: batching on, one gateway process; "2 gateway workers" = ferry-w2)',
    '',
    ...table(['goal', 'measured', 'target', 'status'], r.goals.map((g) => [g.goal, cell(g.measured), `${g.op} ${g.target}`, g.status])),
    '',
  );
  const withErrors = r.rows.filter((x) => x.wrk.non2xx + x.wrk.socketErrors > 0);
  if (withErrors.length > 0) {
    lines.push(`Rows with errors: ${withErrors.map((x) => `${x.model} ${x.target} c${x.connections} (non-2xx ${x.wrk.non2xx}, socket ${x.wrk.socketErrors})`).join('; ')}.`, '');
  }
  const targets = [...new Set(r.rows.map((x) => x.target))];
  lines.push(...targets.map((t) => `- **${t}**: ${TARGET_DESCRIPTIONS[t]}`), '');
  for (const [server, e] of Object.entries(r.ferryStderr)) {
    if (e.notable.length === 0) continue;
    lines.push(`${server} ferry server stderr (distinct non-info lines, first ${e.notable.length}; counts by level: ${JSON.stringify(e.levels)}):`, '');
    lines.push(...e.notable.map((l) => `    ${l}`), '');
  }
  return lines.join('\n');
}

/**
 * The replica-count timeline of the load step, only where (ready, starting, desired) changed:
 * `t s ready+starting→desired`, e.g. `0.0 1+0→1 · 0.3 1+3→4 · 1.5 4+0→4`.
 */
export function stepTimeline(samples: Array<{ tMs: number; ready: number; starting: number; desired: number }>): string {
  const out: string[] = [];
  let prev = '';
  for (const x of samples) {
    const state = `${x.ready}+${x.starting}→${x.desired}`;
    if (state === prev) continue;
    prev = state;
    out.push(`${(x.tMs / 1000).toFixed(2)} ${state}`);
  }
  return out.join(' · ');
}

function scalingMarkdown(sc: ScalingReport): string[] {
  const ms = (v: number | null): string => (v === null ? '–' : String(Math.round(v)));
  const s = (v: number | null): string => (v === null ? '–' : String(round(v / 1000, 2)));
  const lines = [
    `## Autoscaling (bench/scaling.ts, ${sc.totalS} s)`,
    '',
    sc.settingsLine,
    '',
    '### Cold start from zero: one request to an endpoint at 0 replicas',
    '',
    ...table(
      ['model', 'server', 'runs ok', 'first request p50 ms', 'max ms', 'server cold start p50 ms', 'max ms', 'replica from pool', 'goal (p50)', 'status', 'each run: client / server ms'],
      sc.coldStarts.map((r) => {
        const g = goal('', r.clientP50Ms, '<', r.goalMs);
        return [
          r.model, r.pool, `${r.okRuns}/${r.runs.length}`, ms(r.clientP50Ms), ms(r.clientMaxMs), ms(r.serverP50Ms), ms(r.serverMaxMs),
          `${r.fromPoolRuns}/${r.runs.length}`, `< ${r.goalMs}`, g.status, r.runs.map((x) => `${ms(x.clientMs)}/${ms(x.serverMs)}`).join(', '),
        ];
      }),
    ),
    '',
  ];
  const failures = sc.coldStarts.flatMap((r) => r.runs.filter((x) => x.error !== undefined).map((x) => `${r.model}, ${r.pool}: ${x.error}`));
  if (failures.length > 0) lines.push(`Failed runs: ${failures.slice(0, 5).join('; ')}${failures.length > 5 ? ` (and ${failures.length - 5} more)` : ''}.`, '');
  const l = sc.loadStep;
  if (l !== null) {
    lines.push(
      `### Load step: ${l.clients} closed-loop clients on ${l.model}, ${l.minReplicas ?? '?'}..${l.maxReplicas ?? '?'} replicas`,
      '',
      ...table(
        ['load s', 'expected replicas', `s to ${l.expectedReplicas} ready`, 'max ready seen (s to it)', 'req/s', 'p50 ms', 'p99 ms', 'max ms', 'errors', 's after load to 1 replica'],
        [[
          round(l.loadEndMs / 1000, 1), l.expectedReplicas, s(l.timeToExpectedMs), `${l.maxReadySeen} (${s(l.timeToMaxMs)})`,
          l.wrk.requestsPerS, l.wrk.latencyP50Ms, l.wrk.latencyP99Ms, l.wrk.latencyMaxMs, l.errors, s(l.backToOneMs),
        ]],
      ),
      '',
      `Replicas over time (s since load start: ready+starting→desired; the load ended at ${round(l.loadEndMs / 1000, 2)} s): ${stepTimeline(l.samples)}`,
      '',
    );
  }
  return lines;
}
