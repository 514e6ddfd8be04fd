/**
 * The python flavor end to end, with the real MLflow: models saved by MLflow's own save_model
 * (scikit-learn with a column and with a tensor signature, XGBoost, a custom PythonModel with an
 * artifact and params, a PythonModel that raises or dies, named tensors) are registered from their
 * directories and served by real replicas whose Python worker loads them with
 * mlflow.pyfunc.load_model. Every request format is compared with what MLflow's scoring server
 * computes in-process (test/support/mlflow_models.py reference). Also: registration of malformed
 * MLmodel files, batching equivalence, a Python exception as a 500 with the replica still serving,
 * a worker that dies as a replica crash that is replaced, and Ferry's own loaders (no mlflow).
 *
 * MLflow comes from FERRY_MLFLOW_PATH, default ../shared/vendor/mlflow next to the repository; the
 * interpreter is /usr/bin/python3 (Debian's numpy, pandas, scikit-learn, xgboost).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { PidsLimit } from '../src/runtime/local/pids-limit.js';
import type { FerryServer } from '../src/server/index.js';
import {
  ferryChildren, mlflowVenv, Processes, registerVersion, replicaPids, request, ROOT, startTestServer, SYSTEM_PYTHON, tempDir, waitFor, waitSettled, type HttpResult,
} from './support/index.js';

const run = promisify(execFile);
const MODELS_SCRIPT = path.join(ROOT, 'test', 'support', 'mlflow_models.py');
/** The model directories `mlflow_models.py save` writes. */
type Kind = 'sk_col' | 'sk_tensor' | 'xgb' | 'custom' | 'raising' | 'named' | 'probe';

let dir: string;
let dataDir: string;
let models: string;
/** A virtualenv over the system packages with the vendored MLflow on its path: the server's `python`. */
let venvPython: string;
let server: FerryServer;
/** Why there is no process limit per sandbox here (no writable pids cgroup), if so. */
let pidsUnavailable: string | undefined;
const procs = new Processes();

const call = (method: string, p: string, json?: unknown): Promise<HttpResult> =>
  request({ url: server.url, method, path: p, ...(json === undefined ? {} : { json }) });
const invoke = (endpoint: string, body: unknown): Promise<HttpResult> => call('POST', `/serving-endpoints/${endpoint}/invocations`, body);

/** MLflow's own answers (scoring server parsing + pyfunc predict in-process) for `bodies`. */
async function reference(kind: Kind, bodies: unknown[]): Promise<Array<{ ok: boolean; json?: { predictions: unknown }; error?: string }>> {
  const file = path.join(dir, `bodies-${kind}.json`);
  await fsp.writeFile(file, JSON.stringify(bodies));
  const { stdout } = await run(venvPython, [MODELS_SCRIPT, 'reference', path.join(models, kind), file], { maxBuffer: 16 << 20 });
  return JSON.parse(stdout) as Array<{ ok: boolean; json?: { predictions: unknown } }>;
}

async function deploy(name: string, kind: Kind, extra: Record<string, unknown> = {}): Promise<any> {
  await registerVersion(server.url, name, path.join(models, kind));
  const r = await call('POST', '/api/2.0/serving-endpoints', { name, config: { served_entities: [{ entity_name: name, entity_version: '1', ...extra }] } });
  assert.equal(r.status, 200, r.text);
  return waitSettled(server.url, name, 90_000);
}

/** Request bodies in every MLflow format for a frame of `columns` × `rows`. */
function frameBodies(columns: string[], rows: unknown[][], params?: Record<string, unknown>): unknown[] {
  const records = rows.map((r) => Object.fromEntries(columns.map((c, i) => [c, r[i]])));
  const byColumn = Object.fromEntries(columns.map((c, i) => [c, rows.map((r) => r[i])]));
  const p = params === undefined ? {} : { params };
  return [
    { dataframe_split: { columns, data: rows }, ...p },
    { dataframe_records: records, ...p },
    { instances: records, ...p },
    { inputs: byColumn, ...p },
  ];
}

/**
 * The pids of the Python workers of `endpoint`'s replicas: processes forked by a fork server
 * (python/ferry_forkserver.py, the Python warm pool; not its bwrap, whose arguments name it too)
 * whose output goes to the endpoint's logs.
 */
async function forkedWorkersOf(endpoint: string): Promise<number[]> {
  const info = new Map<number, { ppid: number; forkServer: boolean; log: string }>();
  for (const name of (await fsp.readdir('/proc')).filter((n) => /^\d+$/.test(n))) {
    const stat = await fsp.readFile(`/proc/${name}/stat`, 'utf8').catch(() => '');
    const cmd = await fsp.readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    const log = await fsp.readlink(`/proc/${name}/fd/1`).catch(() => '');
    info.set(Number(name), { ppid: Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]), forkServer: cmd.includes('ferry_forkserver.py') && !(cmd.split('\0')[0] ?? '').endsWith('bwrap'), log });
  }
  return [...info].filter(([, p]) => p.forkServer && info.get(p.ppid)?.forkServer === true && p.log.includes(`/logs/${endpoint}/`)).map(([pid]) => pid);
}

before(async () => {
  dir = await tempDir();
  dataDir = path.join(dir, 'data');
  models = path.join(dir, 'models');
  venvPython = await mlflowVenv(dir);
  await run(venvPython, [MODELS_SCRIPT, 'save', models], { maxBuffer: 16 << 20 });
  // A low process limit (tasks: a Node replica has ~12 threads, a fork server one per worker): the
  // fork bomb test stops at it quickly. Every refused fork of a bomb process first copies its whole
  // address space (the pids check comes late in the kernel's fork), so the fewer bomb processes
  // spin until the watchdog's kill, the less the machine (and the suites running beside) stalls.
  server = await startTestServer(dataDir, { python: venvPython, warmPoolSize: 0, maxProcessesPerSandbox: 48 });
  const limit = PidsLimit.open(48);
  if (limit instanceof PidsLimit) limit.close();
  pidsUnavailable = limit instanceof PidsLimit ? undefined : limit.unavailable;
});

after(async () => {
  await procs.killAll();
  await server?.close();
  assert.deepEqual(await ferryChildren(dataDir), [], 'no replica outlives the server');
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('python flavor', () => {
  test('registration reads the signature and input example from MLmodel (column and tensor signatures)', async () => {
    await registerVersion(server.url, 'reg-col', path.join(models, 'sk_col'));
    const col = (await call('GET', '/api/2.0/mlflow/model-versions/get?name=reg-col&version=1')).json.model_version;
    assert.equal(col.flavor, 'python');
    assert.deepEqual(col.signature.inputs, [{ name: 'a', dtype: 'float64', shape: [-1] }, { name: 'b', dtype: 'float64', shape: [-1] }]);
    assert.deepEqual(col.input_example, { dataframe_split: { columns: ['a', 'b'], data: [[1, 0.5], [2, 0.1]] } });
    await registerVersion(server.url, 'reg-tensor', path.join(models, 'sk_tensor'));
    const tensor = (await call('GET', '/api/2.0/mlflow/model-versions/get?name=reg-tensor&version=1')).json.model_version;
    assert.deepEqual(tensor.signature.inputs, [{ name: 'input', dtype: 'float32', shape: [-1, 2] }]);
    assert.deepEqual(tensor.signature.outputs, [{ name: 'predictions', dtype: 'int64', shape: [-1] }]);
    assert.deepEqual(Object.keys(tensor.input_example), ['inputs']);
    // The environment files MLflow wrote, as the console's model page shows them.
    const env = await call('GET', '/api/2.0/mlflow/model-versions/get-environment?name=reg-col&version=1');
    assert.equal(env.status, 200, env.text);
    assert.match(env.json.python_env, /^python: 3\.\d+/m);
    assert.match(env.json.requirements, /scikit-learn/);
    assert.equal(env.json.conda, true);
    assert.equal((await call('GET', '/api/2.0/mlflow/model-versions/get-environment?name=reg-col&version=9')).status, 404);
  });

  test('a malformed MLmodel is FAILED_REGISTRATION with a reason naming the field', async () => {
    const cases: Array<[string, string, RegExp]> = [
      ['not-yaml', 'flavors: [unclosed\n', /not valid YAML/],
      ['no-loader', 'flavors:\n  python_function:\n    model_path: model.pkl\n', /loader_module/],
      ['no-signature', 'flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n', /signature is missing/],
      ['bad-json', "flavors:\n  python_function:\n    loader_module: mlflow.sklearn\nsignature:\n  inputs: '[{\"type\": '\n", /signature.inputs is not valid JSON/],
      ['bad-type', "flavors:\n  python_function:\n    loader_module: m\nsignature:\n  inputs: '[{\"type\": \"datetime\", \"name\": \"t\"}]'\n", /signature.inputs\[0\].type "datetime" is not supported/],
      ['mixed', "flavors:\n  python_function:\n    loader_module: m\nsignature:\n  inputs: '[{\"type\": \"double\", \"name\": \"a\"}, {\"type\": \"tensor\", \"name\": \"t\", \"tensor-spec\": {\"dtype\": \"float32\", \"shape\": [-1]}}]'\n", /mixes column and tensor/],
    ];
    await call('POST', '/api/2.0/mlflow/registered-models/create', { name: 'bad' });
    for (const [name, text, reason] of cases) {
      const d = path.join(dir, 'bad', name);
      await fsp.mkdir(d, { recursive: true });
      await fsp.writeFile(path.join(d, 'MLmodel'), text);
      const r = await call('POST', '/api/2.0/mlflow/model-versions/create', { name: 'bad', source: d });
      assert.equal(r.json.model_version.status, 'FAILED_REGISTRATION', name);
      assert.match(r.json.model_version.status_message, reason, name);
    }
  });

  test('every request format answers what MLflow answers, for every model kind', async () => {
    const sets: Array<[Kind, unknown[]]> = [
      ['sk_col', frameBodies(['a', 'b'], [[1, 0.5], [2.5, -1], [0, 0]])],
      ['xgb', frameBodies(['a', 'b'], [[1, 0.5], [2.5, -1], [7, 0.25]])],
      ['custom', [...frameBodies(['a', 'n', 's'], [[1.5, 2, 'q'], [-3, 7, 'long text']]), ...frameBodies(['a', 'n', 's'], [[1, 1, 'p']], { offset: 2.5 })]],
      ['sk_tensor', [
        { inputs: [[1, 0.5], [3, 0.25]] }, { instances: [[1, 0.5], [3, 0.25]] },
        { dataframe_split: { columns: ['0', '1'], data: [[1, 0.5], [3, 0.25]] } },
      ]],
      ['named', [
        { inputs: { x: [[1, 2, 3], [4, 5, 6]], k: [2, 3] } },
        { instances: [{ x: [1, 2, 3], k: 2 }, { x: [4, 5, 6], k: 3 }] },
      ]],
    ];
    for (const [kind, bodies] of sets) {
      const e = await deploy(`p-${kind.replace('_', '-')}`, kind);
      assert.equal(e.state.ready, 'READY', `${kind}: ${JSON.stringify(e.state)}`);
      const want = await reference(kind, bodies);
      for (let i = 0; i < bodies.length; i++) {
        const got = await invoke(e.name, bodies[i]);
        assert.equal(got.status, 200, `${kind} ${JSON.stringify(bodies[i])}: ${got.text}`);
        assert.ok(want[i]!.ok, `MLflow failed on ${JSON.stringify(bodies[i])}: ${want[i]!.error}`);
        assert.deepEqual(got.json, want[i]!.json, `${kind} ${JSON.stringify(bodies[i])}`);
      }
    }
    // OIP v2: the same numbers as MLflow's predictions for the same rows.
    const v2 = await call('POST', '/v2/models/p-sk-col/infer', {
      inputs: [{ name: 'a', datatype: 'FP64', shape: [2], data: [1, 2.5] }, { name: 'b', datatype: 'FP64', shape: [2], data: [0.5, -1] }],
    });
    assert.equal(v2.status, 200, v2.text);
    const [ref] = await reference('sk_col', [{ dataframe_split: { columns: ['a', 'b'], data: [[1, 0.5], [2.5, -1]] } }]);
    assert.deepEqual(v2.json.outputs[0].data, ref!.json!.predictions);
  });

  test('batched calls give each request its own answer, equal to the unbatched one', async () => {
    const rows = Array.from({ length: 24 }, (_, i) => [i * 0.5, (i % 5) - 2]);
    const bodies = rows.map((r) => ({ dataframe_split: { columns: ['a', 'b'], data: [r] } }));
    const alone = await reference('sk_col', bodies);
    const modelCalls = async (): Promise<number> => {
      const m = /ferry_batch_size_count\{[^}]*"p-sk-col"[^}]*\} (\d+)/.exec((await call('GET', '/metrics')).text);
      return Number(m?.[1] ?? 0);
    };
    const before = await modelCalls();
    const together = await Promise.all(bodies.map((b) => invoke('p-sk-col', b)));
    // numpy's matrix product sums in a different order for 24 rows than for 1, so a batched row
    // may differ from the row alone in its last bit (measured: 10.150071530758233 vs
    // 10.15007153075823); MLflow's own predict on the concatenated frame does the same.
    together.forEach((r, i) => {
      assert.equal(r.status, 200, r.text);
      const got = r.json.predictions as number[];
      const want = alone[i]!.json!.predictions as number[];
      assert.equal(got.length, 1);
      assert.ok(Math.abs(got[0]! - want[0]!) <= 1e-12 * Math.max(1, Math.abs(want[0]!)), `row ${i}: ${got[0]} vs ${want[0]}`);
    });
    // Rows that arrived while the worker was busy ran together: fewer calls than requests.
    assert.ok((await modelCalls()) - before < bodies.length, 'some requests were batched');
  });

  test('a Python exception is a 500 MODEL_ERROR with its message; the replica keeps serving; a dead worker is a crash that is replaced', async () => {
    const e = await deploy('p-raising', 'raising');
    assert.equal(e.state.ready, 'READY', JSON.stringify(e.state));
    const bad = await invoke('p-raising', { dataframe_split: { columns: ['a'], data: [[-1]] } });
    assert.equal(bad.status, 500, bad.text);
    assert.equal(bad.json.error_code, 'MODEL_ERROR');
    assert.match(bad.json.message, /ValueError: negative a: -1/);
    const [pid] = await replicaPids(dataDir, 'p-raising');
    const good = await invoke('p-raising', { dataframe_split: { columns: ['a'], data: [[2]] } });
    assert.deepEqual(good.json, { predictions: [4] });
    // os._exit in predict: the worker dies, the replica exits, the controller starts another.
    const dead = await invoke('p-raising', { inputs: { a: [666] } });
    assert.ok(dead.status >= 500, dead.text);
    const again = await waitFor('a replacement replica', async () => {
      const r = await invoke('p-raising', { inputs: { a: [3] } });
      return r.status === 200 ? r : undefined;
    }, 60_000);
    assert.deepEqual(again.json, { predictions: [6] });
    assert.notDeepEqual(await replicaPids(dataDir, 'p-raising'), [pid]);
  });

  test('a killed Python worker crashes only its replica: with another replica serving, only the requests it held fail (502, not retried: they may be what killed it)', async () => {
    const e = await deploy('p-two', 'sk_col', { min_provisioned_concurrency: 8, max_provisioned_concurrency: 8 });
    assert.equal(e.state.ready, 'READY', JSON.stringify(e.state));
    await waitFor('2 replicas', async () => ((await replicaPids(dataDir, 'p-two')).length === 2 ? true : undefined), 60_000);
    const body = { dataframe_split: { columns: ['a', 'b'], data: [[1, 0.5]] } };
    const want = (await reference('sk_col', [body]))[0]!.json;
    const statuses: number[] = [];
    let stop = false;
    const loops = Array.from({ length: 4 }, async () => {
      while (!stop) {
        const r = await invoke('p-two', body);
        statuses.push(r.status);
        if (r.status === 200) assert.deepEqual(r.json, want);
      }
    });
    await new Promise((r) => setTimeout(r, 1000));
    // Both replicas' workers were forked by the model's fork server; one of them is killed.
    const before = await replicaPids(dataDir, 'p-two');
    const workers = await forkedWorkersOf('p-two');
    assert.equal(workers.length, 2, `forked workers of p-two: ${JSON.stringify(workers)}`);
    process.kill(workers[0]!, 'SIGKILL');
    await waitFor('the crashed replica to be replaced', async () => {
      const pids = await replicaPids(dataDir, 'p-two');
      return pids.length === 2 && pids.filter((p) => before.includes(p)).length === 1 ? true : undefined;
    }, 60_000);
    stop = true;
    await Promise.all(loops);
    assert.ok(statuses.length > 20, `only ${statuses.length} requests`);
    // At most the 4 clients' requests in flight on the killed replica fail, each a 502 (the gateway
    // never retries a request a replica died holding); every request before and after is answered.
    const failed = statuses.filter((s) => s !== 200);
    assert.ok(failed.length <= 4 && failed.every((s) => s === 502), `${statuses.length} requests, failed: ${JSON.stringify(failed)}`);
  });

  test('a hostile model runs as the replica user in the sandbox: no database, no network, no writes to its model, no memory past its limit; other endpoints keep answering', async (t) => {
    if (process.getuid?.() !== 0) {
      t.skip('needs root (replicas drop to replicaUser only when the server is root)');
      return;
    }
    const e = await deploy('p-probe', 'probe');
    assert.equal(e.state.ready, 'READY', JSON.stringify(e.state));
    const probe = (action: string, target = ''): Promise<HttpResult> => invoke('p-probe', { inputs: { a: [1] }, params: { action, path: target } });
    assert.deepEqual((await probe('uid')).json, { predictions: [65534] }, 'runs as nobody');
    const db = await probe('read', path.join(dataDir, 'ferry.db'));
    assert.equal(db.status, 500, db.text);
    // In the sandbox the data directory does not exist at all; without one, it is not readable.
    assert.match(db.json.message, /FileNotFoundError|PermissionError/);
    const url = new URL(server.url);
    const connect = await probe('connect', `${url.hostname}:${url.port}`);
    assert.equal(connect.status, 500, connect.text);
    assert.match(connect.json.message, /ConnectionRefusedError|OSError|Network is unreachable/);
    const write = await probe('write', '/proc/self/cwd/MLmodel');
    assert.equal(write.status, 500, write.text);
    assert.match(write.json.message, /PermissionError|Read-only/);
    // The default replicaMemoryLimit is 2 GiB: the worker's address space stops there.
    const alloc = await probe('alloc', String(3 * 1024 ** 3));
    assert.equal(alloc.status, 500, alloc.text);
    assert.match(alloc.json.message, /MemoryError/);
    assert.deepEqual((await probe('')).json, { predictions: [1] }, 'the replica keeps serving');
    assert.equal((await invoke('p-sk-col', { inputs: { a: [1], b: [2] } })).status, 200, 'another endpoint answers');
  });

  test('a fork bomb in predict is stopped at the sandbox\'s process limit; its replica is replaced and other endpoints keep answering 200', async (t) => {
    if (pidsUnavailable !== undefined) {
      t.skip(pidsUnavailable);
      return;
    }
    const e = await deploy('p-bomb', 'probe');
    assert.equal(e.state.ready, 'READY', JSON.stringify(e.state));
    const [pid] = await replicaPids(dataDir, 'p-bomb');
    let stop = false;
    const others: number[] = [];
    const other = (async () => {
      while (!stop) {
        others.push((await invoke('p-sk-col', { inputs: { a: [1], b: [2] } })).status);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const bomb = await invoke('p-bomb', { inputs: { a: [1] }, params: { action: 'fork', path: '' } });
    assert.ok(bomb.status >= 500, bomb.text);
    const again = await waitFor('a replacement replica', async () => {
      const r = await invoke('p-bomb', { inputs: { a: [1] }, params: { action: '', path: '' } });
      return r.status === 200 ? r : undefined;
    }, 90_000);
    assert.deepEqual(again.json, { predictions: [1] });
    assert.notDeepEqual(await replicaPids(dataDir, 'p-bomb'), [pid]);
    stop = true;
    await other;
    assert.ok(others.length > 0 && others.every((s) => s === 200), `the other endpoint answered ${JSON.stringify(others)}`);
    const served = e.config.served_entities[0].name as string;
    const logs = await call('GET', `/api/2.0/serving-endpoints/p-bomb/served-models/${served}/logs`);
    assert.match(logs.text, /process limit/);
    // The restart is counted under its own reason, not as a crash.
    const restarts = (await call('GET', '/metrics')).text.split('\n').filter((l) => l.startsWith('ferry_replica_restarts_total{') && l.includes('"p-bomb"'));
    assert.ok(restarts.some((l) => /reason="processes"\} [1-9]/.test(l)), restarts.join('\n'));
    assert.ok(restarts.some((l) => /reason="crashed"\} 0$/.test(l)), restarts.join('\n'));
  });

  test("without mlflow, Ferry's own loaders serve sklearn and xgboost; other models name what to install", async () => {
    const serveWith = async (kind: Kind): Promise<{ socket: string; log: string; child: ReturnType<Processes['spawnFerry']> }> => {
      const socket = path.join(dir, `${kind}.sock`);
      const log = path.join(dir, `${kind}.replica.log`);
      const child = procs.spawnFerry([
        'replica', '--socket', socket, '--dir', path.join(models, kind), '--model-file', 'MLmodel', '--flavor', 'python',
        '--name', kind, '--version', '1', '--python', SYSTEM_PYTHON,
      ], { logFile: log });
      return { socket, log, child };
    };
    for (const kind of ['sk_col', 'xgb'] as const) {
      const { socket, log } = await serveWith(kind);
      const body = { dataframe_split: { columns: ['a', 'b'], data: [[1, 0.5], [3, 0.75]] } };
      const got = await waitFor(`${kind} replica`, async () => {
        const r = await request({ socketPath: socket, method: 'POST', path: '/invocations', json: body }).catch(() => undefined);
        return r?.status === 200 ? r : undefined;
      }, 60_000);
      assert.deepEqual(got.json, (await reference(kind, [body]))[0]!.json);
      assert.match(await fsp.readFile(log, 'utf8'), new RegExp(`"loader":"ferry ${kind === 'xgb' ? 'xgboost' : 'sklearn'}"`));
    }
    const { child, log } = await serveWith('custom');
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.notEqual(code, 0);
    assert.match(await fsp.readFile(log, 'utf8'), /needs mlflow: install mlflow==2\.12\.2\.dev0/);
  });
});
