/**
 * The protocols section (`--only protocols`): what the wire format costs, on one `ferry server`
 * with `grpcPort`, auth on, batching on (the defaults).
 *   heavy (512 → 4096 → 4096 → 512), 64 connections: OIP v2 REST with the 512 floats as JSON vs
 *     as binary tensor data (`Inference-Header-Content-Length`, binary output asked), wrk for
 *     both; req/s ÷ the compute limit, and CPU µs per request in the gateway (server process)
 *     and the replica;
 *   linear, 64 concurrent calls: OIP v2 gRPC ModelInfer (bench/grpc-load.ts, raw contents) vs
 *     OIP v2 REST JSON (wrk) on the same endpoint, vs a hand-written grpc-js + onnxruntime server
 *     in one process (bench/grpc-baseline-server.ts).
 */
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ComputeBatch } from './compute-limit.js';
import type { BenchModel } from './models.js';
import { cpuSnapshot, processTree, runNodeScript, startServerProcess, stopServer, type ServerProcess } from './procs.js';
import { ferryApi, registerVersion, replicaPids, startFerryServer, waitEndpointsReady } from './targets.js';
import { round, runWrk, writeWrkScript } from './wrk.js';

export interface ProtocolRow {
  model: string;
  target: string;
  concurrency: number;
  requestsPerS: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  /** CPU µs per request by process (server = gateway, replica); absent for the baseline. */
  cpuUsPerRequest: Record<string, number>;
  /** Rows/s ÷ the compute limit's best rows/s (heavy only). */
  vsComputeLimit: number | undefined;
}

export interface ProtocolsSettings {
  connections: number;
  durationS: number;
  warmupS: number;
  computeSecondsPerBatch: number;
  serverNodeArgs: string[];
}

const freePort = (): Promise<number> => new Promise((resolve, reject) => {
  const s = net.createServer();
  s.once('error', reject);
  s.listen(0, '127.0.0.1', () => {
    const port = (s.address() as net.AddressInfo).port;
    s.close(() => resolve(port));
  });
});

/** The first row of a model's load body (`{"inputs": [row]}`). */
const rowOf = (m: BenchModel): number[] => (JSON.parse(m.body) as { inputs: number[][] }).inputs[0] as number[];

/** The OIP v2 JSON body of one row, and the binary one (FP32 bytes after the header, binary output asked). */
function v2Bodies(m: BenchModel): { json: string; binary: Buffer; headerBytes: number } {
  const row = rowOf(m);
  const json = JSON.stringify({ inputs: [{ name: m.inputName, shape: [1, row.length], datatype: 'FP32', data: row }] });
  const header = Buffer.from(JSON.stringify({
    inputs: [{ name: m.inputName, shape: [1, row.length], datatype: 'FP32', parameters: { binary_data_size: row.length * 4 } }],
    parameters: { binary_data_output: true },
  }));
  const bytes = Buffer.from(Float32Array.from(row).buffer);
  return { json, binary: Buffer.concat([header, bytes]), headerBytes: header.length };
}

/** CPU µs per request of each labelled process while `run` loads it. */
async function withCpu<T extends { requests: number }>(proc: ServerProcess, dataDir: string, endpoint: string, run: () => Promise<T>): Promise<{ result: T; cpuUsPerRequest: Record<string, number> }> {
  const tree = processTree(proc.pid, { rootLabel: 'server', labelOf: (_cmd, pid, parent) => (parent === 'replica' || replicaPids(dataDir, endpoint).has(pid) ? 'replica' : undefined) });
  const cpu0 = cpuSnapshot(tree.keys());
  const result = await run();
  const cpu1 = cpuSnapshot(tree.keys());
  const us: Record<string, number> = {};
  for (const [pid, label] of tree) {
    const a = cpu0.get(pid);
    const b = cpu1.get(pid);
    if (a !== undefined && b !== undefined) us[label] = (us[label] ?? 0) + (b - a);
  }
  return { result, cpuUsPerRequest: Object.fromEntries(Object.entries(us).map(([k, v]) => [k, round(v / Math.max(1, result.requests), 1)])) };
}

interface GrpcLoad { requests: number; requestsPerS: number; p50Ms: number; p99Ms: number; maxMs: number; errors: number; firstError?: string }

async function grpcLoad(address: string, m: BenchModel, shape: number[], inputFile: string, s: ProtocolsSettings, token?: string): Promise<GrpcLoad> {
  const model = m.key;
  const out = await runNodeScript([
    fileURLToPath(new URL('./grpc-load.js', import.meta.url)), '--address', address, '--model', model, '--input', m.inputName, '--shape', shape.join(','), '--input-file', inputFile,
    '--concurrency', String(s.connections), '--duration-s', String(s.durationS), '--warmup-s', String(s.warmupS), ...(token === undefined ? [] : ['--token', token]),
  ]);
  const r = JSON.parse(out) as GrpcLoad;
  if (r.errors > 0) throw new Error(`gRPC load on ${address} (${model}): ${r.errors} errors, first: ${r.firstError ?? '?'}`);
  return r;
}

async function computeLimitRowsPerS(m: BenchModel, s: ProtocolsSettings): Promise<number> {
  const out = await runNodeScript([
    fileURLToPath(new URL('./compute-limit.js', import.meta.url)), '--model', m.path, '--batches', '1,8,32,64,128', '--seconds', String(s.computeSecondsPerBatch),
  ]);
  return Math.max(...(JSON.parse(out) as { batches: ComputeBatch[] }).batches.map((b) => b.rowsPerS));
}

export async function runProtocols(heavy: BenchModel, linear: BenchModel, s: ProtocolsSettings, token: string, tmp: string, log: (line: string) => void): Promise<ProtocolRow[]> {
  const rows: ProtocolRow[] = [];
  log(`bench: protocols: compute limit of ${heavy.key}...`);
  const limit = await computeLimitRowsPerS(heavy, s);
  const dataDir = join(tmp, 'ferry-protocols');
  const grpcPort = await freePort();
  const proc = await startFerryServer(dataDir, token, s.serverNodeArgs, { grpcPort });
  let baseline: ServerProcess | undefined;
  try {
    for (const m of [heavy, linear]) {
      await registerVersion(proc.url, token, m.key, m.path);
      await ferryApi(proc.url, token, 'POST', '/api/2.0/serving-endpoints', { name: m.key, config: { served_entities: [{ entity_name: m.key, entity_version: '1' }] } });
    }
    await waitEndpointsReady(proc.url, token, [heavy.key, linear.key]);
    const auth = { Authorization: `Bearer ${token}` };

    // heavy: JSON vs binary tensors over REST.
    const hb = v2Bodies(heavy);
    const url = `${proc.url}/v2/models/${heavy.key}/infer`;
    for (const [target, body, headers] of [
      ['REST v2 JSON', hb.json, { 'Content-Type': 'application/json', ...auth }],
      ['REST v2 binary', hb.binary, { 'Inference-Header-Content-Length': String(hb.headerBytes), ...auth }],
    ] as const) {
      const check = await fetch(url, { method: 'POST', body, headers });
      if (check.status !== 200) throw new Error(`${heavy.key} ${target}: ${check.status} ${await check.text()}`);
      const script = await writeWrkScript(tmp, `protocols-${heavy.key}-${target.replace(/\W+/g, '-')}`, { body, headers });
      log(`bench: protocols: ${heavy.key} ${target} c=${s.connections}...`);
      await runWrk(url, script, s.connections, s.warmupS);
      const { result: wrk, cpuUsPerRequest } = await withCpu(proc, dataDir, heavy.key, () => runWrk(url, script, s.connections, s.durationS));
      rows.push({
        model: heavy.key, target, concurrency: s.connections, requestsPerS: wrk.requestsPerS, p50Ms: wrk.latencyP50Ms, p99Ms: wrk.latencyP99Ms,
        errors: wrk.non2xx + wrk.socketErrors, cpuUsPerRequest, vsComputeLimit: round(wrk.requestsPerS / limit, 2),
      });
    }

    // linear: gRPC vs REST on the same endpoint, and the hand-written gRPC server.
    const lb = v2Bodies(linear);
    const row = rowOf(linear);
    const inputFile = join(tmp, 'linear-row.f32');
    writeFileSync(inputFile, Buffer.from(Float32Array.from(row).buffer));
    const shape = [1, row.length];
    const restUrl = `${proc.url}/v2/models/${linear.key}/infer`;
    const restScript = await writeWrkScript(tmp, 'protocols-linear-rest', { body: lb.json, headers: { 'Content-Type': 'application/json', ...auth } });
    log(`bench: protocols: ${linear.key} REST v2 JSON c=${s.connections}...`);
    await runWrk(restUrl, restScript, s.connections, s.warmupS);
    const rest = await withCpu(proc, dataDir, linear.key, () => runWrk(restUrl, restScript, s.connections, s.durationS));
    rows.push({
      model: linear.key, target: 'REST v2 JSON (wrk)', concurrency: s.connections, requestsPerS: rest.result.requestsPerS, p50Ms: rest.result.latencyP50Ms,
      p99Ms: rest.result.latencyP99Ms, errors: rest.result.non2xx + rest.result.socketErrors, cpuUsPerRequest: rest.cpuUsPerRequest, vsComputeLimit: undefined,
    });
    log(`bench: protocols: ${linear.key} gRPC ModelInfer c=${s.connections}...`);
    const grpcRun = await withCpu(proc, dataDir, linear.key, () => grpcLoad(`127.0.0.1:${grpcPort}`, linear, shape, inputFile, s, token));
    rows.push({
      model: linear.key, target: 'gRPC ModelInfer (Ferry)', concurrency: s.connections, requestsPerS: grpcRun.result.requestsPerS, p50Ms: grpcRun.result.p50Ms,
      p99Ms: grpcRun.result.p99Ms, errors: grpcRun.result.errors, cpuUsPerRequest: grpcRun.cpuUsPerRequest, vsComputeLimit: undefined,
    });
    baseline = await startServerProcess([fileURLToPath(new URL('./grpc-baseline-server.js', import.meta.url)), '--model', linear.path], process.env, /gRPC baseline listening on (127\.0\.0\.1:\d+)/, 60_000);
    log(`bench: protocols: ${linear.key} hand-written grpc-js + onnxruntime c=${s.connections}...`);
    const base = await grpcLoad(baseline.url, linear, shape, inputFile, s);
    rows.push({
      model: linear.key, target: 'gRPC hand-written (grpc-js + onnxruntime, 1 process)', concurrency: s.connections, requestsPerS: base.requestsPerS,
      p50Ms: base.p50Ms, p99Ms: base.p99Ms, errors: base.errors, cpuUsPerRequest: {}, vsComputeLimit: undefined,
    });
  } finally {
    if (baseline !== undefined) await stopServer(baseline);
    await stopServer(proc);
  }
  return rows;
}

export function protocolsMarkdown(rows: readonly ProtocolRow[]): string[] {
  if (rows.length === 0) return [];
  const cpu = (r: ProtocolRow): string => (Object.keys(r.cpuUsPerRequest).length === 0 ? '–' : Object.entries(r.cpuUsPerRequest).map(([k, v]) => `${k} ${v}`).join(', '));
  return [
    '## Protocols: JSON vs binary tensors, gRPC vs REST',
    '',
    'One `ferry server` with `grpcPort`, auth on, batching on. heavy: OIP v2 REST, 512 FP32 values per request as JSON or as binary tensor data (binary output asked too), wrk. linear: gRPC ModelInfer with raw contents (one grpc-js client, N calls in flight) vs OIP v2 REST JSON (wrk) on the same endpoint, and a hand-written grpc-js + onnxruntime server in one process.',
    '',
    '| model | target | concurrency | req/s | ÷ compute limit | p50 ms | p99 ms | errors | CPU µs/request |',
    '|---|---|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.model} | ${r.target} | ${r.concurrency} | ${r.requestsPerS} | ${r.vsComputeLimit ?? '–'} | ${r.p50Ms} | ${r.p99Ms} | ${r.errors} | ${cpu(r)} |`),
    '',
  ];
}
