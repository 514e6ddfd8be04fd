/**
 * `npm run bench [-- --quick] [-- --connections 1,8,64 --duration-s 10 --warmup-s 2 --only ferry|baseline
 *                                  --cpu-prof-dir DIR]`
 *
 * Serves the linear fixture (float32 x[-1,4] → y[-1,1]) two ways and loads both with the same wrk
 * settings in the same run:
 *   ferry:    `ferry server` (child process, auth on) → endpoint "linear" → its replica process;
 *   baseline: bench/baseline-server.ts, the single node:http + onnxruntime-node process a user
 *             would write instead (also checking a bearer token).
 * Writes bench/results/latest.{md,json}: per target and connection count req/s, p50/p99, errors
 * and CPU µs per request of each process; then the ferry/baseline ratios.
 * Every child process and temp dir is removed on the way out, including on error and Ctrl+C.
 */
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual, parseArgs } from 'node:util';
import { writeFixtures } from '../src/fixtures/index.js';
import {
  cleanup, cpuSnapshot, installCleanupHandlers, interrupted, machineCpu, makeTempDir, processTree, rssMiB, sleep,
  startServerProcess, type ServerProcess,
} from './procs.js';
import { requireWrk, round, runWrk, writeWrkScript, type WrkResult } from './wrk.js';

/** dist/bench/run.js → the repository root. */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const RESULTS_DIR = join(ROOT, 'bench', 'results');
const BODY = '{"inputs": [[1,2,3,4]]}';
/** linear.onnx on [1,2,3,4]: 0.5 − 2 + 6 + 1 + 0.125 (see src/fixtures/linear.ts). */
const EXPECTED = { predictions: [[5.625]] };
const START_TIMEOUT_MS = 60_000;
const ENDPOINT_READY_TIMEOUT_MS = 90_000;

type TargetName = 'ferry' | 'baseline';

interface Settings {
  quick: boolean;
  connections: number[];
  durationS: number;
  warmupS: number;
  targets: TargetName[];
  wrkThreads: 1;
  body: string;
  /** Extra node flags for both servers (`--cpu-prof-dir D` → `--cpu-prof --cpu-prof-dir=D`). */
  serverNodeArgs: string[];
}

interface Target {
  name: TargetName;
  description: string;
  url: string;
  proc: ServerProcess;
}

interface Row {
  target: TargetName;
  connections: number;
  wrk: WrkResult;
  /** CPU µs per request by process label ("server", "replica"), user + system, all threads. */
  cpuUsPerRequest: Record<string, number>;
  /** CPU cores busy on average during the run, by process label. */
  cpuCores: Record<string, number>;
  /** Whole machine (wrk included) busy during the run, 0–100. */
  machineBusyPct: number;
  /** Resident memory at the end of the run, MiB, by process label (summed over replicas). */
  rssMiB: Record<string, number>;
}

interface Ratio {
  connections: number;
  requestsPerSRatio: number;
  latencyP50DiffMs: number;
  latencyP99DiffMs: number;
}

function parseSettings(argv: string[]): Settings {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      connections: { type: 'string' },
      'duration-s': { type: 'string' },
      'warmup-s': { type: 'string' },
      only: { type: 'string' },
      'cpu-prof-dir': { type: 'string' },
    },
  });
  const quick = values.quick;
  const num = (v: string | undefined, dflt: number, what: string): number => {
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${what} must be a positive integer, got '${v}'`);
    return n;
  };
  const connections = (values.connections ?? (quick ? '1,64' : '1,8,64')).split(',').map((c) => num(c, 1, 'connections'));
  const only = values.only;
  if (only !== undefined && only !== 'ferry' && only !== 'baseline') throw new Error(`--only must be 'ferry' or 'baseline', got '${only}'`);
  return {
    quick,
    connections,
    durationS: num(values['duration-s'], quick ? 3 : 10, 'duration-s'),
    warmupS: num(values['warmup-s'], quick ? 1 : 2, 'warmup-s'),
    targets: only === undefined ? ['baseline', 'ferry'] : [only],
    wrkThreads: 1,
    body: BODY,
    serverNodeArgs: values['cpu-prof-dir'] === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${values['cpu-prof-dir']}`],
  };
}

async function api(url: string, token: string, method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(url + path, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path} → ${res.status}: ${text}`);
  return text === '' ? {} : JSON.parse(text);
}

async function startBaseline(modelPath: string, token: string, nodeArgs: string[]): Promise<Target> {
  const proc = await startServerProcess(
    [...nodeArgs, fileURLToPath(new URL('./baseline-server.js', import.meta.url)), '--model', modelPath],
    { ...process.env, BENCH_TOKEN: token },
    /Baseline listening on (http:\/\/\S+)/,
    START_TIMEOUT_MS,
  );
  return { name: 'baseline', description: 'node:http + onnxruntime-node, one process', url: `${proc.url}/invocations`, proc };
}

async function startFerry(modelPath: string, token: string, dataDir: string, nodeArgs: string[]): Promise<Target> {
  const proc = await startServerProcess(
    [...nodeArgs, join(ROOT, 'bin', 'ferry.js'), 'server', '--host', '127.0.0.1', '--port', '0', '--data-dir', dataDir],
    { ...process.env, FERRY_ADMIN_TOKEN: token },
    /Ferry server listening on (http:\/\/\S+?)(?:\s|$)/,
    START_TIMEOUT_MS,
  );
  const base = proc.url;
  try {
    await api(base, token, 'POST', '/api/2.0/mlflow/registered-models/create', { name: 'linear' });
    const mv = await api(base, token, 'POST', '/api/2.0/mlflow/model-versions/create', { name: 'linear', source: modelPath });
    if (mv?.model_version?.status !== 'READY') throw new Error(`model version not READY: ${JSON.stringify(mv)}`);
    await api(base, token, 'POST', '/api/2.0/serving-endpoints', {
      name: 'linear',
      config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] },
    });
    const deadline = Date.now() + ENDPOINT_READY_TIMEOUT_MS;
    for (;;) {
      const ep = await api(base, token, 'GET', '/api/2.0/serving-endpoints/linear');
      if (ep?.state?.ready === 'READY') break;
      if (ep?.state?.config_update === 'UPDATE_FAILED') throw new Error(`endpoint update failed: ${JSON.stringify(ep)}`);
      if (Date.now() > deadline) throw new Error(`endpoint not READY after ${ENDPOINT_READY_TIMEOUT_MS} ms: ${JSON.stringify(ep)}`);
      await sleep(200);
    }
  } catch (err) {
    throw new Error(`Ferry setup failed: ${err instanceof Error ? err.message : String(err)}\n--- ferry server stderr (tail) ---\n${proc.stderrTail()}`);
  }
  return { name: 'ferry', description: 'ferry server (gateway, auth on) → replica process', url: `${base}/serving-endpoints/linear/invocations`, proc };
}

/** One request before loading: the answer must be exactly the fixture's. */
async function checkAnswer(target: Target, token: string): Promise<void> {
  const res = await fetch(target.url, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: BODY });
  const text = await res.text();
  let body: unknown;
  try { body = JSON.parse(text); } catch { body = text; }
  if (res.status !== 200 || !isDeepStrictEqual(body, EXPECTED)) {
    throw new Error(`${target.name}: expected 200 ${JSON.stringify(EXPECTED)}, got ${res.status} ${text}`);
  }
}

async function measure(target: Target, scriptPath: string, connections: number, s: Settings): Promise<Row> {
  await runWrk(target.url, scriptPath, connections, s.warmupS);
  const tree = processTree(target.proc.pid);
  const cpu0 = cpuSnapshot(tree.keys());
  const m0 = machineCpu();
  const wrk = await runWrk(target.url, scriptPath, connections, s.durationS);
  const cpu1 = cpuSnapshot(tree.keys());
  const m1 = machineCpu();
  const usByLabel: Record<string, number> = {};
  for (const [pid, label] of tree) {
    const before = cpu0.get(pid);
    const after = cpu1.get(pid);
    if (before === undefined || after === undefined) continue;
    usByLabel[label] = (usByLabel[label] ?? 0) + (after - before);
  }
  const cpuUsPerRequest: Record<string, number> = {};
  const cpuCores: Record<string, number> = {};
  for (const [label, us] of Object.entries(usByLabel)) {
    cpuUsPerRequest[label] = round(us / Math.max(1, wrk.requests), 1);
    cpuCores[label] = round(us / (wrk.durationS * 1e6), 2);
  }
  const machineBusyPct = round((100 * (m1.busy - m0.busy)) / Math.max(1, m1.total - m0.total), 1);
  const rss: Record<string, number> = {};
  for (const [pid, label] of tree) rss[label] = (rss[label] ?? 0) + (rssMiB(pid) ?? 0);
  return { target: target.name, connections, wrk, cpuUsPerRequest, cpuCores, machineBusyPct, rssMiB: rss };
}

function ratios(rows: Row[], connections: number[]): Ratio[] {
  const out: Ratio[] = [];
  for (const c of connections) {
    const f = rows.find((r) => r.target === 'ferry' && r.connections === c)?.wrk;
    const b = rows.find((r) => r.target === 'baseline' && r.connections === c)?.wrk;
    if (!f || !b) continue;
    out.push({
      connections: c,
      requestsPerSRatio: round(f.requestsPerS / Math.max(1, b.requestsPerS), 2),
      latencyP50DiffMs: round(f.latencyP50Ms - b.latencyP50Ms, 3),
      latencyP99DiffMs: round(f.latencyP99Ms - b.latencyP99Ms, 3),
    });
  }
  return out;
}

function machineInfo(): Record<string, string | number> {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  let ortVersion = 'unknown';
  try { ortVersion = (JSON.parse(readFileSync(join(ROOT, 'node_modules', 'onnxruntime-node', 'package.json'), 'utf8')) as { version: string }).version; } catch { /* keep unknown */ }
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    if (execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT, encoding: 'utf8' }).trim() !== '') commit += ' (with uncommitted changes)';
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

function cpuCell(r: Row): string {
  return Object.entries(r.cpuUsPerRequest).map(([label, us]) => `${label} ${us}`).join(' + ');
}

function coresCell(r: Row): string {
  return Object.entries(r.cpuCores).map(([label, c]) => `${label} ${c}`).join(' + ');
}

function rssCell(r: Row): string {
  return Object.entries(r.rssMiB).map(([label, mib]) => `${label} ${mib}`).join(' + ');
}

function markdown(s: Settings, machine: Record<string, string | number>, rows: Row[], rs: Ratio[], targets: Target[]): string {
  const lines = [
    `# Ferry benchmark${s.quick ? ' (quick smoke run: timings are not meaningful)' : ''}`,
    '',
    `Linear fixture (float32 x[-1,4] → y[-1,1]), body \`${s.body}\`, bearer auth on both sides.`,
    `wrk -t${s.wrkThreads} -c<N> -d${s.durationS}s --latency after a ${s.warmupS} s warm-up at the same N; all on 127.0.0.1.`,
    '',
    '| machine | |',
    '|---|---|',
    ...Object.entries(machine).map(([k, v]) => `| ${k} | ${v} |`),
    '',
    '| target | conns | req/s | p50 ms | p99 ms | max ms | non-2xx | socket errors | CPU µs/request | CPU cores | machine busy % | RSS MiB after |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.target} | ${r.connections} | ${r.wrk.requestsPerS} | ${r.wrk.latencyP50Ms} | ${r.wrk.latencyP99Ms} | ${r.wrk.latencyMaxMs} | ${r.wrk.non2xx} | ${r.wrk.socketErrors} | ${cpuCell(r)} | ${coresCell(r)} | ${r.machineBusyPct} | ${rssCell(r)} |`),
    '',
  ];
  if (rs.length > 0) {
    lines.push(
      '| conns | req/s ferry ÷ baseline | p50 ferry − baseline ms | p99 ferry − baseline ms |',
      '|---|---|---|---|',
      ...rs.map((r) => `| ${r.connections} | ${r.requestsPerSRatio} | ${r.latencyP50DiffMs} | ${r.latencyP99DiffMs} |`),
      '',
    );
  }
  lines.push(...targets.map((t) => `- **${t.name}**: ${t.description}`), '');
  for (const t of targets) {
    if (t.proc.stderrNotable.size === 0) continue;
    lines.push(`${t.name} server stderr (distinct non-info lines, first ${t.proc.stderrNotable.size}; counts by level: ${JSON.stringify(Object.fromEntries(t.proc.stderrLevels))}):`, '');
    lines.push(...[...t.proc.stderrNotable].map((l) => `    ${l}`), '');
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const settings = parseSettings(process.argv.slice(2));
  requireWrk();
  installCleanupHandlers();
  const tmp = makeTempDir('ferry-bench-');
  const fixtures = await writeFixtures(join(tmp, 'fixtures'));
  const token = `bench_${randomBytes(24).toString('hex')}`;

  const targets: Target[] = [];
  for (const name of settings.targets) {
    process.stderr.write(`bench: starting ${name}...\n`);
    const t = name === 'ferry' ? await startFerry(fixtures.linear, token, join(tmp, 'ferry-data'), settings.serverNodeArgs)
      : await startBaseline(fixtures.linear, token, settings.serverNodeArgs);
    await checkAnswer(t, token);
    targets.push(t);
  }

  const rows: Row[] = [];
  for (const c of settings.connections) {
    for (const t of targets) {
      const script = await writeWrkScript(tmp, t.name, { url: t.url, body: BODY, headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` } });
      process.stderr.write(`bench: ${t.name} c=${c}: ${settings.warmupS} s warm-up + ${settings.durationS} s...\n`);
      const row = await measure(t, script, c, settings);
      process.stderr.write(`bench:   ${row.wrk.requestsPerS} req/s, p50 ${row.wrk.latencyP50Ms} ms, p99 ${row.wrk.latencyP99Ms} ms, non-2xx ${row.wrk.non2xx}, socket errors ${row.wrk.socketErrors}\n`);
      rows.push(row);
    }
  }

  const machine = machineInfo();
  const rs = ratios(rows, settings.connections);
  const ferry = targets.find((t) => t.name === 'ferry');
  const result = {
    settings,
    machine,
    targets: Object.fromEntries(targets.map((t) => [t.name, t.description])),
    rows,
    ratios: rs,
    ...(ferry ? {
      ferryServerStderrLinesByLevel: Object.fromEntries(ferry.proc.stderrLevels),
      ferryServerStderrNotable: [...ferry.proc.stderrNotable],
    } : {}),
  };
  const md = markdown(settings, machine, rows, rs, targets);
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(join(RESULTS_DIR, 'latest.json'), JSON.stringify(result, null, 2) + '\n');
  writeFileSync(join(RESULTS_DIR, 'latest.md'), md);
  process.stdout.write(md);
  process.stderr.write(`bench: wrote ${join(RESULTS_DIR, 'latest.md')} and latest.json\n`);
}

main().then(
  () => cleanup(),
  async (err: unknown) => {
    if (interrupted()) return; // the signal handler cleans up and exits
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
    await cleanup();
    process.exitCode = 1;
  },
);
