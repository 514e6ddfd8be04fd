/**
 * The HTTP targets wrk loads, one runner per kind:
 *   hand-written: bench/baseline-server.ts, one process (`single`) or 2 node:cluster workers (`cluster2`);
 *   ferry:        one `ferry server` per model (auth on) with one endpoint per batching variant
 *                 (`ferry-off`, `ferry-on`, `ferry-on-500us`), all serving the same model version.
 * Each target says how to label its processes for the CPU and RSS columns.
 */
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
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
} as const;
export type FerryVariant = keyof typeof FERRY_VARIANTS;

export const TARGET_NAMES = ['single', 'cluster2', 'ferry-off', 'ferry-on', 'ferry-on-500us'] as const;
export type TargetName = (typeof TARGET_NAMES)[number];

export const TARGET_DESCRIPTIONS: Record<TargetName, string> = {
  single: 'hand-written node:http + onnxruntime-node, one process',
  cluster2: 'the same server under node:cluster, 2 workers',
  'ferry-off': `ferry server (gateway, auth on) → replica process, batching ${JSON.stringify(FERRY_VARIANTS['ferry-off'])}`,
  'ferry-on': `the same, batching ${JSON.stringify(FERRY_VARIANTS['ferry-on'])}`,
  'ferry-on-500us': `the same, batching ${JSON.stringify(FERRY_VARIANTS['ferry-on-500us'])}`,
};

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

/**
 * One `ferry server` for `model`: registers it as version 1, creates endpoint `<model>-<variant>`
 * per variant with that variant's batching config, waits until all are READY. The targets share
 * the server process; each counts only its own endpoint's replica (matched by the endpoint name
 * in the replica's socket path: `<endpoint>.<entity>.<hex>.sock`).
 */
export async function startFerry(model: BenchModel, variants: FerryVariant[], token: string, dataDir: string, nodeArgs: string[]): Promise<Target[]> {
  const proc = await startServerProcess(
    [...nodeArgs, join(ROOT, 'bin', 'ferry.js'), 'server', '--host', '127.0.0.1', '--port', '0', '--data-dir', dataDir],
    { ...process.env, FERRY_ADMIN_TOKEN: token },
    /Ferry server listening on (http:\/\/\S+?)(?:\s|$)/,
    START_TIMEOUT_MS,
  );
  const base = proc.url;
  const endpoint = (v: FerryVariant): string => `${model.key}-${v.slice('ferry-'.length)}`;
  try {
    await api(base, token, 'POST', '/api/2.0/mlflow/registered-models/create', { name: model.key });
    const mv = await api(base, token, 'POST', '/api/2.0/mlflow/model-versions/create', { name: model.key, source: model.path });
    if (mv?.model_version?.status !== 'READY') throw new Error(`model version not READY: ${JSON.stringify(mv)}`);
    for (const v of variants) {
      await api(base, token, 'POST', '/api/2.0/serving-endpoints', {
        name: endpoint(v),
        config: { served_entities: [{ entity_name: model.key, entity_version: '1', batching: FERRY_VARIANTS[v] }] },
      });
    }
    const deadline = Date.now() + ENDPOINT_READY_TIMEOUT_MS;
    for (const v of variants) {
      for (;;) {
        const ep = await api(base, token, 'GET', `/api/2.0/serving-endpoints/${endpoint(v)}`);
        if (ep?.state?.ready === 'READY') break;
        if (ep?.state?.config_update === 'UPDATE_FAILED') throw new Error(`endpoint ${endpoint(v)} update failed: ${JSON.stringify(ep)}`);
        if (Date.now() > deadline) throw new Error(`endpoint ${endpoint(v)} not READY after ${ENDPOINT_READY_TIMEOUT_MS} ms: ${JSON.stringify(ep)}`);
        await sleep(200);
      }
    }
  } catch (err) {
    throw new Error(`Ferry setup failed: ${err instanceof Error ? err.message : String(err)}\n--- ferry server stderr (tail) ---\n${proc.stderrTail()}`);
  }
  return variants.map((v) => ({
    name: v,
    url: `${base}/serving-endpoints/${endpoint(v)}/invocations`,
    proc,
    labels: {
      rootLabel: 'server',
      labelOf: (cmd: string) => (/ replica( |$)/.test(cmd) && cmd.includes(`/${endpoint(v)}.`) ? 'replica' : undefined),
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
