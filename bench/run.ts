/**
 * `npm run bench [-- --quick] [-- --models linear,mlp,heavy --connections 1,8,64 --duration-s 5 --warmup-s 1
 *                    --only single,cluster2,baseline,ferry,ferry-on,...,compute,scaling,llm,embeddings,simulator,python --cpu-prof-dir DIR]`
 *
 * The benchmark suite: per model (bench/models.ts), in one run on one machine,
 *   compute: onnxruntime in process, no HTTP, at batch sizes 1–128: the ceiling (bench/compute-limit.ts);
 *   single, cluster2: the hand-written node:http + onnxruntime server, alone and under node:cluster;
 *   ferry-off, ferry-on (, ferry-on-500us for heavy): Ferry end to end, auth on, batching off / on, one gateway process;
 *   ferry-w2: ferry-on on a server with 2 gateway workers (`gatewayWorkers: 2`); ferry-w2-rl: the same with a rate
 *     limit that never refuses (the cost of exact limits across workers; not in --quick);
 * each HTTP target loaded by the same `wrk -t1` at each connection count; then, on servers of its
 * own, autoscaling (bench/scaling.ts): cold starts from zero with and without the warm pool, and
 * a load step from 1 replica to 4 and back; then the LLM section (bench/llm.ts): tokens/s and time
 * to first token of the tiny GGUF model at 1 and 4 streams, node-llama-cpp direct vs Ferry; then
 * the embeddings section (bench/embeddings.ts): embeddings/s of the tiny Hugging Face model, the
 * transformers flavor in process vs Ferry at 1 and 4 clients; then the autoscaling simulator
 * (bench/simulator.ts): fidelity against a real replay, savings on the bundled traces, speed; then
 * the Python section (bench/python.ts): MLflow models, Ferry vs `mlflow models serve`, cold start
 * with and without the Python warm pool, PSS of 1 and 4 replicas. Writes
 * bench/results/latest.{md,json}: rows with req/s, latency, errors, CPU µs/request and RSS per
 * process; ratios; the goals table. Every child process and temp dir is removed on the way out,
 * including on error and Ctrl+C.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { ComputeBatch } from './compute-limit.js';
import { MODEL_KEYS, prepareModels, type BenchModel, type ModelKey } from './models.js';
import {
  cleanup, cpuSnapshot, installCleanupHandlers, interrupted, machineCpu, makeTempDir, processTree, rssMiB, runNodeScript, stopServer,
} from './procs.js';
import { embeddingsMarkdown, runEmbeddings } from './embeddings.js';
import { llmMarkdown, runLlm } from './llm.js';
import { goals, machineInfo, markdown, ratios, scalingGoals, type ComputeLimit, type Report, type Row } from './report.js';
import { multiMarkdown, runMulti } from './multi.js';
import { protocolsMarkdown, runProtocols } from './protocols.js';
import { pythonMarkdown, runPython } from './python.js';
import { runScaling, type ScalingReport } from './scaling.js';
import { runSimulatorBench, simulatorGoals, simulatorMarkdown, type SimulatorReport } from './simulator.js';
import { checkAnswers, FERRY_GATEWAY_WORKERS, startFerry, startHandWritten, TARGET_NAMES, type FerryVariant, type Target, type TargetName } from './targets.js';
import { requireWrk, round, runWrk, writeWrkScript } from './wrk.js';

/** dist/bench/run.js → the repository root. */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const RESULTS_DIR = join(ROOT, 'bench', 'results');
/** Models that also get the `ferry-on-500us` variant: only where waiting for rows can pay. */
const DELAY_VARIANT_MODELS: readonly ModelKey[] = ['heavy'];
/** Rough seconds to start one model's servers (the heavy model loads in ~1 s per process). */
const START_S_PER_MODEL = 6;
/** Seconds the autoscaling section adds besides its turns (~4 s each: one cold start per case, then the wait for zero) and its load: servers, setup, scale-down. */
const SCALING_OVERHEAD_S = 6;
/** Seconds the LLM section adds besides generating: a Ferry server, one llm replica, llama.cpp loads. */
const LLM_START_S = 5;
/** Seconds the embeddings section adds besides its runs: a Ferry server, one replica, transformers.js loads. */
const EMBEDDINGS_START_S = 6;
/** Seconds the Python section adds besides its wrk runs: saving models, servers, `mlflow models serve` starts, cold starts. */
const PYTHON_OVERHEAD_S = 60;
/** Seconds of the simulator section besides its two replays: a server, two endpoints, the savings searches. */
const SIMULATOR_OVERHEAD_S = 60;

interface Settings {
  quick: boolean;
  models: ModelKey[];
  connections: number[];
  durationS: number;
  warmupS: number;
  targets: TargetName[];
  compute: boolean;
  computeBatchSizes: number[];
  computeSecondsPerBatch: number;
  wrkThreads: 1;
  /** The autoscaling section (bench/scaling.ts). */
  scaling: boolean;
  /** Cold-start runs per model and warm-pool setting. */
  scalingColdRuns: number;
  /** Seconds of load in the load step. */
  scalingLoadS: number;
  /** The LLM section (bench/llm.ts), and the tokens each of its streams generates. */
  llm: boolean;
  llmTokens: number;
  /** The embeddings section (bench/embeddings.ts) and the seconds of each of its runs. */
  embeddings: boolean;
  embeddingsS: number;
  /** The many-tiny-models section (bench/multi.ts). */
  multi: boolean;
  /** The autoscaling simulator section (bench/simulator.ts). */
  simulator: boolean;
  /** The protocols section (bench/protocols.ts): heavy JSON vs binary, linear gRPC vs REST. */
  protocols: boolean;
  /** The Python section (bench/python.ts): MLflow pyfunc models, Ferry vs `mlflow models serve`, cold start, PSS. */
  python: boolean;
  /** Extra node flags for every server (`--cpu-prof-dir D` → `--cpu-prof --cpu-prof-dir=D`). */
  serverNodeArgs: string[];
}

/** `--only` takes target names and these groups. */
const GROUPS: Record<string, readonly TargetName[]> = {
  baseline: ['single', 'cluster2'],
  ferry: ['ferry-off', 'ferry-on', 'ferry-on-500us', 'ferry-w2', 'ferry-w2-rl'],
};

function parseSettings(argv: string[]): Settings {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      models: { type: 'string' },
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
  const list = <T extends string>(v: string, allowed: readonly T[], what: string): T[] => v.split(',').map((x) => {
    if (!allowed.includes(x as T)) throw new Error(`--${what}: '${x}' is not one of ${allowed.join(', ')}`);
    return x as T;
  });
  const only = values.only === undefined ? undefined
    : list(values.only, [...TARGET_NAMES, ...Object.keys(GROUPS), 'compute', 'scaling', 'llm', 'embeddings', 'multi', 'simulator', 'protocols', 'python'], 'only').flatMap((x): string[] => [...(GROUPS[x] ?? [x])]);
  const defaultTargets: TargetName[] = quick ? ['single', 'cluster2', 'ferry-off', 'ferry-on', 'ferry-w2'] : [...TARGET_NAMES];
  return {
    quick,
    models: list(values.models ?? (quick ? 'linear,heavy' : MODEL_KEYS.join(',')), MODEL_KEYS, 'models'),
    connections: (values.connections ?? (quick ? '1,64' : '1,8,64')).split(',').map((c) => num(c, 1, 'connections')),
    durationS: num(values['duration-s'], quick ? 1 : 5, 'duration-s'),
    warmupS: num(values['warmup-s'], 1, 'warmup-s'),
    targets: defaultTargets.filter((t) => only === undefined || only.includes(t)),
    compute: only === undefined || only.includes('compute'),
    computeBatchSizes: [1, 8, 32, 64, 128],
    computeSecondsPerBatch: quick ? 0.3 : 1.5,
    wrkThreads: 1,
    scaling: only === undefined || only.includes('scaling'),
    scalingColdRuns: quick ? 3 : 7,
    scalingLoadS: quick ? 8 : 15,
    llm: only === undefined || only.includes('llm'),
    // Quick: a few seconds in all (mostly the server start).
    llmTokens: quick ? 64 : 512,
    embeddings: only === undefined || only.includes('embeddings'),
    embeddingsS: quick ? 1 : 5,
    multi: only === undefined || only.includes('multi'),
    simulator: only === undefined || only.includes('simulator'),
    protocols: only === undefined || only.includes('protocols'),
    python: only === undefined || only.includes('python'),
    serverNodeArgs: values['cpu-prof-dir'] === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${values['cpu-prof-dir']}`],
  };
}

function targetsFor(s: Settings, model: ModelKey): TargetName[] {
  return s.targets.filter((t) => t !== 'ferry-on-500us' || DELAY_VARIANT_MODELS.includes(model));
}

/** Seconds the run should take, printed up front. */
function estimateS(s: Settings): number {
  const cells = s.models.reduce((n, m) => n + targetsFor(s, m).length * s.connections.length, 0);
  const compute = s.compute ? s.models.length * s.computeBatchSizes.length * (s.computeSecondsPerBatch + 0.2) : 0;
  const scaling = s.scaling ? s.scalingColdRuns * 4 + s.scalingLoadS + SCALING_OVERHEAD_S : 0;
  const llm = s.llm ? LLM_START_S + s.llmTokens / 200 : 0;
  const embeddings = s.embeddings ? EMBEDDINGS_START_S + 4 * s.embeddingsS : 0;
  const simulator = s.simulator ? SIMULATOR_OVERHEAD_S + (s.quick ? 60 : 180) : 0;
  const python = s.python ? PYTHON_OVERHEAD_S + (s.quick ? 2 : 4) * 3 * (s.warmupS + s.durationS) : 0;
  const starts = s.models.filter((m) => targetsFor(s, m).length > 0).length * START_S_PER_MODEL;
  return Math.round(cells * (s.warmupS + s.durationS) + compute + starts + scaling + llm + embeddings + simulator + python);
}

async function computeLimit(model: BenchModel, s: Settings): Promise<ComputeLimit> {
  const out = await runNodeScript([
    fileURLToPath(new URL('./compute-limit.js', import.meta.url)), '--model', model.path,
    '--batches', s.computeBatchSizes.join(','), '--seconds', String(s.computeSecondsPerBatch),
  ]);
  const { batches } = JSON.parse(out) as { batches: ComputeBatch[] };
  const best = batches.reduce((a, b) => (b.rowsPerS > a.rowsPerS ? b : a));
  return { model: model.key, batches, bestRowsPerS: best.rowsPerS, bestBatchSize: best.batchSize };
}

/** Starts `names` for `model` (Ferry: one server, one endpoint per variant). */
async function startTargets(model: BenchModel, names: TargetName[], s: Settings, token: string, tmp: string): Promise<Target[]> {
  const out: Target[] = [];
  if (names.includes('single')) out.push(await startHandWritten(model, 1, token, s.serverNodeArgs));
  if (names.includes('cluster2')) out.push(await startHandWritten(model, 2, token, s.serverNodeArgs));
  // One server per gateway-worker count (`ferry-w2` runs on its own).
  const variants = names.filter((n): n is FerryVariant => n.startsWith('ferry-'));
  for (const workers of new Set(variants.map((v) => FERRY_GATEWAY_WORKERS[v]))) {
    const on = variants.filter((v) => FERRY_GATEWAY_WORKERS[v] === workers);
    out.push(...await startFerry(model, on, token, join(tmp, `ferry-${model.key}-w${workers}`), s.serverNodeArgs, workers));
  }
  return out;
}

async function measure(model: BenchModel, target: Target, scriptPath: string, connections: number, s: Settings): Promise<Row> {
  await runWrk(target.url, scriptPath, connections, s.warmupS);
  const tree = processTree(target.proc.pid, target.labels);
  if (target.name.startsWith('ferry-') && ![...tree.values()].includes('replica')) {
    throw new Error(`${target.name}: found no replica process of its endpoint under the ferry server (pid ${target.proc.pid})`);
  }
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
  return { model: model.key, target: target.name, connections, wrk, cpuUsPerRequest, cpuCores, machineBusyPct, rssMiB: rss };
}

async function main(): Promise<void> {
  const s = parseSettings(process.argv.slice(2));
  requireWrk();
  installCleanupHandlers();
  const t0 = Date.now();
  const estimate = estimateS(s);
  process.stderr.write(`bench: models ${s.models.join(', ')}; connections ${s.connections.join(', ')}; targets ${s.targets.join(', ')}${s.compute ? ', compute limit' : ''}; `
    + `${s.warmupS} s warm-up + ${s.durationS} s per cell${s.scaling ? `; autoscaling: ${s.scalingColdRuns} cold starts per case, ${s.scalingLoadS} s load step` : ''}; estimated total ~${estimate} s (${round(estimate / 60, 1)} min)\n`);
  const tmp = makeTempDir('ferry-bench-');
  // `--only scaling` needs none of them (it writes its own), so skip writing the 84 MB heavy model.
  const models = s.compute || s.targets.length > 0 ? await prepareModels(join(tmp, 'models'), s.models) : [];
  // The protocols section needs heavy and linear whatever --models says.
  const protocolModels = s.protocols ? await prepareModels(join(tmp, 'protocol-models'), ['heavy', 'linear']) : [];
  const token = `bench_${randomBytes(24).toString('hex')}`;

  const computeLimits: ComputeLimit[] = [];
  const rows: Row[] = [];
  const ferryStderr: Report['ferryStderr'] = {};
  for (const model of models) {
    if (s.compute) {
      process.stderr.write(`bench: ${model.key}: compute limit, batches ${s.computeBatchSizes.join(', ')}, ${s.computeSecondsPerBatch} s each...\n`);
      const limit = await computeLimit(model, s);
      process.stderr.write(`bench:   best ${limit.bestRowsPerS} rows/s at batch ${limit.bestBatchSize}\n`);
      computeLimits.push(limit);
    }
    const names = targetsFor(s, model.key);
    if (names.length === 0) continue;
    process.stderr.write(`bench: ${model.key}: starting ${names.join(', ')}...\n`);
    const targets = await startTargets(model, names, s, token, tmp);
    for (const t of targets) await checkAnswers(t, model, token);
    const script = await writeWrkScript(tmp, model.key, { body: model.body, headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` } });
    for (const c of s.connections) {
      for (const t of targets) {
        process.stderr.write(`bench: ${model.key} ${t.name} c=${c}: ${s.warmupS} s warm-up + ${s.durationS} s...\n`);
        const row = await measure(model, t, script, c, s);
        process.stderr.write(`bench:   ${row.wrk.requestsPerS} req/s, p50 ${row.wrk.latencyP50Ms} ms, p99 ${row.wrk.latencyP99Ms} ms, non-2xx ${row.wrk.non2xx}, socket errors ${row.wrk.socketErrors}\n`);
        rows.push(row);
      }
    }
    const ferry = targets.find((t) => t.name.startsWith('ferry-'));
    if (ferry) ferryStderr[model.key] = { levels: Object.fromEntries(ferry.proc.stderrLevels), notable: [...ferry.proc.stderrNotable] };
    for (const proc of new Set(targets.map((t) => t.proc))) await stopServer(proc);
  }
  let scaling: ScalingReport | null = null;
  if (s.scaling) {
    scaling = await runScaling({ coldRuns: s.scalingColdRuns, loadS: s.scalingLoadS, serverNodeArgs: s.serverNodeArgs }, token, tmp, (line) => process.stderr.write(`${line}\n`));
    Object.assign(ferryStderr, scaling.stderr);
  }
  const llmRows = s.llm ? await runLlm(tmp, s.llmTokens, token, (line) => process.stderr.write(`${line}\n`)) : [];

  // Many tiny models: 1,000,000 under a full run (500 misses on the Kubernetes double), a 200-model smoke under --quick.
  const multi = s.multi
    ? await runMulti({ models: s.quick ? 200 : 1_000_000, durationS: s.quick ? 0.5 : 60, budgetBytes: 64 * 1024 * 1024, concurrency: 16, kubeModels: s.quick ? 20 : 500 }, (line) => process.stderr.write(`bench: ${line}\n`))
    : undefined;

  const simulator: SimulatorReport | null = s.simulator ? await runSimulatorBench({ quick: s.quick, serverNodeArgs: s.serverNodeArgs }, token, tmp, (line) => process.stderr.write(`${line}\n`)) : null;

  const rs = ratios(rows, computeLimits);
  const report: Report = {
    quick: s.quick,
    title: `Ferry benchmark suite${s.quick ? ' (quick smoke run: timings are not meaningful)' : ''}`,
    settingsLine: `wrk -t${s.wrkThreads} -c<N> -d${s.durationS}s --latency after a ${s.warmupS} s warm-up at the same N; bearer auth on every target; all on 127.0.0.1. `
      + `Compute limit: ${s.computeSecondsPerBatch} s per batch size.${s.scaling ? ` Autoscaling: ${s.scalingColdRuns} cold starts per case, ${s.scalingLoadS} s load step.` : ''} Total run ${Math.round((Date.now() - t0) / 1000)} s.`,
    machine: machineInfo(ROOT),
    models,
    computeLimits,
    rows,
    ratios: rs,
    scaling,
    goals: [...goals(rows, rs), ...scalingGoals(scaling), ...simulatorGoals(simulator)],
    ferryStderr,
  };
  const embeddingsRows = s.embeddings ? await runEmbeddings(tmp, s.embeddingsS, token, (line) => process.stderr.write(`${line}\n`)) : [];
  const [heavyModel, linearModel] = protocolModels;
  const protocolRows = heavyModel !== undefined && linearModel !== undefined
    ? await runProtocols(heavyModel, linearModel, {
      connections: 64, durationS: s.durationS, warmupS: s.warmupS, computeSecondsPerBatch: s.computeSecondsPerBatch, serverNodeArgs: s.serverNodeArgs,
    }, token, tmp, (line) => process.stderr.write(`${line}\n`))
    : [];
  const python = s.python ? await runPython({ quick: s.quick, durationS: s.durationS, warmupS: s.warmupS, serverNodeArgs: s.serverNodeArgs }, token, tmp, (line) => process.stderr.write(`${line}\n`)) : undefined;
  const md = [
    markdown(report), ...llmMarkdown(llmRows), ...embeddingsMarkdown(embeddingsRows), ...protocolsMarkdown(protocolRows), ...(multi === undefined ? [] : [multiMarkdown(multi)]),
    ...(simulator === null ? [] : simulatorMarkdown(simulator)), ...(python === undefined ? [] : pythonMarkdown(python)),
  ].join('\n');
  mkdirSync(RESULTS_DIR, { recursive: true });
  const json = { settings: s, ...report, models: models.map(({ checks: _c, ...m }) => m), llm: llmRows, embeddings: embeddingsRows, protocols: protocolRows, multi, simulator, python };
  writeFileSync(join(RESULTS_DIR, 'latest.json'), JSON.stringify(json, null, 2) + '\n');
  writeFileSync(join(RESULTS_DIR, 'latest.md'), md);
  process.stdout.write(md);
  process.stderr.write(`bench: wrote ${join(RESULTS_DIR, 'latest.md')} and latest.json after ${Math.round((Date.now() - t0) / 1000)} s (estimated ${estimate} s)\n`);
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
