/**
 * The GPU check: serves a PyTorch MLP through Ferry's Python engine on the CPU and on GPU_SMALL and
 * reports what a user of a GPU workload type gets. Run by scripts/gpu-check.sh (which brings Node,
 * Ferry and bubblewrap to a machine that has none of them), or directly:
 *
 *   node dist/scripts/gpu-check.js --out DIR [--cpu-only] [--python python3] [--seconds 10] [--sandbox auto]
 *                                  [--replica-user nobody]
 *
 * `--sandbox none` and `--replica-user` are for a rerun when the first run shows the sandbox, or the
 * replica user, cannot reach the Python or the GPU (the report says which).
 *
 * Steps, each recorded in DIR/gpu-check.json (and summarised in DIR/gpu-check.md):
 * 1. The machine: `nvidia-smi -L` and the driver, the GPUs and driver libraries Ferry's runtime finds
 *    (src/runtime/local/gpu.ts), the Python's torch and whether it sees CUDA.
 * 2. A sandbox probe: `torch.cuda.init()` and one matrix product in the Python, inside the exact
 *    bubblewrap sandbox a GPU replica gets (its device nodes, driver sysfs and libraries); if that
 *    fails, once more with all of /sys bound, to tell a missing sysfs path from anything else.
 * 3. Ferry: a server (temp data directory, no warm pool), the MLP saved in the mlflow.pytorch layout
 *    by scripts/gpu-check-model.py (256 → 1024 → 1024 → 16, float32), registered, and served by two
 *    endpoints, CPU and GPU_SMALL (batching on, one replica each). With `--cpu-only` (automatic when
 *    no GPU is found) the GPU_SMALL endpoint runs with `gpuFallback: "cpu"`: the whole path but CUDA.
 * 4. Per endpoint: time from the create call to READY (the replica's cold start: Python, torch and
 *    CUDA initialisation, the model load, then the validation call), predictions for 64 rows against the
 *    model's answers computed in-process on the CPU (max absolute difference ≤ 1e-4 × max(1, |y|)),
 *    throughput and p50/p99 latency of 1-row requests for `--seconds` at 1 and at 64 connections
 *    (closed loop, keep-alive), resident memory of the replica's process tree, and GPU memory per
 *    process (`nvidia-smi --query-compute-apps`) matched to the replica's processes.
 * Exits 0 when both endpoints were ready and their predictions equal; the report is written either way.
 */
import { execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { compileServerConfig } from '../src/config/index.js';
import { GpuPool, HOST_PROBES } from '../src/runtime/local/gpu.js';
import { descendants, findOnPath, processTree, residentBytes, resolveUser } from '../src/runtime/local/proc.js';
import { chooseSandbox, sandboxed } from '../src/runtime/local/sandbox.js';
import { startServer, type FerryServer } from '../src/server/index.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MODEL_SCRIPT = path.join(ROOT, 'scripts', 'gpu-check-model.py');
const TOKEN = 'ferry_gpu_check_admin_token_0123456789';
const SIZES = { in: 256, hidden: 1024, out: 16 };
const ROWS = 64;
const CONNECTIONS = [1, 64];
/** The CUDA probe run inside the sandbox: init, one product on the GPU, the device's name. */
const CUDA_PROBE = 'import torch; torch.cuda.init(); a = torch.ones(256, 256, device="cuda"); print(torch.cuda.get_device_name(0), float((a @ a).sum()))';

const { values: args } = parseArgs({
  options: {
    out: { type: 'string' }, 'cpu-only': { type: 'boolean', default: false }, python: { type: 'string', default: 'python3' },
    seconds: { type: 'string', default: '10' }, sandbox: { type: 'string', default: 'auto' }, 'replica-user': { type: 'string', default: 'nobody' },
  },
});
if (args.out === undefined) throw new Error('usage: node dist/scripts/gpu-check.js --out DIR [--cpu-only] [--python python3] [--seconds 10] [--sandbox auto|bwrap|none] [--replica-user nobody]');
const OUT = path.resolve(args.out);
const SECONDS = Number(args.seconds);
const SANDBOX = args.sandbox === 'bwrap' || args.sandbox === 'none' ? args.sandbox : 'auto';
const PYTHON = findOnPath(args.python, process.env.PATH);

/** A command's output, or its error, never throwing. */
async function tryRun(file: string, argv: string[], env?: Record<string, string>): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(file, argv, { timeout: 120_000, maxBuffer: 16 << 20, ...(env === undefined ? {} : { env }) });
    return { ok: true, stdout: stdout.trim(), stderr: stderr.trim() };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    return { ok: false, stdout: (e.stdout ?? '').trim(), stderr: (e.stderr ?? e.message).trim().slice(-4000) };
  }
}

/** A seeded PRNG (mulberry32), so every run sends the same rows. */
function rowsOf(n: number, width: number): number[][] {
  let a = 0x5eed;
  const next = (): number => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return Array.from({ length: n }, () => Array.from({ length: width }, () => Math.round((next() * 4 - 2) * 1000) / 1000));
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
function call(base: string, method: string, p: string, json?: unknown): Promise<{ status: number; json: any; ms: number }> {
  const body = json === undefined ? undefined : JSON.stringify(json);
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(p, base), {
      method, agent,
      headers: { authorization: `Bearer ${TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }) },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          parsed = text;
        }
        resolve({ status: res.statusCode ?? 0, json: parsed, ms: performance.now() - started });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Closed-loop load: `connections` clients each sending 1-row requests back to back for `seconds`. */
async function load(base: string, endpoint: string, connections: number, seconds: number, rows: number[][]): Promise<Record<string, number>> {
  const latencies: number[] = [];
  let errors = 0;
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  await Promise.all(Array.from({ length: connections }, async (_, c) => {
    for (let i = c; performance.now() < deadline; i += connections) {
      const r = await call(base, 'POST', `/serving-endpoints/${endpoint}/invocations`, { inputs: [rows[i % rows.length]] }).catch(() => undefined);
      if (r?.status === 200) latencies.push(r.ms);
      else errors++;
    }
  }));
  const elapsedS = (performance.now() - started) / 1000;
  latencies.sort((x, y) => x - y);
  const q = (p: number): number => Math.round((latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN) * 100) / 100;
  return { connections, seconds: Math.round(elapsedS * 10) / 10, requests: latencies.length, errors, requestsPerS: Math.round(latencies.length / elapsedS), p50Ms: q(0.5), p99Ms: q(0.99) };
}

/** The processes of `endpoint`'s replicas (the runtime's pid files name each replica's child: bwrap or node). */
async function replicaTrees(dataDir: string, endpoint: string): Promise<number[]> {
  const dir = path.join(dataDir, 'runtime', 'pids');
  const tree = await processTree();
  const pids: number[] = [];
  for (const f of (await fsp.readdir(dir).catch(() => [] as string[])).filter((n) => n.startsWith(`${endpoint}.`))) {
    const { pid } = JSON.parse(await fsp.readFile(path.join(dir, f), 'utf8')) as { pid: number };
    pids.push(...descendants(pid, tree));
  }
  return pids;
}

/** `nvidia-smi --query-compute-apps`: MiB of GPU memory per pid. */
async function gpuMemoryByPid(): Promise<Map<number, number>> {
  const r = await tryRun('nvidia-smi', ['--query-compute-apps=pid,used_memory', '--format=csv,noheader,nounits']);
  const out = new Map<number, number>();
  for (const line of r.ok ? r.stdout.split('\n') : []) {
    const [pid, mib] = line.split(',').map((s) => Number(s.trim()));
    if (Number.isInteger(pid) && Number.isFinite(mib)) out.set(pid!, mib!);
  }
  return out;
}

async function main(): Promise<number> {
  await fsp.mkdir(OUT, { recursive: true });
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'ferry-gpu-check-'));
  const report: Record<string, any> = {
    started: new Date().toISOString(), host: os.hostname(), node: process.version, python: PYTHON, sandboxSetting: SANDBOX, replicaUser: args['replica-user'],
  };
  const logLines: string[] = [];
  let server: FerryServer | undefined;
  try {
    // 1. The machine.
    const smi = await tryRun('nvidia-smi', ['--query-gpu=index,name,uuid,memory.total,driver_version', '--format=csv,noheader']);
    report.nvidiaSmi = smi.ok ? smi.stdout.split('\n') : `not available (${smi.stderr.split('\n')[0] || 'not installed'})`;
    const pool = await GpuPool.open({ gpus: 'auto', gpuFallback: 'fail', gpuLibraries: 'auto' });
    report.ferryGpus = { devices: pool.devices, source: pool.source, driverLibrariesBound: pool.libraries };
    const ldconfig = await HOST_PROBES.ldconfig();
    report.ldconfigNvidia = (ldconfig ?? '').split('\n').filter((l) => /libcuda|libnvidia/.test(l)).map((l) => l.trim());
    const torch = await tryRun(PYTHON, ['-c', 'import json, torch; print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "available": torch.cuda.is_available(), "devices": torch.cuda.device_count()}))']);
    report.torch = torch.ok ? JSON.parse(torch.stdout) : `import failed: ${torch.stderr.split('\n').at(-1) ?? ''}`;
    const cpuOnly = args['cpu-only'] || pool.devices.length === 0;
    report.cpuOnly = cpuOnly;
    report.cpuOnlyReason = args['cpu-only'] ? '--cpu-only' : pool.devices.length === 0 ? `no GPU: ${pool.source}` : undefined;

    // 2. The sandbox probe (GPU only).
    const user = process.getuid?.() === 0 ? await resolveUser('replicaUser', args['replica-user']) : undefined;
    const sandbox = await chooseSandbox(SANDBOX, user);
    report.sandbox = { kind: sandbox.kind, reason: sandbox.reason };
    if (!cpuOnly && sandbox.kind === 'bwrap') {
      const placement = pool.place('gpu-check-probe', 'GPU_SMALL');
      const prefixes = await tryRun(PYTHON, ['-c', 'import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, *sys.path]))']);
      // As the runtime binds a python replica's interpreter: its prefixes and sys.path outside the system directories.
      const system = /^\/(usr|bin|sbin|lib|lib32|lib64|libx32)(\/|$)/;
      const pythonPaths = (prefixes.ok ? JSON.parse(prefixes.stdout) as string[] : []).filter((p) => p.startsWith('/') && !system.test(p));
      const probe = async (extra: string[]): Promise<unknown> => {
        const { file, args: argv } = sandboxed(sandbox, { readOnly: [...pythonPaths, ...placement.readOnly, ...extra], socketDir: work, modelDir: work, devices: placement.devices }, user, [PYTHON, '-c', CUDA_PROBE]);
        const r = await tryRun(file, argv, { PATH: '/usr/local/bin:/usr/bin:/bin', ...placement.env, ...(process.env.LD_LIBRARY_PATH === undefined ? {} : { LD_LIBRARY_PATH: process.env.LD_LIBRARY_PATH }) });
        return { ok: r.ok, out: r.ok ? r.stdout : r.stderr.split('\n').slice(-3).join(' | ') };
      };
      report.sandboxProbe = { env: placement.env, devices: placement.devices, readOnly: placement.readOnly, asGpuReplica: await probe([]) };
      if (!(report.sandboxProbe.asGpuReplica as { ok: boolean }).ok) report.sandboxProbe.withAllOfSys = await probe(['/sys']);
      pool.release('gpu-check-probe');
    }

    // 3. Ferry, the model, two endpoints.
    const dataDir = path.join(work, 'data');
    server = await startServer(compileServerConfig({
      port: 0, dataDir, python: PYTHON, warmPoolSize: 0, sandbox: SANDBOX, allowUnsandboxedUserCode: SANDBOX === 'none', replicaUser: args['replica-user'],
      gpuFallback: cpuOnly ? 'cpu' : 'fail', replicaMemoryLimit: '16GiB', replicaStartTimeout: '180s', logLevel: 'info',
    }), { adminToken: TOKEN, log: (level, msg, fields) => logLines.push(JSON.stringify({ level, msg, ...fields })) });
    const base = server.url;
    const modelDir = path.join(work, 'mlp');
    const saved = await tryRun(PYTHON, [MODEL_SCRIPT, 'save', modelDir, String(SIZES.in), String(SIZES.hidden), String(SIZES.out)]);
    if (!saved.ok) throw new Error(`saving the model failed: ${saved.stderr}`);
    report.model = { ...SIZES, ...(JSON.parse(saved.stdout) as object) };
    const rows = rowsOf(ROWS, SIZES.in);
    await fsp.writeFile(path.join(work, 'rows.json'), JSON.stringify(rows));
    const ref = await tryRun(PYTHON, [MODEL_SCRIPT, 'reference', modelDir, path.join(work, 'rows.json')]);
    if (!ref.ok) throw new Error(`the reference predictions failed: ${ref.stderr}`);
    const expected = JSON.parse(ref.stdout) as number[][];
    await call(base, 'POST', '/api/2.0/mlflow/registered-models/create', { name: 'mlp' });
    const version = await call(base, 'POST', '/api/2.0/mlflow/model-versions/create', { name: 'mlp', source: modelDir });
    if (version.json?.model_version?.status !== 'READY') throw new Error(`registration failed: ${JSON.stringify(version.json)}`);

    report.endpoints = {};
    let allOk = true;
    for (const [name, workloadType] of [['mlp-cpu', 'CPU'], ['mlp-gpu', 'GPU_SMALL']] as const) {
      const entry: Record<string, unknown> = { workloadType };
      report.endpoints[name] = entry;
      const createdMs = performance.now();
      const created = await call(base, 'POST', '/api/2.0/serving-endpoints', {
        name, config: { served_entities: [{ entity_name: 'mlp', entity_version: '1', workload_type: workloadType, workload_size: 'Small', scale_to_zero_enabled: false }] },
      });
      if (created.status !== 200) throw new Error(`creating ${name}: ${JSON.stringify(created.json)}`);
      let ep: any;
      const until = Date.now() + 240_000;
      do {
        await new Promise((r) => setTimeout(r, 250));
        ep = (await call(base, 'GET', `/api/2.0/serving-endpoints/${name}`)).json;
      } while (ep?.state?.config_update === 'IN_PROGRESS' && Date.now() < until);
      const served = ep?.config?.served_entities?.[0] ?? ep?.pending_config?.served_entities?.[0];
      entry.ready = ep?.state?.ready;
      entry.createToReadyMs = ep?.state?.ready === 'READY' ? Math.round(performance.now() - createdMs) : undefined;
      entry.message = served?.state?.deployment_state_message;
      const logs = await call(base, 'GET', `/api/2.0/serving-endpoints/${name}/served-models/${served?.name ?? 'none'}/logs`);
      const logText = typeof logs.json?.logs === 'string' ? logs.json.logs as string : '';
      await fsp.writeFile(path.join(OUT, `replica-${name}.log`), logText.slice(-200_000));
      entry.worker = logText.split('\n').filter((l) => l.includes('python worker loaded the model')).map((l) => {
        const j = JSON.parse(l) as { loader?: string; device?: string; python?: string };
        return { loader: j.loader, device: j.device, python: j.python };
      })[0];
      if (ep?.state?.ready !== 'READY') {
        allOk = false;
        continue;
      }
      const answer = await call(base, 'POST', `/serving-endpoints/${name}/invocations`, { inputs: rows });
      const got = answer.json?.predictions as number[][] | undefined;
      let maxAbsDiff = 0;
      let equal = Array.isArray(got) && got.length === expected.length;
      got?.forEach((row, i) => row.forEach((v, j) => {
        const want = expected[i]?.[j] ?? NaN;
        const diff = Math.abs(v - want);
        maxAbsDiff = Math.max(maxAbsDiff, diff);
        if (!(diff <= 1e-4 * Math.max(1, Math.abs(want)))) equal = false;
      }));
      entry.predictions = { status: answer.status, rows: got?.length, maxAbsDiff, equalWithinTolerance: equal };
      allOk &&= equal;
      entry.load = [];
      for (const connections of CONNECTIONS) {
        const result = await load(base, name, connections, SECONDS, rows);
        const pids = await replicaTrees(dataDir, name);
        const gpu = await gpuMemoryByPid();
        (entry.load as unknown[]).push({
          ...result,
          replicaRssMiB: Math.round(((await residentBytes(pids)) ?? 0) / (1 << 20)),
          replicaGpuMiB: pids.reduce((sum, pid) => sum + (gpu.get(pid) ?? 0), 0),
          gpuProcessesMiB: Object.fromEntries(gpu),
        });
      }
    }
    report.ok = allOk;
    return allOk ? 0 : 1;
  } catch (err) {
    report.ok = false;
    report.error = err instanceof Error ? err.stack ?? err.message : String(err);
    return 1;
  } finally {
    await server?.close().catch(() => undefined);
    report.finished = new Date().toISOString();
    await fsp.writeFile(path.join(OUT, 'gpu-check.json'), `${JSON.stringify(report, null, 2)}\n`);
    await fsp.writeFile(path.join(OUT, 'server.log'), `${logLines.join('\n')}\n`);
    await fsp.writeFile(path.join(OUT, 'gpu-check.md'), summary(report));
    await fsp.rm(work, { recursive: true, force: true });
    agent.destroy();
  }
}

/** The report as a Markdown table, one row per endpoint and connection count. */
function summary(report: Record<string, any>): string {
  const lines = [
    `# GPU check, ${report.started as string}`, '',
    `- host ${report.host as string}, Node ${report.node as string}, Python ${report.python as string}, torch ${JSON.stringify(report.torch)}`,
    `- GPUs: ${JSON.stringify(report.nvidiaSmi)}; Ferry found ${JSON.stringify(report.ferryGpus?.devices?.map((d: { id: string }) => d.id) ?? [])} (${report.ferryGpus?.source as string})`,
    `- sandbox: ${JSON.stringify(report.sandbox)}${report.sandboxProbe === undefined ? '' : `; CUDA in a GPU replica's sandbox: ${JSON.stringify(report.sandboxProbe.asGpuReplica)}${report.sandboxProbe.withAllOfSys === undefined ? '' : `, with all of /sys: ${JSON.stringify(report.sandboxProbe.withAllOfSys)}`}`}`,
    `- cpu only: ${String(report.cpuOnly)}${report.cpuOnlyReason === undefined ? '' : ` (${report.cpuOnlyReason as string})`}; model ${JSON.stringify(report.model)}`,
    `- ok: ${String(report.ok)}${report.error === undefined ? '' : `; error: ${String(report.error).split('\n')[0] ?? ''}`}`, '',
    '| endpoint | ready | worker device | create → READY ms | predictions (max abs diff) | connections | req/s | p50 ms | p99 ms | errors | replica RSS MiB | replica GPU MiB |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const [name, e] of Object.entries((report.endpoints ?? {}) as Record<string, any>)) {
    const head = `| ${name} (${e.workloadType as string}) | ${String(e.ready)} | ${String(e.worker?.device ?? '-')} | ${String(e.createToReadyMs ?? '-')} | ${e.predictions === undefined ? String(e.message ?? '-') : `${String(e.predictions.equalWithinTolerance)} (${Number(e.predictions.maxAbsDiff).toExponential(1)})`}`;
    const rows = (e.load ?? []) as Array<Record<string, number>>;
    if (rows.length === 0) lines.push(`${head} | - | - | - | - | - | - | - |`);
    for (const l of rows) lines.push(`${head} | ${l.connections} | ${l.requestsPerS} | ${l.p50Ms} | ${l.p99Ms} | ${l.errors} | ${l.replicaRssMiB} | ${l.replicaGpuMiB} |`);
  }
  return `${lines.join('\n')}\n`;
}

process.exitCode = await main();
