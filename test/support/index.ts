/** Shared test helpers: temp dirs, an in-process server, child processes that always get cleaned up. */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import onnxProto from 'onnx-proto';
import { compileServerConfig } from '../../src/config/index.js';
import { FerryError, type ErrorCode } from '../../src/errors.js';
import { startServer, type FerryServer } from '../../src/server/index.js';
import { descendants, processTree } from '../../src/runtime/local/proc.js';

/** Repository root (tests run from dist/test/...). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const FERRY_BIN = path.join(ROOT, 'bin', 'ferry.js');
export const ADMIN_TOKEN = 'ferry_test_admin_token_0123456789';

export async function tempDir(prefix = 'ferry-test-'): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), prefix));
}

export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await tempDir();
  try {
    return await fn(dir);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

/**
 * Gateway processes of the servers tests start: 1 (one process), unless FERRY_TEST_GATEWAY_WORKERS
 * says otherwise (test/*.workers.test.ts run whole suites again with 2).
 */
export const TEST_GATEWAY_WORKERS = Number(process.env.FERRY_TEST_GATEWAY_WORKERS ?? '1');

/** An in-process server on a free port with a known admin token. */
export async function startTestServer(dataDir: string, overrides: Record<string, unknown> = {}): Promise<FerryServer> {
  return startServer(compileServerConfig({ port: 0, dataDir, gatewayWorkers: TEST_GATEWAY_WORKERS, ...overrides }), { adminToken: ADMIN_TOKEN });
}

export interface HttpResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: any;
}

/** A plain HTTP request (TCP or Unix socket), never throwing on non-2xx. */
export function request(opts: {
  url?: string;
  socketPath?: string;
  method?: string;
  path: string;
  token?: string | null;
  json?: unknown;
  body?: string | Buffer;
  headers?: Record<string, string>;
}): Promise<HttpResult> {
  const body = opts.json !== undefined ? JSON.stringify(opts.json) : opts.body;
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  const token = opts.token === undefined ? ADMIN_TOKEN : opts.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (opts.json !== undefined) headers['content-type'] = 'application/json';
  if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
  const target = opts.url ? new URL(opts.url) : undefined;
  return new Promise((resolve, reject) => {
    const req = http.request({
      ...(opts.socketPath ? { socketPath: opts.socketPath } : { hostname: target?.hostname, port: target?.port }),
      method: opts.method ?? (body === undefined ? 'GET' : 'POST'),
      path: opts.path,
      headers,
      agent: false,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Child processes started by a test; `killAll` in `after`/`finally` leaves no orphans. */
export class Processes {
  private readonly children = new Set<ChildProcess>();

  spawnFerry(args: string[], opts: { env?: Record<string, string>; cwd?: string; logFile?: string } = {}): ChildProcess {
    const out = opts.logFile ? fs.openSync(opts.logFile, 'a') : 'ignore';
    const child = spawn(process.execPath, [FERRY_BIN, ...args], {
      cwd: opts.cwd ?? ROOT,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', out, out],
    });
    if (typeof out === 'number') fs.closeSync(out);
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** Starts `ferry server` on a free port (more `args`, e.g. `--config FILE`) and resolves with its URL once it listens. */
  async startServer(dataDir: string, env: Record<string, string> = {}, args: string[] = []): Promise<{ child: ChildProcess; url: string }> {
    const logFile = path.join(dataDir + '.log');
    await fsp.mkdir(path.dirname(logFile), { recursive: true });
    const child = this.spawnFerry(['server', '--port', '0', '--data-dir', dataDir, '--gateway-workers', String(TEST_GATEWAY_WORKERS), ...args], { env: { FERRY_ADMIN_TOKEN: ADMIN_TOKEN, ...env }, logFile });
    const url = await waitFor('ferry server to listen', async () => {
      if (child.exitCode !== null) throw new Error(`ferry server exited with ${child.exitCode}: ${await fsp.readFile(logFile, 'utf8')}`);
      const text = await fsp.readFile(logFile, 'utf8').catch(() => '');
      return /listening on (http:\/\/\S+)/.exec(text)?.[1];
    });
    await fsp.writeFile(logFile, '');
    return { child, url };
  }

  async killAll(): Promise<void> {
    await Promise.all([...this.children].map((c) => kill(c, 'SIGKILL')));
  }
}

export function kill(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.kill(signal);
  });
}

/** Polls `fn` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Awaits `promise`, asserts it rejects with a FerryError of `code` (and `message`), returns the error. */
export async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<FerryError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof FerryError, `expected a FerryError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected a ${code} rejection`);
}

/**
 * A model that loads and validates like any [-1, 4] model but fails at run time on an odd number
 * of rows: y = Reshape(x, [-1, 8]) needs the element count to be a multiple of 8. Its directory
 * has a one-row input example (valid for the signature, refused by the model).
 */
export async function writeEvenRowsModel(modelDir: string): Promise<void> {
  const T = onnxProto.onnx.TensorProto.DataType;
  await writeTestModel(modelDir, {
    name: 'even-rows',
    input: [{ name: 'x', type: { tensorType: { elemType: T.FLOAT, shape: { dim: [{ dimParam: 'N' }, { dimValue: 4 }] } } } }],
    output: [{ name: 'y', type: { tensorType: { elemType: T.FLOAT, shape: { dim: [{ dimParam: 'M' }, { dimValue: 8 }] } } } }],
    initializer: [{ name: 'shape', dims: [2], dataType: T.INT64, rawData: new Uint8Array(BigInt64Array.of(-1n, 8n).buffer) }],
    node: [{ opType: 'Reshape', domain: '', input: ['x', 'shape'], output: ['y'], name: 'reshape' }],
  });
  await fsp.writeFile(path.join(modelDir, 'input_example.json'), JSON.stringify({ inputs: { x: [[1, 2, 3, 4]] } }));
}

/** Writes `<modelDir>/model.onnx` for a hand-built graph (opset 15, IR 8). */
export async function writeTestModel(modelDir: string, graph: onnxProto.onnx.IGraphProto): Promise<void> {
  const bytes = onnxProto.onnx.ModelProto.encode({ irVersion: 8, producerName: 'ferry-test', opsetImport: [{ domain: '', version: 15 }], graph }).finish();
  await fsp.mkdir(modelDir, { recursive: true });
  await fsp.writeFile(path.join(modelDir, 'model.onnx'), bytes);
}


/** Registers `source` as a new version of `name` (creating the model if needed); asserts READY; returns the version. */
export async function registerVersion(url: string, name: string, source: string): Promise<string> {
  await request({ url, method: 'POST', path: '/api/2.0/mlflow/registered-models/create', json: { name } });
  const r = await request({ url, method: 'POST', path: '/api/2.0/mlflow/model-versions/create', json: { name, source } });
  assert.equal(r.json?.model_version?.status, 'READY', r.text);
  return r.json.model_version.version as string;
}

/** Waits until endpoint `name` has no update in progress; returns it. */
export async function waitSettled(url: string, name: string, timeoutMs = 30_000): Promise<any> {
  return waitFor(`endpoint ${name} to settle`, async () => {
    const r = await request({ url, path: `/api/2.0/serving-endpoints/${name}` });
    return r.json?.state?.config_update === 'IN_PROGRESS' ? undefined : r.json;
  }, timeoutMs);
}

/**
 * Live replica processes of the server whose data directory is `dataDir`, from the local
 * runtime's pid files (idle warm-pool processes are not replicas and are not listed there);
 * `endpoint` keeps only that endpoint's replicas.
 */
export async function replicaPids(dataDir: string, endpoint?: string): Promise<number[]> {
  const pidsDir = path.join(dataDir, 'runtime', 'pids');
  const pids: number[] = [];
  for (const f of await fsp.readdir(pidsDir).catch(() => [] as string[])) {
    if (endpoint !== undefined && !f.startsWith(`${endpoint}.`)) continue;
    const pid = Number((JSON.parse(await fsp.readFile(path.join(pidsDir, f), 'utf8').catch(() => '{}')) as { pid?: number }).pid);
    if (Number.isInteger(pid) && (await fsp.access(`/proc/${pid}`).then(() => true, () => false))) pids.push(pid);
  }
  return pids;
}

/** Every process (replica or warm-pool) whose command line mentions `dataDir`. */
export async function ferryChildren(dataDir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const p of await fsp.readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const cmd = await fsp.readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes('replica') && cmd.includes(dataDir)) pids.push(Number(p));
  }
  return pids;
}

/** `pid` and every process below it (through /proc ppids, as the runtime's memory watchdog walks them). */
export async function processDescendants(pid: number): Promise<number[]> {
  return descendants(pid, await processTree());
}

/**
 * The node process of a replica whose runtime child is `pid`: `pid` itself, or, in the OS
 * sandbox (where the child is bwrap), the node process below it.
 */
export async function replicaNodePid(pid: number): Promise<number> {
  const node = await fsp.realpath(process.execPath);
  for (const p of await processDescendants(pid)) {
    if ((await fsp.readlink(`/proc/${p}/exe`).catch(() => '')) === node) return p;
  }
  throw new Error(`no node process at or below pid ${pid}`);
}

/** Debian's Python, which has the packages the Python tests use (`python3` on PATH may be a shim without them). */
export const SYSTEM_PYTHON = '/usr/bin/python3';

/** Whether `SYSTEM_PYTHON` exists and imports `module`. */
export function pythonImports(module: string): boolean {
  try {
    execFileSync(SYSTEM_PYTHON, ['-c', `import ${module}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The vendored MLflow 2.12 package for tests: FERRY_MLFLOW_PATH, default `../shared/vendor/mlflow` next to the repository. */
export const MLFLOW_PATH = path.resolve(ROOT, process.env.FERRY_MLFLOW_PATH ?? '../shared/vendor/mlflow');

/**
 * A virtualenv in `dir/venv` over `SYSTEM_PYTHON`'s packages that also imports the vendored MLflow
 * (a `.pth` file), as a user's environment with MLflow installed would; returns its interpreter.
 * `dir` is made 0755 so the replica user (nobody, when the tests run as root) reaches it.
 */
export async function mlflowVenv(dir: string): Promise<string> {
  assert.ok(fs.existsSync(path.join(MLFLOW_PATH, 'mlflow', '__init__.py')), `MLflow not found at ${MLFLOW_PATH} (set FERRY_MLFLOW_PATH)`);
  await fsp.chmod(dir, 0o755);
  execFileSync(SYSTEM_PYTHON, ['-m', 'venv', '--system-site-packages', '--without-pip', path.join(dir, 'venv')]);
  const python = path.join(dir, 'venv', 'bin', 'python');
  const site = execFileSync(python, ['-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], { encoding: 'utf8' });
  await fsp.writeFile(path.join(site.trim(), 'vendored-mlflow.pth'), MLFLOW_PATH + '\n');
  return python;
}
