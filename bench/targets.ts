/**
 * The HTTP targets wrk loads, one runner per kind:
 *   hand-written: bench/baseline-server.ts, one process (`single`) or 2 node:cluster workers (`cluster2`);
 *   ferry:        one `ferry server` per model (auth on) with one endpoint per batching variant
 *                 (`ferry-off`, `ferry-on`, `ferry-on-500us`), all serving the same model version.
 * Each target says how to label its processes for the CPU and RSS columns.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { closeEnough, type BenchModel } from './models.js';
import { sleep, startServerProcess, type ServerProcess, type TreeLabels } from './procs.js';

/** dist/bench/targets.js → the repository root. */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const START_TIMEOUT_MS = 60_000;
const ENDPOINT_READY_TIMEOUT_MS = 120_000;

/** Ferry's endpoint-config batching field for each Ferry variant (docs/api.md). */
export const FERRY_VARIANTS = {
  'ferry-off': { enabled: false },
  'ferry-on': { enabled: true, max_batch_size: 64, max_queue_delay_us: 0 },
  'ferry-on-500us': { enabled: true, max_batch_size: 64, max_queue_delay_us: 500 },
  'ferry-w2': { enabled: true, max_batch_size: 64, max_queue_delay_us: 0 },
  'ferry-w2-rl': { enabled: true, max_batch_size: 64, max_queue_delay_us: 0 },
} as const;
export type FerryVariant = keyof typeof FERRY_VARIANTS;

export const TARGET_NAMES = ['single', 'cluster2', 'ferry-off', 'ferry-on', 'ferry-on-500us', 'ferry-w2', 'ferry-w2-rl'] as const;
export type TargetName = (typeof TARGET_NAMES)[number];

/** A limit no bench load reaches (16.7 million calls/s): every call is admitted, each one asked of the primary. */
const RATE_LIMIT_CALLS = 1_000_000_000;

export const TARGET_DESCRIPTIONS: Record<TargetName, string> = {
  single: 'hand-written node:http + onnxruntime-node, one process',
  cluster2: 'the same server under node:cluster, 2 workers',
  'ferry-off': `ferry server (gateway, auth on) → replica process, batching ${JSON.stringify(FERRY_VARIANTS['ferry-off'])}`,
  'ferry-on': `the same, batching ${JSON.stringify(FERRY_VARIANTS['ferry-on'])}`,
  'ferry-on-500us': `the same, batching ${JSON.stringify(FERRY_VARIANTS['ferry-on-500us'])}`,
  'ferry-w2': `ferry-on's batching on a server of its own with gatewayWorkers 2 (the others run gatewayWorkers 1)`,
  'ferry-w2-rl': `ferry-w2's server, an endpoint with a rate limit that never refuses (${RATE_LIMIT_CALLS} calls per minute per user): what exact limits across workers cost`,
};

/** Gateway workers of the server each Ferry variant runs on: `ferry-w2` gets a server of its own. */
export const FERRY_GATEWAY_WORKERS: Record<FerryVariant, number> = { 'ferry-off': 1, 'ferry-on': 1, 'ferry-on-500us': 1, 'ferry-w2': 2, 'ferry-w2-rl': 2 };


/** The `ai_gateway` of each variant's endpoint, when it has one. */
const FERRY_AI_GATEWAY: Partial<Record<FerryVariant, unknown>> = { 'ferry-w2-rl': { rate_limits: [{ calls: RATE_LIMIT_CALLS, renewal_period: 'minute', key: 'user' }] } };

export interface Target {
  name: TargetName;
  url: string;
  proc: ServerProcess;
  labels: TreeLabels;
}

/** The hand-written server: `workers` 1 is `single`, 2 is `cluster2`. */
export async function startHandWritten(model: BenchModel, workers: 1 | 2, token: string, nodeArgs: string[]): Promise<Target> {
  const proc = await startServerProcess(
    [...nodeArgs, fileURLToPath(new URL('./baseline-server.js', import.meta.url)), '--model', model.path, '--workers', String(workers)],
    { ...process.env, BENCH_TOKEN: token },
    /Baseline listening on (http:\/\/\S+)/,
    START_TIMEOUT_MS,
  );
  const labels: TreeLabels = workers === 1
    ? { rootLabel: 'server', labelOf: () => undefined }
    : { rootLabel: 'primary', labelOf: () => 'workers' };
  return { name: workers === 1 ? 'single' : 'cluster2', url: `${proc.url}/invocations`, proc, labels };
}

/** One Ferry API call with the bearer token; throws with the status and body on a non-2xx answer. */
export async function ferryApi(url: string, token: string, method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(url + path, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path} → ${res.status}: ${text}`);
  return text === '' ? {} : JSON.parse(text);
}

/**
 * Starts `ferry server` on 127.0.0.1, port 0, with `dataDir` and `FERRY_ADMIN_TOKEN` = `token`.
 * `serverConfig` (e.g. `{warmPoolSize: 0}`) is written next to the data dir and passed as
 * `--config`; without it the server runs on its defaults.
 */
export async function startFerryServer(dataDir: string, token: string, nodeArgs: string[], serverConfig?: Record<string, unknown>): Promise<ServerProcess> {
  const configArgs: string[] = [];
  if (serverConfig !== undefined) {
    const file = `${dataDir}.config.json`;
    await writeFile(file, JSON.stringify(serverConfig));
    configArgs.push('--config', file);
  }
  return startServerProcess(
    [...nodeArgs, join(ROOT, 'bin', 'ferry.js'), 'server', '--host', '127.0.0.1', '--port', '0', '--data-dir', dataDir, ...configArgs],
    { ...process.env, FERRY_ADMIN_TOKEN: token },
    /Ferry server listening on (http:\/\/\S+?)(?:\s|$)/,
    START_TIMEOUT_MS,
  );
}

/** Registers the model file `path` as `name` version 1 and checks that the version is READY. */
export async function registerVersion(base: string, token: string, name: string, path: string): Promise<void> {
  await ferryApi(base, token, 'POST', '/api/2.0/mlflow/registered-models/create', { name });
  const mv = await ferryApi(base, token, 'POST', '/api/2.0/mlflow/model-versions/create', { name, source: path });
  if (mv?.model_version?.status !== 'READY') throw new Error(`model version not READY: ${JSON.stringify(mv)}`);
}

/** Polls each endpoint every 200 ms until its state is READY; throws on UPDATE_FAILED or after `timeoutMs` in all. */
export async function waitEndpointsReady(base: string, token: string, names: string[], timeoutMs = ENDPOINT_READY_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (const name of names) {
    for (;;) {
      const ep = await ferryApi(base, token, 'GET', `/api/2.0/serving-endpoints/${name}`);
      if (ep?.state?.ready === 'READY') break;
      if (ep?.state?.config_update === 'UPDATE_FAILED') throw new Error(`endpoint ${name} update failed: ${JSON.stringify(ep)}`);
      if (Date.now() > deadline) throw new Error(`endpoint ${name} not READY after ${timeoutMs} ms: ${JSON.stringify(ep)}`);
      await sleep(200);
    }
  }
}

/**
 * Pids of the endpoint's replicas now, from the local runtime's pid files
 * (`<data-dir>/runtime/pids/<endpoint>.<entity>.<hex>.json`, `{pid, ...}`). The pid files, not the
 * command line, because a replica claimed from the warm pool keeps the command line it was started
 * with (`ferry replica --pool <key>`), which names no endpoint.
 */
export function replicaPids(dataDir: string, endpoint: string): Set<number> {
  const dir = join(dataDir, 'runtime', 'pids');
  const out = new Set<number>();
  let names: string[] = [];
  try { names = readdirSync(dir); } catch { return out; }
  for (const name of names) {
    if (!name.startsWith(`${endpoint}.`) || !name.endsWith('.json')) continue;
    try {
      const pid = (JSON.parse(readFileSync(join(dir, name), 'utf8')) as { pid?: unknown }).pid;
      if (typeof pid === 'number') out.add(pid);
    } catch { /* removed or half-written: the replica is going or coming */ }
  }
  return out;
}

/**
 * One `ferry server` for `model`: registers it as version 1, creates endpoint `<model>-<variant>`
 * per variant with that variant's batching config, waits until all are READY. The targets share
 * the server process; each counts only its own endpoint's replicas (see {@link replicaPids}).
 */
export async function startFerry(model: BenchModel, variants: FerryVariant[], token: string, dataDir: string, nodeArgs: string[], gatewayWorkers: number): Promise<Target[]> {
  const proc = await startFerryServer(dataDir, token, nodeArgs, { gatewayWorkers });
  const base = proc.url;
  const endpoint = (v: FerryVariant): string => `${model.key}-${v.slice('ferry-'.length)}`;
  try {
    await registerVersion(base, token, model.key, model.path);
    for (const v of variants) {
      await ferryApi(base, token, 'POST', '/api/2.0/serving-endpoints', {
        name: endpoint(v),
        config: { served_entities: [{ entity_name: model.key, entity_version: '1', batching: FERRY_VARIANTS[v] }] },
        ...(FERRY_AI_GATEWAY[v] === undefined ? {} : { ai_gateway: FERRY_AI_GATEWAY[v] }),
      });
    }
    await waitEndpointsReady(base, token, variants.map(endpoint));
  } catch (err) {
    throw new Error(`Ferry setup failed: ${err instanceof Error ? err.message : String(err)}\n--- ferry server stderr (tail) ---\n${proc.stderrTail()}`);
  }
  return variants.map((v) => ({
    name: v,
    url: `${base}/serving-endpoints/${endpoint(v)}/invocations`,
    proc,
    labels: {
      // With gateway workers, `server` is the primary (control plane) and `workers` the gateways.
      rootLabel: 'server',
      labelOf: (cmd: string, pid: number, parent: string) => (cmd.includes('worker-main.js') ? 'workers'
        : parent === 'replica' || replicaPids(dataDir, endpoint(v)).has(pid) ? 'replica' : undefined),
    },
  }));
}

/**
 * Before any load: the model's distinct check rows, all sent at once (so a batching target
 * batches them), must each come back with their own answer.
 */
export async function checkAnswers(target: Target, model: BenchModel, token: string): Promise<void> {
  await Promise.all(model.checks.map(async ({ body, expected }) => {
    const res = await fetch(target.url, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body });
    const text = await res.text();
    let predictions: unknown;
    try { predictions = (JSON.parse(text) as { predictions?: unknown[] }).predictions?.[0]; } catch { /* reported below */ }
    if (res.status !== 200 || !closeEnough(predictions, expected)) {
      throw new Error(`${model.key} ${target.name}: for ${body.slice(0, 80)}… expected 200 {"predictions":[${JSON.stringify(expected).slice(0, 80)}…]}, got ${res.status} ${text.slice(0, 300)}`);
    }
  }));
}
