/**
 * The Python section of the benchmark: MLflow models saved by the vendored MLflow 2.12
 * (`../shared/vendor/mlflow`, or FERRY_MLFLOW_PATH) and served two ways, one row per request:
 *   mlflow:    `mlflow models serve -m <dir> --env-manager local -w 1` (gunicorn, 1 worker);
 *   ferry-off, ferry-on: Ferry end to end (auth on), batching off / on, the same directory;
 * each loaded by `wrk -t1 -c64` with the same body: a scikit-learn LinearRegression with a column
 * signature (`dataframe_split`) and with a tensor signature (`inputs`), then (full run only) an
 * XGBoost regressor of 100 trees and, when /usr/bin/python3 imports torch, a PyTorch MLP
 * (mlflow.pytorch). Then, with a LocalRuntime in this process (root only: the sandbox runs
 * replicas as nobody): scale from zero of the sklearn model with the Python warm pool and without
 * (p50), and the PSS of 1 and of 4 replicas of it (Node replicas + fork server + workers).
 * Each Ferry row also says where its time went: CPU µs per request of the server, the gateway
 * workers, the replica and the Python processes, and the rows and µs per model call (`profileFerry`).
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { ReplicaSpec } from '../src/runtime/index.js';
import { LocalRuntime } from '../src/runtime/local/index.js';
import { descendants, processTree as allProcesses, proportionalBytes } from '../src/runtime/local/proc.js';
import { cpuSnapshot, makeTempDir, processTree, sleep, stopServer, track, type ServerProcess, type TreeLabels } from './procs.js';
import { ferryApi, FERRY_GATEWAY_WORKERS, FERRY_VARIANTS, registerVersion, replicaPids, startFerryServer, waitEndpointsReady } from './targets.js';
import { round, runWrk, writeWrkScript, type WrkResult } from './wrk.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PYTHON = '/usr/bin/python3';
const MLFLOW_PATH = resolve(ROOT, process.env.FERRY_MLFLOW_PATH ?? '../shared/vendor/mlflow');
const CONNECTIONS = 64;
const MIB = 1024 * 1024;
const MLFLOW_START_TIMEOUT_MS = 90_000;

type ModelKind = 'sk_col' | 'sk_tensor' | 'xgb' | 'torch';
const BODIES: Record<ModelKind, unknown> = {
  sk_col: { dataframe_split: { columns: ['a', 'b'], data: [[1.5, 0.5]] } },
  sk_tensor: { inputs: [[1.5, 0.5]] },
  xgb: { dataframe_split: { columns: ['a', 'b'], data: [[1.5, 0.5]] } },
  torch: { inputs: [[1.5, 0.5]] },
};
const DESCRIPTIONS: Record<ModelKind, string> = {
  sk_col: 'mlflow.sklearn LinearRegression, column signature, dataframe_split',
  sk_tensor: 'mlflow.sklearn LinearRegression, tensor signature float64 [-1, 2], inputs',
  xgb: 'mlflow.xgboost XGBRegressor, 100 trees of depth 6, dataframe_split',
  torch: 'mlflow.pytorch MLP 2-64-64-1, tensor signature float32 [-1, 2], inputs',
};

/** Saves each model kind with MLflow's own save_model into OUT/<kind>. */
const SAVE = `
import sys, numpy as np, pandas as pd, mlflow
from mlflow.models import infer_signature
from sklearn.linear_model import LinearRegression
out, kinds = sys.argv[1], sys.argv[2].split(",")
rng = np.random.default_rng(0)
x = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
y = 2 * x["a"] - x["b"] + 0.1 * rng.normal(size=200)
if "sk_col" in kinds:
    mlflow.sklearn.save_model(LinearRegression().fit(x, y), f"{out}/sk_col", input_example=x.head(2))
if "sk_tensor" in kinds:
    xt = x.to_numpy()
    m = LinearRegression().fit(xt, y)
    mlflow.sklearn.save_model(m, f"{out}/sk_tensor", signature=infer_signature(xt, m.predict(xt)))
if "xgb" in kinds:
    import xgboost as xgb
    mlflow.xgboost.save_model(xgb.XGBRegressor(n_estimators=100, max_depth=6).fit(x, y), f"{out}/xgb", input_example=x.head(2))
if "torch" in kinds:
    import torch
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    xt = x.to_numpy(dtype=np.float32)
    sig = infer_signature(xt, mlp(torch.from_numpy(xt)).detach().numpy())
    mlflow.pytorch.save_model(mlp, f"{out}/torch", signature=sig)
`;

export interface PythonRow {
  model: ModelKind;
  target: 'mlflow' | 'ferry-off' | 'ferry-on';
  wrk: WrkResult;
  /** Ferry rows: CPU µs per request of each kind of process during the measured run (`profileFerry`). */
  cpuUsPerRequest?: Record<string, number>;
  /** Ferry rows: the model calls of the measured run, from the server's metrics. */
  calls?: ModelCalls;
}

/** Model calls of one endpoint over a run: how many, mean rows per call, mean µs per call as the replica times it (the link and Python). */
export interface ModelCalls {
  calls: number;
  rowsPerCall: number;
  usPerCall: number;
}

export interface PythonReport {
  /** Why the section did not run, or what it left out. */
  notes: string[];
  rows: PythonRow[];
  coldStart?: { pooledMs: number[]; spawnedMs: number[] };
  pss?: { oneMiB: number; fourMiB: number };
}

/**
 * The processes of a Ferry server that serve `endpoint`, by kind: `server` (the primary and the
 * registry inspector), `gateway` (the gateway workers), `replica` (the endpoint's replica sandbox:
 * bwrap and the Node replica) and `python` (every Python fork server's sandbox, fork server and
 * forked workers: only the loaded endpoint's worker is busy). Other endpoints' replicas are left out.
 */
function ferryLabels(dataDir: string, endpoint: string): TreeLabels {
  const replicas = replicaPids(dataDir, endpoint);
  return {
    rootLabel: 'server',
    labelOf: (cmd, pid, parent) => {
      if (parent !== 'server') return parent;
      if (cmd.includes('worker-main.js')) return 'gateway';
      if (replicas.has(pid)) return 'replica';
      if (cmd.includes('ferry_forkserver.py')) return 'python';
      return cmd.includes('inspector-main.js') ? 'server' : undefined;
    },
  };
}

/** The `ferry_batch_size` count and sum and the `ferry_model_duration_seconds` sum of `endpoint` in a /metrics text. */
function callTotals(metrics: string, endpoint: string): [number, number, number] {
  const sample = (name: string): number => {
    for (const line of metrics.split('\n')) {
      if (line.startsWith(`${name}{`) && line.includes(`endpoint="${endpoint}"`)) return Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return NaN;
  };
  return [sample('ferry_batch_size_count'), sample('ferry_batch_size_sum'), sample('ferry_model_duration_seconds_sum')];
}

/**
 * Runs `load` against a Ferry endpoint and says where the time went: CPU µs per request of each
 * kind of process (`ferryLabels`, from /proc/<pid>/stat) and the endpoint's model calls (rows per
 * call = the batch size seen), from the server's /metrics read before and after.
 */
async function profileFerry(server: ServerProcess, dataDir: string, token: string, endpoint: string, load: () => Promise<WrkResult>): Promise<Required<Pick<PythonRow, 'wrk' | 'cpuUsPerRequest' | 'calls'>>> {
  const metrics = async (): Promise<[number, number, number]> => {
    const res = await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    return callTotals(await res.text(), endpoint);
  };
  const tree = processTree(server.pid, ferryLabels(dataDir, endpoint));
  const [count0, rows0, seconds0] = await metrics();
  const cpu0 = cpuSnapshot(tree.keys());
  const wrk = await load();
  const cpu1 = cpuSnapshot(tree.keys());
  const [count1, rows1, seconds1] = await metrics();
  const us: Record<string, number> = {};
  for (const [pid, label] of tree) us[label] = (us[label] ?? 0) + (cpu1.get(pid) ?? 0) - (cpu0.get(pid) ?? 0);
  const cpuUsPerRequest = Object.fromEntries(Object.entries(us).map(([label, v]) => [label, round(v / Math.max(1, wrk.requests), 1)]));
  const calls = count1 - count0;
  return { wrk, cpuUsPerRequest, calls: { calls, rowsPerCall: round((rows1 - rows0) / calls, 1), usPerCall: round(((seconds1 - seconds0) * 1e6) / calls, 0) } };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1] ?? NaN;

async function imports(module: string, env: NodeJS.ProcessEnv = process.env): Promise<boolean> {
  return run(PYTHON, ['-c', `import ${module}`], { env }).then(() => true, () => false);
}

/** `mlflow models serve` for one model directory; resolves once /ping answers. */
async function startMlflow(modelDir: string, port: number): Promise<ServerProcess> {
  const child = spawn(PYTHON, ['-m', 'mlflow', 'models', 'serve', '-m', modelDir, '--env-manager', 'local', '-w', '1', '-h', '127.0.0.1', '-p', String(port)], {
    env: { ...process.env, PYTHONPATH: MLFLOW_PATH }, stdio: ['ignore', 'ignore', 'pipe'], detached: true,
  });
  track(child, true);
  let tail = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => { tail = (tail + s).slice(-4096); });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + MLFLOW_START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) break;
    if ((await fetch(`${url}/ping`).catch(() => undefined))?.ok === true) {
      return { child, pid: child.pid ?? 0, url, stderrTail: () => tail, stderrLevels: new Map(), stderrNotable: new Set() };
    }
    await sleep(200);
  }
  throw new Error(`mlflow models serve did not start: ${tail}`);
}

async function post(url: string, body: unknown, token?: string): Promise<unknown> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) }, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`${url} answered ${res.status}: ${await res.text()}`);
  return res.json();
}

/** Both answers, rounded to 6 significant digits (float32 models may differ in the last bits). */
function sameAnswer(a: unknown, b: unknown): boolean {
  const norm = (v: unknown): string => JSON.stringify(v, (_k, x: unknown) => (typeof x === 'number' ? Number(x.toPrecision(6)) : x));
  return norm(a) === norm(b);
}

function spec(id: string, artifactDir: string): ReplicaSpec {
  return {
    id, endpoint: 'bench', servedEntity: 'sk', artifactDir, modelFile: 'MLmodel', flavor: 'python', workloadType: 'CPU', modelName: 'sk', modelVersion: '1',
    memoryLimitBytes: 1024 * MIB, maxBodyBytes: 16 * MIB, maxRowsPerRequest: 100_000, maxJsonDepth: 64, maxJsonElements: 4_194_304,
    batching: { enabled: true, maxBatchSize: 64, maxQueueDelayUs: 0, preferredBatchSizes: [] },
  };
}

async function untilIdle(rt: LocalRuntime): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (rt.warmPool().idlePids.length > 0 && (await rt.pythonWarmPool()).idlePids.length > 0) return;
    await sleep(100);
  }
  throw new Error('the warm pools did not fill within 60 s');
}

/** Scale from zero with and without the pools, and PSS of 1 and 4 replicas (LocalRuntime in this process). */
async function coldAndPss(modelDir: string, runs: number): Promise<Pick<PythonReport, 'coldStart' | 'pss'>> {
  const open = async (pools: boolean): Promise<LocalRuntime> => {
    const stateDir = makeTempDir('ferry-bench-pyrt-');
    fs.chmodSync(stateDir, 0o755);
    return LocalRuntime.open({
      stateDir, startTimeoutMs: 60_000, drainTimeoutMs: 2000, replicaUser: 'nobody', python: PYTHON, sandbox: 'bwrap',
      warmPoolSize: pools ? 1 : 0, warmPoolMemoryLimitBytes: 1024 * MIB, pythonWarmPoolSize: pools ? 1 : 0,
    });
  };
  const pooledMs: number[] = [];
  const spawnedMs: number[] = [];
  const rt = await open(true);
  let pss: PythonReport['pss'];
  try {
    for (let i = 0; i < runs; i++) {
      await untilIdle(rt);
      const h = await rt.startReplica(spec(`c${i}`, modelDir));
      pooledMs.push(round(h.coldStartMs ?? NaN, 1));
      await rt.stopReplica(h.id);
    }
    await untilIdle(rt);
    const measure = async (): Promise<number> => {
      const tree = await allProcesses();
      const roots = [...rt.list().map((h) => h.pid ?? 0), ...(await rt.pythonWarmPool()).claimedPids];
      return proportionalBytes(roots.flatMap((p) => descendants(p, tree)));
    };
    await rt.startReplica(spec('m0', modelDir));
    const one = await measure();
    for (let i = 1; i < 4; i++) await rt.startReplica(spec(`m${i}`, modelDir));
    pss = { oneMiB: round(one / MIB, 1), fourMiB: round((await measure()) / MIB, 1) };
  } finally {
    await rt.close();
  }
  const plain = await open(false);
  try {
    for (let i = 0; i < Math.max(1, Math.ceil(runs / 2)); i++) {
      const h = await plain.startReplica(spec(`s${i}`, modelDir));
      spawnedMs.push(round(h.coldStartMs ?? NaN, 1));
      await plain.stopReplica(h.id);
    }
  } finally {
    await plain.close();
  }
  return { coldStart: { pooledMs, spawnedMs }, ...(pss === undefined ? {} : { pss }) };
}

/** Runs the section; `quick` keeps to the two sklearn models and fewer cold starts. */
export async function runPython(o: { quick: boolean; durationS: number; warmupS: number; serverNodeArgs: string[] }, token: string, tmp: string, log: (line: string) => void): Promise<PythonReport> {
  const notes: string[] = [];
  const mlflowEnv = { ...process.env, PYTHONPATH: MLFLOW_PATH };
  if (!(await imports('mlflow, sklearn', mlflowEnv))) return { notes: [`skipped: ${PYTHON} cannot import mlflow (from ${MLFLOW_PATH}) and scikit-learn`], rows: [] };
  const kinds: ModelKind[] = ['sk_col', 'sk_tensor'];
  if (o.quick) notes.push('quick run: the XGBoost and PyTorch models are left out');
  else {
    if (await imports('xgboost')) kinds.push('xgb');
    else notes.push(`XGBoost: ${PYTHON} cannot import xgboost (Debian: python3-xgboost)`);
    if (await imports('torch')) kinds.push('torch');
    else notes.push(`PyTorch: ${PYTHON} cannot import torch (Debian: python3-torch, not installed in CI: ~230 MB installed with libtorch)`);
  }
  const models = join(tmp, 'python-models');
  log(`bench: python: saving ${kinds.join(', ')} with MLflow...`);
  await run(PYTHON, ['-c', SAVE, models, kinds.join(',')], { env: mlflowEnv, maxBuffer: 16 << 20 });

  // Ferry's interpreter: a venv over the system packages with the vendored MLflow on its path, so
  // that its workers load through mlflow.pyfunc.load_model, as `mlflow models serve` does.
  const venv = join(tmp, 'python-venv');
  await run(PYTHON, ['-m', 'venv', '--system-site-packages', '--without-pip', venv]);
  const { stdout: site } = await run(join(venv, 'bin', 'python'), ['-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])']);
  fs.writeFileSync(join(site.trim(), 'vendored-mlflow.pth'), `${MLFLOW_PATH}\n`);
  fs.chmodSync(tmp, 0o755);
  const ferryDir = join(tmp, 'ferry-python');
  // One gateway worker, as the main section's ferry-off and ferry-on have (the server's default,
  // one per core, is what its ferry-w2 measures): the same Ferry on both sections' rows.
  const ferry = await startFerryServer(ferryDir, token, o.serverNodeArgs, {
    python: join(venv, 'bin', 'python'), warmPoolSize: 0, pythonPreload: ['numpy', 'pandas', 'sklearn', 'mlflow.pyfunc'], gatewayWorkers: FERRY_GATEWAY_WORKERS['ferry-on'],
  });
  const rows: PythonRow[] = [];
  try {
    const endpoints: string[] = [];
    for (const kind of kinds) {
      const name = kind.replace('_', '-');
      await registerVersion(ferry.url, token, name, join(models, kind));
      for (const v of ['ferry-off', 'ferry-on'] as const) {
        await ferryApi(ferry.url, token, 'POST', '/api/2.0/serving-endpoints', {
          name: `${name}-${v}`, config: { served_entities: [{ entity_name: name, entity_version: '1', scale_to_zero_enabled: false, batching: FERRY_VARIANTS[v] }] },
        });
        endpoints.push(`${name}-${v}`);
      }
    }
    await waitEndpointsReady(ferry.url, token, endpoints, 300_000);
    let port = 15_700 + (process.pid % 1000);
    for (const kind of kinds) {
      const name = kind.replace('_', '-');
      const mlflow = await startMlflow(join(models, kind), port++);
      try {
        const want = await post(`${mlflow.url}/invocations`, BODIES[kind]);
        const targets = [
          { target: 'mlflow' as const, url: `${mlflow.url}/invocations`, headers: { 'Content-Type': 'application/json' } },
          ...(['ferry-off', 'ferry-on'] as const).map((v) => ({
            target: v, url: `${ferry.url}/serving-endpoints/${name}-${v}/invocations`, headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
          })),
        ];
        for (const t of targets) {
          const got = await post(t.url, BODIES[kind], t.target === 'mlflow' ? undefined : token);
          if (!sameAnswer(got, want)) throw new Error(`${kind}: ${t.target} answered ${JSON.stringify(got)}, mlflow models serve ${JSON.stringify(want)}`);
          const script = await writeWrkScript(tmp, `python-${kind}-${t.target}`, { body: JSON.stringify(BODIES[kind]), headers: t.headers });
          log(`bench: python ${kind} ${t.target} c=${CONNECTIONS}: ${o.warmupS} s warm-up + ${o.durationS} s...`);
          await runWrk(t.url, script, CONNECTIONS, o.warmupS);
          const load = (): Promise<WrkResult> => runWrk(t.url, script, CONNECTIONS, o.durationS);
          const row: PythonRow = t.target === 'mlflow'
            ? { model: kind, target: t.target, wrk: await load() }
            : { model: kind, target: t.target, ...await profileFerry(ferry, ferryDir, token, `${name}-${t.target}`, load) };
          const { wrk } = row;
          log(`bench:   ${wrk.requestsPerS} req/s, p50 ${wrk.latencyP50Ms} ms, p99 ${wrk.latencyP99Ms} ms, non-2xx ${wrk.non2xx}, socket errors ${wrk.socketErrors}`
            + (row.calls === undefined ? '' : `; ${row.calls.rowsPerCall} rows/call, ${row.calls.usPerCall} µs/call; CPU µs/request ${JSON.stringify(row.cpuUsPerRequest)}`));
          rows.push(row);
        }
      } finally {
        await stopServer(mlflow);
      }
    }
  } finally {
    await stopServer(ferry);
  }
  let cold: Pick<PythonReport, 'coldStart' | 'pss'> = {};
  if (process.getuid?.() === 0) {
    log('bench: python: scale from zero with and without the Python warm pool, PSS of 1 and 4 replicas...');
    cold = await coldAndPss(join(models, 'sk_col'), o.quick ? 2 : 7);
  } else notes.push('cold start and PSS: skipped (needs root: the sandbox runs replicas as nobody)');
  return { notes, rows, ...cold };
}

/** The section's markdown. */
export function pythonMarkdown(r: PythonReport): string[] {
  const lines = ['## Python models (MLflow pyfunc): Ferry vs `mlflow models serve -w 1`, one row per request, 64 connections', ''];
  for (const n of r.notes) lines.push(`- ${n}`);
  if (r.rows.length > 0) {
    lines.push('', '| model | target | req/s | p50 ms | p99 ms | errors | Ferry ÷ mlflow | rows per model call | µs per model call | CPU µs/request |', '|---|---|---|---|---|---|---|---|---|---|');
    for (const row of r.rows) {
      const base = r.rows.find((x) => x.model === row.model && x.target === 'mlflow')?.wrk.requestsPerS ?? NaN;
      const ratio = row.target === 'mlflow' ? '' : `${round(row.wrk.requestsPerS / base, 1)}×`;
      const cpu = Object.entries(row.cpuUsPerRequest ?? {}).map(([label, us]) => `${label} ${us}`).join(' + ');
      lines.push(`| ${DESCRIPTIONS[row.model]} | ${row.target} | ${row.wrk.requestsPerS} | ${row.wrk.latencyP50Ms} | ${row.wrk.latencyP99Ms} | ${row.wrk.non2xx + row.wrk.socketErrors} | ${ratio} | `
        + `${row.calls?.rowsPerCall ?? ''} | ${row.calls?.usPerCall ?? ''} | ${cpu} |`);
    }
    for (const model of new Set(r.rows.map((x) => x.model))) {
      const on = r.rows.find((x) => x.model === model && x.target === 'ferry-on')?.wrk.requestsPerS;
      const off = r.rows.find((x) => x.model === model && x.target === 'ferry-off')?.wrk.requestsPerS;
      if (on !== undefined && off !== undefined) lines.push('', `Batching on ÷ off, ${model}: ${round(on / off, 2)}×`);
    }
  }
  if (r.coldStart !== undefined) {
    lines.push('', `Scale from zero (sklearn, LocalRuntime.startReplica to ready): p50 ${median(r.coldStart.pooledMs)} ms with the Python warm pool [${r.coldStart.pooledMs.join(', ')}], `
      + `${median(r.coldStart.spawnedMs)} ms without [${r.coldStart.spawnedMs.join(', ')}] (goal < 150 ms with).`);
  }
  if (r.pss !== undefined) lines.push('', `PSS (Node replicas + fork server + workers): 1 replica ${r.pss.oneMiB} MiB, 4 replicas ${r.pss.fourMiB} MiB = ${round(r.pss.fourMiB / r.pss.oneMiB, 2)}× (goal < 2×).`);
  return [...lines, ''];
}
