/**
 * Replica isolation, end to end on a real server with two endpoints on different models: each
 * replica runs under Node's permission model (its own model and socket only: no database, no
 * admin token, no other endpoint's artifacts, no child processes), as an unprivileged user when
 * the server is root, behind a socket directory only the server can enter; and a replica that
 * outgrows its memory limit is killed and replaced while the other endpoint and the server go on.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import onnxProto from 'onnx-proto';
import { ADMIN_TOKEN_FILE } from '../src/auth/index.js';
import { compileServerConfig } from '../src/config/index.js';
import { writeFixtures, type FixturePaths } from '../src/fixtures/index.js';
import { LocalRuntime, replicaNodeFlags } from '../src/runtime/local/index.js';
import { startServer, type FerryServer } from '../src/server/index.js';
import { ferryChildren, rejectsWith, replicaNodePid, request, ROOT, tempDir, waitFor, writeTestModel, type HttpResult, TEST_GATEWAY_WORKERS } from './support/index.js';

/** Where `replicaUser`'s default, "nobody", resolves on Debian-like systems (checked in `before`). */
const NOBODY = { uid: 65534, gid: 65534 };
const IS_ROOT = process.getuid?.() === 0;
const NOT_ROOT = 'the tests do not run as root, so replicas keep the server\'s uid and no other uid can be tried';
/**
 * The replica memory limit: a linear replica rests near 120 MiB, so endpoint A's model, asked to
 * fill 150M floats (600 MiB, held by onnxruntime's arena after the run), crosses it for sure, and
 * the whole test stays far below 1.5 GiB.
 */
const MEMORY_LIMIT = '320MiB';
const ALLOC_FLOATS = 150_000_000;
const LIMITS = { maxRowsPerRequest: 5000, maxJsonDepth: 12, maxJsonElements: 777_777 };

let dir: string;
let dataDir: string;
let fx: FixturePaths;
let server: FerryServer;
let token: string;

const call = (method: string, p: string, json?: unknown): Promise<HttpResult> =>
  request({ url: server.url, method, path: p, token, ...(json === undefined ? {} : { json }) });

/**
 * Endpoint A's model: y = [sum(ConstantOfShape(x, 1.0))]. `{"inputs": [n]}` makes onnxruntime fill
 * n floats (n·4 bytes of native memory, out of the V8 heap's reach) and answers [n]; small inputs
 * cost nothing.
 */
async function writeAllocModel(modelDir: string): Promise<void> {
  const { onnx } = onnxProto;
  const T = onnx.TensorProto.DataType;
  await writeTestModel(modelDir, {
    name: 'alloc',
    input: [{ name: 'x', type: { tensorType: { elemType: T.INT64, shape: { dim: [{ dimParam: 'N' }] } } } }],
    output: [{ name: 'y', type: { tensorType: { elemType: T.FLOAT, shape: { dim: [{ dimValue: 1 }] } } } }],
    initializer: [{ name: 'one', dims: [1], dataType: T.INT64, rawData: new Uint8Array(BigInt64Array.of(1n).buffer) }],
    node: [
      { opType: 'ConstantOfShape', input: ['x'], output: ['filled'], attribute: [{ name: 'value', type: onnx.AttributeProto.AttributeType.TENSOR, t: { dims: [1], dataType: T.FLOAT, floatData: [1] } }] },
      { opType: 'ReduceSum', input: ['filled'], output: ['sum'], attribute: [{ name: 'keepdims', type: onnx.AttributeProto.AttributeType.INT, i: 0 }] },
      { opType: 'Reshape', input: ['sum', 'one'], output: ['y'] },
    ],
  });
}

/** The running replica of `endpoint`: pid, socket, command line and private model directory. */
async function replicaOf(endpoint: string): Promise<{ pid: number; socketPath: string; cmd: string[]; modelDir: string; logFile: string }> {
  const pidsDir = path.join(dataDir, 'runtime', 'pids');
  const [file] = (await fsp.readdir(pidsDir)).filter((f) => f.startsWith(`${endpoint}.`));
  assert.ok(file !== undefined, `a pid file for endpoint ${endpoint}`);
  const { pid: childPid, socketPath } = JSON.parse(await fsp.readFile(path.join(pidsDir, file), 'utf8')) as { pid: number; socketPath: string };
  const pid = await replicaNodePid(childPid);
  const cmd = (await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').filter((a) => a !== '');
  const modelsDir = path.join(dataDir, 'runtime', 'models') + path.sep;
  const modelDir = cmd.map((a) => a.replace(/^--allow-fs-read=/, '')).find((p) => p.startsWith(modelsDir));
  assert.ok(modelDir !== undefined, `a readable private model dir on the command line: ${cmd.join(' ')}`);
  const id = file.slice(0, -'.json'.length);
  const logFile = path.join(dataDir, 'runtime', 'logs', endpoint, id.split('.')[1] ?? '', `${id}.log`);
  return { pid, socketPath, cmd, modelDir, logFile };
}

/** Runs `node <args>` and resolves with its exit code and output. */
function runNode(args: string[], opts: { cwd?: string; uid?: number; gid?: number } = {}): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}

/** A script that tries each of `targets` and prints, per target, "ok" or the error code. */
const PROBE = `
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
const [targets, own] = JSON.parse(process.argv[2]);
const attempt = (fn) => { try { fn(); return 'ok'; } catch (e) { return e.code ?? String(e); } };
const result = {};
for (const [name, file] of Object.entries(targets)) result['read ' + name] = attempt(() => fs.readFileSync(file));
result['list artifacts'] = attempt(() => fs.readdirSync(targets.otherArtifact.split('/').slice(0, -1).join('/')));
result['write own dir'] = attempt(() => fs.writeFileSync('written-by-probe', 'x'));
result['write tmp'] = attempt(() => fs.writeFileSync('/tmp/ferry-probe-' + process.pid, 'x'));
result['spawn'] = attempt(() => { const r = spawnSync('true'); if (r.error) throw r.error; });
result['read own model'] = attempt(() => { if (fs.readFileSync(own).length === 0) throw new Error('empty'); });
process.stdout.write(JSON.stringify(result));
`;

before(async () => {
  dir = await tempDir('ferry-iso-');
  dataDir = path.join(dir, 'data');
  fx = await writeFixtures(path.join(dir, 'fixtures'));
  await writeAllocModel(path.join(dir, 'alloc'));
  if (IS_ROOT) assert.match(await fsp.readFile('/etc/passwd', 'utf8'), /^nobody:[^:]*:65534:65534:/m, 'the nobody user these tests expect');
  // No FERRY_ADMIN_TOKEN: the server writes the admin-token file a replica must not read.
  server = await startServer(compileServerConfig({ port: 0, dataDir, replicaMemoryLimit: MEMORY_LIMIT, sandbox: 'bwrap', ...LIMITS , gatewayWorkers: TEST_GATEWAY_WORKERS }), { adminToken: undefined });
  token = server.generatedAdminToken ?? '';
  for (const [endpoint, model, source] of [['a', 'alloc', path.join(dir, 'alloc')], ['b', 'two', fx.twoInput]] as const) {
    await call('POST', '/api/2.0/mlflow/registered-models/create', { name: model });
    const v = await call('POST', '/api/2.0/mlflow/model-versions/create', { name: model, source });
    assert.equal(v.json?.model_version?.status, 'READY', v.text);
    const r = await call('POST', '/api/2.0/serving-endpoints', { name: endpoint, config: { served_entities: [{ entity_name: model, entity_version: '1' }] } });
    assert.equal(r.status, 200, r.text);
  }
  for (const name of ['a', 'b']) {
    const e = await waitFor(`endpoint ${name} to settle`, async () => {
      const r = await call('GET', `/api/2.0/serving-endpoints/${name}`);
      return r.json?.state?.config_update === 'IN_PROGRESS' ? undefined : r.json as { state: { ready: string } };
    }, 60_000);
    assert.equal(e.state.ready, 'READY', JSON.stringify(e));
  }
});

after(async () => {
  await server?.close();
  assert.deepEqual(await ferryChildren(dataDir), [], 'no replica or pool process outlives the server');
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('replica isolation', () => {
  test('a replica runs unprivileged, under the permission flags, from a private copy of its own model', async (t) => {
    const a = await replicaOf('a');
    const uids = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$/m.exec(await fsp.readFile(`/proc/${a.pid}/status`, 'utf8'))?.slice(1).map(Number);
    if (IS_ROOT) assert.deepEqual(uids, Array(4).fill(NOBODY.uid), 'real, effective, saved and fs uid all dropped');
    else t.diagnostic(`uid not checked: ${NOT_ROOT}`);

    assert.ok(a.cmd.includes('--experimental-permission'), a.cmd.join(' '));
    const reads = a.cmd.filter((x) => x.startsWith('--allow-fs-read=')).map((x) => x.slice('--allow-fs-read='.length));
    const writes = a.cmd.filter((x) => x.startsWith('--allow-fs-write=')).map((x) => x.slice('--allow-fs-write='.length));
    assert.deepEqual(writes, [a.socketPath], 'writes: its socket only');
    const code = ['dist', 'bin', 'node_modules', 'package.json', 'python'].map((p) => path.join(ROOT, p));
    const realCode = await Promise.all(code.map((p) => fsp.realpath(p)));
    assert.deepEqual(reads.filter((p) => ![...code, ...realCode, a.modelDir, a.socketPath].includes(p)), [], 'reads: Ferry\'s code, its model dir and socket');
    assert.ok(!a.cmd.some((x) => /^--allow-(child-process|wasi)/.test(x)), a.cmd.join(' '));
    const flags = replicaNodeFlags({ modelDir: a.modelDir, socketPath: a.socketPath });
    assert.deepEqual(a.cmd.slice(1, 1 + flags.length), flags, 'the flags the runtime exports are the ones it uses');

    const staged = await fsp.readFile(path.join(a.modelDir, 'model.onnx'));
    assert.deepEqual(staged, await fsp.readFile(path.join(dir, 'alloc', 'model.onnx')));
    // In the sandbox a root server's replica is the replica user from its start and must traverse
    // its model directory; the 0700 data directory keeps everyone else out (next test).
    assert.equal((await fsp.stat(a.modelDir)).mode & 0o777, IS_ROOT ? 0o755 : 0o700);

    const ready = (await fsp.readFile(a.logFile, 'utf8')).split('\n').filter((l) => l.includes('"replica ready"')).map((l) => JSON.parse(l) as Record<string, unknown>).at(-1);
    assert.equal(ready?.uid, IS_ROOT ? NOBODY.uid : process.getuid?.());
    assert.deepEqual({ maxRowsPerRequest: ready?.maxRowsPerRequest, maxJsonDepth: ready?.maxJsonDepth, maxJsonElements: ready?.maxJsonElements }, LIMITS,
      'the server\'s input limits reached the replica');
  });

  test('code in a replica\'s model dir, run with the replica\'s flags, reaches only its own model', async (t) => {
    const a = await replicaOf('a');
    const otherArtifact = await findFile(path.join(dataDir, 'artifacts'), path.basename(fx.twoInput));
    const targets = { db: path.join(dataDir, 'ferry.db'), adminToken: path.join(dataDir, ADMIN_TOKEN_FILE), otherArtifact };
    for (const file of Object.values(targets)) await fsp.access(file); // they exist: a denial is not a missing file
    const probe = path.join(a.modelDir, 'probe.mjs');
    await fsp.writeFile(probe, PROBE);
    try {
      const run = await runNode([...replicaNodeFlags({ modelDir: a.modelDir, socketPath: path.join(dir, 'probe.sock') }), probe, JSON.stringify([targets, path.join(a.modelDir, 'model.onnx')])], { cwd: a.modelDir });
      assert.equal(run.code, 0, run.out);
      assert.deepEqual(JSON.parse(run.out), {
        'read db': 'ERR_ACCESS_DENIED', 'read adminToken': 'ERR_ACCESS_DENIED', 'read otherArtifact': 'ERR_ACCESS_DENIED',
        'list artifacts': 'ERR_ACCESS_DENIED', 'write own dir': 'ERR_ACCESS_DENIED', 'write tmp': 'ERR_ACCESS_DENIED',
        spawn: 'ERR_ACCESS_DENIED', 'read own model': 'ok',
      });
    } finally {
      await fsp.rm(probe, { force: true });
    }

    // The OS denies the same files to the dropped uid, whatever JavaScript or native code tries:
    // the same probe without the permission model, as that user, from a directory it can read.
    if (!IS_ROOT) return void t.diagnostic(`OS-level denial not checked: ${NOT_ROOT}`);
    const open = await fsp.mkdtemp(path.join(os.tmpdir(), 'ferry-probe-'));
    try {
      await fsp.chmod(open, 0o755);
      await fsp.writeFile(path.join(open, 'probe.mjs'), PROBE, { mode: 0o644 });
      const run = await runNode([path.join(open, 'probe.mjs'), JSON.stringify([targets, path.join(a.modelDir, 'model.onnx')])], { cwd: open, ...NOBODY });
      assert.equal(run.code, 0, run.out);
      const result = JSON.parse(run.out) as Record<string, string>;
      for (const key of ['read db', 'read adminToken', 'read otherArtifact', 'list artifacts', 'read own model']) assert.equal(result[key], 'EACCES', `${key}: ${run.out}`);
    } finally {
      await fsp.rm(open, { recursive: true, force: true });
    }
  });

  test('the socket directory is 0700 and another uid cannot connect to a replica', async (t) => {
    const a = await replicaOf('a');
    assert.equal((await fsp.stat(path.dirname(a.socketPath))).mode & 0o777, 0o700);
    if (!IS_ROOT) return void t.diagnostic(`connecting as another uid not tried: ${NOT_ROOT}`);
    const connector = `require('node:net').connect(${JSON.stringify(a.socketPath)}).on('connect', () => { console.log('connected'); process.exit(0); }).on('error', (e) => console.log(e.code));`;
    const run = await runNode(['-e', connector], { cwd: '/', ...NOBODY });
    assert.equal(run.out.trim(), 'EACCES');
    // The server itself still can (the replica answers through it).
    assert.equal((await call('POST', '/serving-endpoints/a/invocations', { inputs: [3] })).json?.predictions?.[0], 3);
  });

  test('a replica over its memory limit is killed and replaced; the other endpoint and the server carry on', { timeout: 120_000 }, async (t) => {
    const before = await replicaOf('a');
    let stop = false;
    const failures: string[] = [];
    let answered = 0;
    const otherEndpoint = (async () => {
      while (!stop) {
        const r = await call('POST', '/serving-endpoints/b/invocations', { inputs: { a: [[1, 2]], b: [[3, 4]] } });
        if (r.status === 200) answered++;
        else failures.push(`${r.status} ${r.text}`);
      }
    })();
    try {
      // Whether this request is answered (200) or cut (502) depends on when the watchdog looks
      // (every second); the kill follows either way, and is what this test checks.
      const big = await call('POST', '/serving-endpoints/a/invocations', { inputs: [ALLOC_FLOATS] });
      t.diagnostic(`the allocating request: ${big.status}`);
      await waitFor('the log to record the memory kill', async () => (/replica killed: over its memory limit/.test(await fsp.readFile(before.logFile, 'utf8')) ? true : undefined), 30_000);
      const after = await waitFor('a new replica of a', async () => {
        const r = await replicaOf('a').catch(() => undefined);
        return r !== undefined && r.pid !== before.pid ? r : undefined;
      }, 60_000);
      const again = await waitFor('a to answer again', async () => {
        const r = await call('POST', '/serving-endpoints/a/invocations', { inputs: [5] });
        return r.status === 200 ? r : undefined;
      }, 60_000);
      assert.deepEqual(again.json, { predictions: [5] });
      assert.notEqual(after.modelDir, before.modelDir, 'the new replica has its own private model dir');
      await assert.rejects(fsp.access(before.modelDir), 'the killed replica\'s private model dir is gone');
    } finally {
      stop = true;
      await otherEndpoint;
    }
    assert.deepEqual(failures, [], 'endpoint b answered every request');
    assert.ok(answered > 0);
    assert.equal((await call('GET', '/v2/health/live')).status, 200, 'the server is alive');
  });
});

describe('replicaUser', () => {
  const open = (stateDir: string, replicaUser: string): Promise<LocalRuntime> =>
    LocalRuntime.open({ stateDir, startTimeoutMs: 30_000, drainTimeoutMs: 2000, warmPoolSize: 0, replicaUser });

  test('a user name that does not exist, or root, is refused at start, naming the key and value', { skip: IS_ROOT ? false : NOT_ROOT }, async () => {
    await rejectsWith(open(path.join(dir, 'rt-bad'), 'no-such-user-here'), 'INVALID_PARAMETER_VALUE', /'no-such-user-here' for 'replicaUser': no such user in \/etc\/passwd/);
    await rejectsWith(open(path.join(dir, 'rt-root'), 'root'), 'INVALID_PARAMETER_VALUE', /'root' for 'replicaUser'.*must not run as root/);
    await rejectsWith(open(path.join(dir, 'rt-zero'), '0:0'), 'INVALID_PARAMETER_VALUE', /'0:0' for 'replicaUser'/);
  });

  test('"uid:gid" needs no passwd entry: the replica runs as exactly those ids', { skip: IS_ROOT ? false : NOT_ROOT }, async () => {
    const rt = await open(path.join(dir, 'rt-numeric'), '12345:23456');
    try {
      const h = await rt.startReplica({
        id: 'n.linear.1', endpoint: 'n', servedEntity: 'linear', artifactDir: fx.dir, modelFile: path.basename(fx.linear), flavor: 'onnx', workloadType: 'CPU',
        modelName: 'linear', modelVersion: '1', memoryLimitBytes: 1024 * 1024 * 1024, maxBodyBytes: 1024 * 1024, ...LIMITS,
        batching: { enabled: true, maxBatchSize: 64, maxQueueDelayUs: 0, preferredBatchSizes: [] },
      });
      const status = await fsp.readFile(`/proc/${await replicaNodePid(h.pid ?? 0)}/status`, 'utf8');
      assert.match(status, /^Uid:\s+12345\s+12345\s+12345\s+12345$/m);
      assert.match(status, /^Gid:\s+23456\s+23456\s+23456\s+23456$/m);
      assert.match(status, /^Groups:\s*$/m, 'no supplementary groups (root\'s are dropped)');
    } finally {
      await rt.close();
    }
  });
});

/** The first file named `name` under `root`. */
async function findFile(root: string, name: string): Promise<string> {
  for (const entry of await fsp.readdir(root, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name === name) return path.join(entry.parentPath, entry.name);
  }
  throw new Error(`no ${name} under ${root}`);
}
