/**
 * The local runtime: the runtime contract, plus what only child processes have — a scrubbed
 * environment, a 0700 socket directory, the memory watchdog, orphan cleanup after a server crash,
 * replicas that exit with their server, and the start deadline. Real replicas, real sockets.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FerryError } from '../src/errors.js';
import { writeFixtures, type FixturePaths } from '../src/fixtures/index.js';
import type { ReplicaExit, ReplicaSpec } from '../src/runtime/index.js';
import { LocalRuntime, type LocalRuntimeOptions } from '../src/runtime/local/index.js';
import { requestReplica, runtimeContract, type RuntimeHarness } from './contract/runtime.js';
import { kill, Processes, request, tempDir, waitFor } from './support/index.js';

const MIB = 1024 * 1024;
let root: string;
let fx: FixturePaths;
let brokenDir: string;
const procs = new Processes();

before(async () => {
  root = await tempDir('ferry-rt-');
  fx = await writeFixtures(path.join(root, 'fixtures'));
  brokenDir = path.join(root, 'broken');
  await fsp.mkdir(brokenDir);
  await fsp.writeFile(path.join(brokenDir, 'model.onnx'), Buffer.from('this is not an onnx model \x00\x01\x02\xff'.repeat(20), 'latin1'));
});

after(async () => {
  await procs.killAll();
  await fsp.rm(root, { recursive: true, force: true });
});

function makeSpec(id: string, model: 'linear' | 'broken', overrides: Partial<ReplicaSpec> = {}): ReplicaSpec {
  return {
    id, endpoint: 'ep', servedEntity: 'linear',
    artifactDir: model === 'linear' ? fx.dir : brokenDir, modelFile: model === 'linear' ? 'linear.onnx' : 'model.onnx',
    flavor: 'onnx', workloadType: 'CPU', modelName: 'linear', modelVersion: '1',
    memoryLimitBytes: 1024 * MIB, maxBodyBytes: 16 * MIB, batching: { enabled: true, maxBatchSize: 64, maxQueueDelayUs: 0, preferredBatchSizes: [] },
    ...overrides,
  };
}

let stateDirs = 0;
async function newStateDir(): Promise<string> {
  const dir = path.join(root, `state${++stateDirs}`);
  await fsp.mkdir(dir);
  return dir;
}

async function openRuntime(stateDir: string, opts: Partial<LocalRuntimeOptions> = {}): Promise<LocalRuntime> {
  return LocalRuntime.open({ stateDir, startTimeoutMs: 30_000, drainTimeoutMs: 2000, ...opts });
}

runtimeContract('local', async (): Promise<RuntimeHarness> => {
  const stateDir = await newStateDir();
  const runtime = await openRuntime(stateDir);
  return {
    runtime,
    makeSpec,
    crash: async (handle) => {
      assert.ok(handle.pid !== undefined);
      process.kill(handle.pid, 'SIGKILL');
    },
    cleanup: async () => {
      await runtime.close();
      assert.deepEqual(await processesUnder(stateDir), [], 'no replica outlives its runtime');
      await fsp.rm(stateDir, { recursive: true, force: true });
    },
  };
});

/** Live processes whose command line mentions `dir` (replicas put their socket path there). */
async function processesUnder(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await fsp.readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const cmd = await fsp.readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes(dir) && await isRunning(Number(name))) pids.push(Number(name));
  }
  return pids;
}

/** Alive and not a zombie (a reparented replica may never be reaped inside a container). */
async function isRunning(pid: number): Promise<boolean> {
  const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (stat === undefined) return false;
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

/** Runs `fn` with a fresh runtime, and always closes it and checks nothing is left running. */
async function withRuntime(opts: Partial<LocalRuntimeOptions>, fn: (rt: LocalRuntime, stateDir: string, exits: ReplicaExit[]) => Promise<void>): Promise<void> {
  const stateDir = await newStateDir();
  const rt = await openRuntime(stateDir, opts);
  const exits: ReplicaExit[] = [];
  rt.onExit((e) => exits.push(e));
  try {
    await fn(rt, stateDir, exits);
  } finally {
    await rt.close();
  }
  assert.deepEqual(await processesUnder(stateDir), [], 'nothing left running');
}

describe('LocalRuntime', () => {
  test('files: socket dir 0700, socket 0600, pid file while running; start-to-ready time', { timeout: 60_000 }, async (t) => {
    await withRuntime({}, async (rt, stateDir) => {
      const startedMs = performance.now();
      const handle = await rt.startReplica(makeSpec('ep.linear.files', 'linear'));
      const readyMs = performance.now() - startedMs;
      t.diagnostic(`spawn to ready (linear.onnx): ${readyMs.toFixed(0)} ms`);
      assert.equal((await fsp.stat(path.join(stateDir, 'sockets'))).mode & 0o777, 0o700);
      assert.deepEqual(handle.address, { kind: 'unix', socketPath: path.join(stateDir, 'sockets', 'ep.linear.files.sock') });
      assert.equal((await fsp.stat(path.join(stateDir, 'sockets', 'ep.linear.files.sock'))).mode & 0o777, 0o600);
      const pidFile = JSON.parse(await fsp.readFile(path.join(stateDir, 'pids', 'ep.linear.files.json'), 'utf8'));
      assert.equal(pidFile.pid, handle.pid);
      assert.equal(pidFile.socketPath, path.join(stateDir, 'sockets', 'ep.linear.files.sock'));
      assert.equal(typeof pidFile.startedMs, 'number');
      assert.ok(fs.existsSync(path.join(stateDir, 'logs', 'ep', 'linear', 'ep.linear.files.log')));
      await rt.stopReplica(handle.id);
      assert.deepEqual(await fsp.readdir(path.join(stateDir, 'pids')), []);
      assert.deepEqual(await fsp.readdir(path.join(stateDir, 'sockets')), []);
      assert.match(await rt.logs('ep', 'linear', 10_000), /draining/, 'SIGTERM made it drain');
    });
  });

  test('the replica\'s environment is scrubbed of the server\'s secrets', { timeout: 60_000 }, async () => {
    const secrets = ['FERRY_ADMIN_TOKEN', 'FERRY_DATABASE_URL', 'AWS_SECRET_ACCESS_KEY'];
    process.env.FERRY_ADMIN_TOKEN = 'ferry_secret_admin_token';
    process.env.FERRY_DATABASE_URL = 'postgres://user:pw@db/ferry';
    process.env.AWS_SECRET_ACCESS_KEY = 'aws-secret';
    try {
      await withRuntime({}, async (rt) => {
        const handle = await rt.startReplica(makeSpec('ep.linear.env', 'linear'));
        const environ = (await fsp.readFile(`/proc/${handle.pid}/environ`, 'utf8')).split('\0').filter(Boolean);
        const keys = environ.map((kv) => kv.slice(0, kv.indexOf('=')));
        assert.ok(keys.includes('PATH'), keys.join(' '));
        for (const secret of secrets) assert.ok(!keys.includes(secret), secret);
        assert.ok(!environ.join('\n').includes('secret'), 'no secret value under any name');
        const allowed = new Set(['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'NODE_OPTIONS', 'TMPDIR', 'LD_LIBRARY_PATH', 'CUDA_VISIBLE_DEVICES', 'NODE_CHANNEL_FD', 'NODE_CHANNEL_SERIALIZATION_MODE']);
        assert.deepEqual(keys.filter((k) => !allowed.has(k)), []);
      });
    } finally {
      for (const secret of secrets) delete process.env[secret];
    }
  });

  test('an id too long for a Unix socket path gets a short hashed socket name', { timeout: 60_000 }, async () => {
    await withRuntime({}, async (rt) => {
      const id = `ep.linear.${'x'.repeat(150)}`;
      const handle = await rt.startReplica(makeSpec(id, 'linear'));
      assert.equal(handle.address.kind, 'unix');
      const socketPath = handle.address.kind === 'unix' ? handle.address.socketPath : '';
      assert.ok(Buffer.byteLength(socketPath) <= 107, socketPath);
      assert.match(path.basename(socketPath), /^[0-9a-f]{16}\.sock$/);
      assert.equal((await requestReplica(handle.address, '/v2/health/ready')).status, 200);
    });
  });

  test('ids and names that are not safe file names are refused', { timeout: 60_000 }, async () => {
    await withRuntime({}, async (rt) => {
      for (const bad of [{ id: '../x' }, { id: '.hidden' }, { endpoint: 'a/b' }, { servedEntity: '..' }]) {
        await assert.rejects(rt.startReplica(makeSpec('ok', 'linear', bad)), (err: unknown) => err instanceof FerryError && err.code === 'INVALID_PARAMETER_VALUE');
      }
      assert.deepEqual(rt.list(), []);
    });
  });

  test('a replica over its memory limit while loading is killed and the start fails', { timeout: 60_000 }, async () => {
    // A Node process alone is far above 30 MiB resident at once.
    await withRuntime({ memoryPollMs: 20 }, async (rt, _stateDir, exits) => {
      await assert.rejects(rt.startReplica(makeSpec('ep.linear.tiny', 'linear', { memoryLimitBytes: 30 * MIB })), (err: unknown) => {
        assert.ok(err instanceof FerryError);
        assert.equal(err.code, 'MODEL_ERROR');
        assert.match(err.message, /exceeded its limit of 30 MiB/);
        return true;
      });
      assert.deepEqual(rt.list(), []);
      assert.deepEqual(exits, []);
      assert.match(await rt.logs('ep', 'linear', 10_000), /replica killed: over its memory limit/);
    });
  });

  test('a ready replica that grows over its memory limit is killed and reported as oom', { timeout: 60_000 }, async () => {
    // A linear.onnx replica rests at about 120 MiB; a request body streamed into it grows it
    // (body chunks are buffered outside the V8 heap) until the watchdog kills it at 256 MiB.
    await withRuntime({ memoryPollMs: 50 }, async (rt, _stateDir, exits) => {
      const handle = await rt.startReplica(makeSpec('ep.linear.oom', 'linear', { memoryLimitBytes: 256 * MIB, maxBodyBytes: 1024 * MIB }));
      const socketPath = handle.address.kind === 'unix' ? handle.address.socketPath : '';
      const req = http.request({ socketPath, method: 'POST', path: '/invocations', agent: false, headers: { 'content-type': 'application/json', 'content-length': String(1024 * MIB) } });
      req.on('error', () => undefined);
      const chunk = Buffer.alloc(MIB, 0x20);
      for (let sentBytes = 0; sentBytes < 1024 * MIB && exits.length === 0 && !req.destroyed; sentBytes += MIB) {
        if (req.write(chunk)) continue;
        await new Promise<void>((resolve) => {
          const done = (): void => { req.off('drain', done); req.off('close', done); resolve(); };
          req.on('drain', done).on('close', done);
        });
      }
      req.destroy();
      const [exit] = await waitFor('oom report', () => (exits.length > 0 ? exits : undefined));
      assert.equal(exit?.reason, 'oom');
      assert.equal(exit?.signal, 'SIGKILL');
      assert.match(exit?.lastLogLines ?? '', /replica killed: over its memory limit/);
      assert.deepEqual(rt.list(), []);
    });
  });

  test('stopReplica kills a replica that does not stop within the drain timeout', { timeout: 60_000 }, async () => {
    await withRuntime({ drainTimeoutMs: 100 }, async (rt, _stateDir, exits) => {
      const handle = await rt.startReplica(makeSpec('ep.linear.hung', 'linear'));
      process.kill(handle.pid!, 'SIGSTOP'); // a hung replica: SIGTERM stays pending
      const startedMs = Date.now();
      await rt.stopReplica(handle.id);
      const tookMs = Date.now() - startedMs;
      assert.ok(tookMs >= 100 && tookMs < 5000, `stop took ${tookMs} ms`);
      assert.equal(await isRunning(handle.pid!), false);
      assert.deepEqual(exits, []);
    });
  });

  test('a replica stopped while it starts makes startReplica reject', { timeout: 60_000 }, async () => {
    await withRuntime({}, async (rt, stateDir) => {
      const starting = rt.startReplica(makeSpec('ep.linear.early', 'linear'));
      await waitFor('pid file', () => (fs.existsSync(path.join(stateDir, 'pids', 'ep.linear.early.json')) ? true : undefined));
      await rt.stopReplica('ep.linear.early');
      await assert.rejects(starting, (err: unknown) => err instanceof FerryError && err.code === 'TEMPORARILY_UNAVAILABLE');
      assert.deepEqual(rt.list(), []);
    });
  });

  test('the start deadline kills the replica and leaves nothing behind', { timeout: 60_000 }, async () => {
    await withRuntime({ startTimeoutMs: 1 }, async (rt, stateDir) => {
      await assert.rejects(rt.startReplica(makeSpec('ep.linear.slow', 'linear')), (err: unknown) => err instanceof FerryError && err.code === 'DEADLINE_EXCEEDED');
      assert.deepEqual(rt.list(), []);
      assert.deepEqual(await processesUnder(stateDir), []);
      assert.deepEqual(await fsp.readdir(path.join(stateDir, 'pids')), []);
      assert.deepEqual(await fsp.readdir(path.join(stateDir, 'sockets')), []);
    });
  });

  test('open kills replicas a crashed server left behind, and only those', { timeout: 60_000 }, async () => {
    const stateDir = await newStateDir();
    for (const d of ['sockets', 'pids']) await fsp.mkdir(path.join(stateDir, d));
    const socketPath = path.join(stateDir, 'sockets', 'orphan.sock');
    const orphan = procs.spawnFerry(['replica', '--socket', socketPath, '--dir', fx.dir, '--model-file', 'linear.onnx', '--name', 'linear', '--version', '1']);
    const bystander = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    try {
      await waitFor('orphan ready', async () => ((await request({ socketPath, path: '/v2/health/ready', token: null }).catch(() => undefined))?.status === 200 ? true : undefined));
      await fsp.writeFile(path.join(stateDir, 'pids', 'orphan.json'), JSON.stringify({ pid: orphan.pid, socketPath, startedMs: Date.now() }));
      // A pid reused by an unrelated process must survive; a torn pid file is just removed.
      await fsp.writeFile(path.join(stateDir, 'pids', 'reused.json'), JSON.stringify({ pid: bystander.pid, socketPath: path.join(stateDir, 'sockets', 'reused.sock'), startedMs: 1 }));
      await fsp.writeFile(path.join(stateDir, 'pids', 'torn.json'), '{"pid": 12');

      const rt = await openRuntime(stateDir);
      try {
        assert.equal(await waitFor('orphan killed', () => orphan.signalCode ?? undefined, 5000), 'SIGKILL');
        assert.equal(await isRunning(bystander.pid!), true);
        assert.deepEqual(await fsp.readdir(path.join(stateDir, 'pids')), []);
        assert.deepEqual(await fsp.readdir(path.join(stateDir, 'sockets')), []);
      } finally {
        await rt.close();
      }
    } finally {
      await kill(bystander, 'SIGKILL');
    }
  });

  test('a replica exits when the server that started it dies (kill -9)', { timeout: 60_000 }, async () => {
    const stateDir = await newStateDir();
    const runtimeModule = new URL('../src/runtime/local/index.js', import.meta.url).href;
    const script = `
      const { LocalRuntime } = await import(${JSON.stringify(runtimeModule)});
      const rt = await LocalRuntime.open({ stateDir: ${JSON.stringify(stateDir)}, startTimeoutMs: 30000, drainTimeoutMs: 1000 });
      const handle = await rt.startReplica(${JSON.stringify(makeSpec('ep.linear.lifeline', 'linear'))});
      process.stdout.write(JSON.stringify({ pid: handle.pid }) + '\\n');
      setInterval(() => {}, 60000);
    `;
    const server = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let replicaPid: number | undefined;
    try {
      let out = '';
      server.stdout.on('data', (c: Buffer) => { out += c.toString(); });
      replicaPid = await waitFor('replica pid from the server', () => (out.includes('\n') ? (JSON.parse(out) as { pid: number }).pid : undefined), 30_000);
      assert.equal(await isRunning(replicaPid), true);
      await kill(server, 'SIGKILL');
      const pid = replicaPid;
      await waitFor('replica to exit', async () => ((await isRunning(pid)) ? undefined : true), 10_000);
      assert.match(await fsp.readFile(path.join(stateDir, 'logs', 'ep', 'linear', 'ep.linear.lifeline.log'), 'utf8'), /server disconnected; draining/);
    } finally {
      await kill(server, 'SIGKILL');
      if (replicaPid !== undefined && await isRunning(replicaPid)) process.kill(replicaPid, 'SIGKILL');
    }
  });
});
