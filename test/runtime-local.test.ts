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
import type { Socket } from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ControlDecoder, encodeControlFrame } from '../src/channel/index.js';
import { FerryError } from '../src/errors.js';
import { writeFixtures, type FixturePaths } from '../src/fixtures/index.js';
import type { ReplicaExit, ReplicaSpec } from '../src/runtime/index.js';
import { LocalRuntime, type LocalRuntimeOptions } from '../src/runtime/local/index.js';
import { requestReplica, runtimeContract, type RuntimeHarness } from './contract/runtime.js';
import { FERRY_BIN, kill, processDescendants, Processes, replicaNodePid, request, tempDir, waitFor } from './support/index.js';

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
    memoryLimitBytes: 1024 * MIB, maxBodyBytes: 16 * MIB, maxRowsPerRequest: 100_000, maxJsonDepth: 64, maxJsonElements: 4_194_304,
    batching: { enabled: true, maxBatchSize: 64, maxQueueDelayUs: 0, preferredBatchSizes: [] },
    ...overrides,
  };
}

let stateDirs = 0;
async function newStateDir(): Promise<string> {
  const dir = path.join(root, `state${++stateDirs}`);
  await fsp.mkdir(dir);
  return dir;
}

/**
 * Pool processes are started for the memory limit `makeSpec` gives (1 GiB), so its specs claim
 * them. Replicas drop to "nobody" as the server's would (when the tests run as root).
 */
async function openRuntime(stateDir: string, opts: Partial<LocalRuntimeOptions> = {}): Promise<LocalRuntime> {
  return LocalRuntime.open({ stateDir, startTimeoutMs: 30_000, drainTimeoutMs: 2000, warmPoolMemoryLimitBytes: 1024 * MIB, replicaUser: 'nobody', ...opts });
}

/** Waits until `rt`'s pool has `n` idle processes; returns their pids. */
async function poolIdle(rt: LocalRuntime, n = 1): Promise<number[]> {
  return waitFor(`${n} idle pool process(es)`, () => {
    const { idlePids } = rt.warmPool();
    return idlePids.length === n ? idlePids : undefined;
  }, 30_000);
}

function localHarness(warmPoolSize: number): () => Promise<RuntimeHarness> {
  return async () => {
    const stateDir = await newStateDir();
    const runtime = await openRuntime(stateDir, { warmPoolSize });
    const cleanup = async (): Promise<void> => {
      await runtime.close();
      assert.deepEqual(await processesUnder(stateDir), [], 'no replica or pool process outlives its runtime');
      await fsp.rm(stateDir, { recursive: true, force: true });
    };
    if (warmPoolSize > 0) {
      try {
        await poolIdle(runtime, warmPoolSize);
      } catch (err) {
        await cleanup();
        throw err;
      }
    }
    return {
      runtime,
      makeSpec,
      crash: async (handle) => {
        assert.ok(handle.pid !== undefined);
        process.kill(handle.pid, 'SIGKILL');
      },
      cleanup,
      ...(warmPoolSize > 0 ? { idlePoolProcesses: () => runtime.warmPool().idlePids.length } : {}),
    };
  };
}

// Every replica spawned (the behaviour without a pool), and every first start claimed from a full pool.
runtimeContract('local, no warm pool', localHarness(0));
runtimeContract('local, warm pool of 1', localHarness(1), { warmPool: true });

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

/** Pids of pool processes that `rt` runs (idle or starting). */
function poolPids(rt: LocalRuntime): number[] {
  const { idlePids, startingPids } = rt.warmPool();
  return [...idlePids, ...startingPids];
}

/** Both warm pools' processes: node replicas-to-be and Python fork servers, idle or starting. */
async function allPoolPids(rt: LocalRuntime): Promise<number[]> {
  const python = await rt.pythonWarmPool();
  return [...poolPids(rt), ...python.idlePids, ...python.startingPids];
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
  const left = await processesUnder(stateDir);
  assert.deepEqual(left, [], `nothing left running: ${(await Promise.all(left.map((p) => fsp.readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '?')))).join('\n').replaceAll('\0', ' ')}`);
}

describe('LocalRuntime', () => {
  test('files: socket dir 0700, socket 0600, pid file while running; start-to-ready time', { timeout: 60_000 }, async (t) => {
    // No pool: a claimed replica uses its pool process's socket, named when that process started.
    await withRuntime({ warmPoolSize: 0 }, async (rt, stateDir) => {
      const startedMs = performance.now();
      const handle = await rt.startReplica(makeSpec('ep.linear.files', 'linear'));
      const readyMs = performance.now() - startedMs;
      t.diagnostic(`spawn to ready (linear.onnx): ${readyMs.toFixed(0)} ms`);
      assert.equal((await fsp.stat(path.join(stateDir, 'sockets'))).mode & 0o777, 0o700);
      // A directory per replica process: the sandbox binds exactly its own.
      const socketPath = path.join(stateDir, 'sockets', 'ep.linear.files', 'replica.sock');
      assert.deepEqual(handle.address, { kind: 'unix', socketPath });
      assert.equal((await fsp.stat(path.dirname(socketPath))).mode & 0o777, 0o700);
      assert.equal((await fsp.stat(socketPath)).mode & 0o777, 0o600);
      const pidFile = JSON.parse(await fsp.readFile(path.join(stateDir, 'pids', 'ep.linear.files.json'), 'utf8'));
      assert.equal(pidFile.pid, handle.pid);
      assert.equal(pidFile.socketPath, socketPath);
      assert.equal(typeof pidFile.startedMs, 'number');
      assert.ok(fs.existsSync(path.join(stateDir, 'logs', 'ep', 'linear', 'ep.linear.files.log')));
      assert.equal((await fsp.stat(path.join(stateDir, 'models'))).mode & 0o777, 0o700);
      const [modelDir] = await fsp.readdir(path.join(stateDir, 'models'));
      assert.match(modelDir ?? '', /^ep\.linear\.files-[0-9a-f]{8}$/);
      assert.deepEqual(await fsp.readdir(path.join(stateDir, 'models', modelDir ?? '')), await fsp.readdir(fx.dir), 'the whole artifact dir is staged');
      await rt.stopReplica(handle.id);
      assert.deepEqual(await fsp.readdir(path.join(stateDir, 'pids')), []);
      assert.deepEqual(await fsp.readdir(path.join(stateDir, 'sockets')), []);
      assert.deepEqual(await fsp.readdir(path.join(stateDir, 'models')), [], 'the private model dir goes with the replica');
      assert.match(await rt.logs('ep', 'linear', 10_000), /draining/, 'the drain message made it drain');
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
        const environ = (await fsp.readFile(`/proc/${await replicaNodePid(handle.pid ?? 0)}/environ`, 'utf8')).split('\0').filter(Boolean);
        const keys = environ.map((kv) => kv.slice(0, kv.indexOf('=')));
        assert.ok(keys.includes('PATH'), keys.join(' '));
        for (const secret of secrets) assert.ok(!keys.includes(secret), secret);
        assert.ok(!environ.join('\n').includes('secret'), 'no secret value under any name');
        const allowed = new Set(['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'NODE_OPTIONS', 'TMPDIR', 'LD_LIBRARY_PATH', 'CUDA_VISIBLE_DEVICES', 'PWD']); // bwrap sets PWD (its --chdir)
        assert.deepEqual(keys.filter((k) => !allowed.has(k)), []);
      });
    } finally {
      for (const secret of secrets) delete process.env[secret];
    }
  });

  test('an id too long for a Unix socket path gets a short hashed socket name', { timeout: 60_000 }, async () => {
    await withRuntime({ warmPoolSize: 0 }, async (rt) => {
      const id = `ep.linear.${'x'.repeat(150)}`;
      const handle = await rt.startReplica(makeSpec(id, 'linear'));
      assert.equal(handle.address.kind, 'unix');
      const socketPath = handle.address.kind === 'unix' ? handle.address.socketPath : '';
      assert.ok(Buffer.byteLength(socketPath) <= 107, socketPath);
      assert.match(path.relative(path.dirname(path.dirname(socketPath)), socketPath), /^[0-9a-f]{16}\/replica\.sock$/);
      assert.equal((await requestReplica(handle.address, '/v2/health/ready')).status, 200);
    });
  });

  test('without a sandbox a replica that runs user code is refused, naming the setting, unless allowed', { timeout: 60_000 }, async () => {
    const js = makeSpec('ep.js.1', 'linear', { flavor: 'js', modelFile: 'model.mjs' });
    await withRuntime({ warmPoolSize: 0, sandbox: 'none' }, async (rt) => {
      assert.deepEqual(rt.sandbox, { kind: 'none', reason: 'sandbox is "none" in the server config' });
      await assert.rejects(rt.startReplica(js), (err: unknown) => err instanceof FerryError && /runs user code \(js flavor\).*no OS sandbox.*allowUnsandboxedUserCode: true/.test(err.message));
      assert.equal((await rt.startReplica(makeSpec('ep.linear.onnx', 'linear'))).fromPool, false, 'other flavors still start');
    });
    await withRuntime({ warmPoolSize: 0, sandbox: 'none', allowUnsandboxedUserCode: true }, async (rt) => {
      // Allowed: it gets as far as loading (this artifact has no js module, so the load fails).
      await assert.rejects(rt.startReplica(js), (err: unknown) => err instanceof FerryError && !/allowUnsandboxedUserCode/.test(err.message));
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
      const nodePid = await replicaNodePid(handle.pid ?? 0);
      process.kill(nodePid, 'SIGSTOP'); // a hung replica: the drain request is never read
      const startedMs = Date.now();
      await rt.stopReplica(handle.id);
      const tookMs = Date.now() - startedMs;
      assert.ok(tookMs >= 100 && tookMs < 5000, `stop took ${tookMs} ms`);
      assert.equal(await isRunning(handle.pid!), false);
      await waitFor('the replica itself gone', async () => ((await isRunning(nodePid)) ? undefined : true), 5000);
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
      const running = await processesUnder(stateDir);
      // A pool process in the sandbox is bwrap with the node (or Python) process below it; a
      // Python fork server may still be starting (its shell about to exec bwrap).
      const pool = (await Promise.all((await allPoolPids(rt)).map(processDescendants))).flat();
      // A pool process that died between the two samples is not a leftover either.
      const others = (await Promise.all(running.map(async (pid) => (!pool.includes(pid) && await isRunning(pid) ? [pid] : [])))).flat();
      assert.deepEqual(others, [], `nothing but the warm pool: ${(await Promise.all(others.map((p) => fsp.readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '?')))).join('\n')}`);
      assert.deepEqual(await fsp.readdir(path.join(stateDir, 'pids')), []);
      assert.equal(fs.existsSync(path.join(stateDir, 'sockets', 'ep.linear.slow')), false, 'its socket directory is gone');
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

      const rt = await openRuntime(stateDir, { warmPoolSize: 0 });
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

  // Unsandboxed, the control channel is the lifeline: it closes and the replica drains. In the
  // sandbox bwrap's --die-with-parent kills the whole sandbox first (the gateway that could have
  // used a drain died with the server anyway).
  for (const sandbox of ['none', 'bwrap'] as const) test(`a replica exits when the server that started it dies (kill -9), sandbox ${sandbox}`, { timeout: 60_000 }, async () => {
    const stateDir = await newStateDir();
    const runtimeModule = new URL('../src/runtime/local/index.js', import.meta.url).href;
    const script = `
      const { LocalRuntime } = await import(${JSON.stringify(runtimeModule)});
      const rt = await LocalRuntime.open({ stateDir: ${JSON.stringify(stateDir)}, startTimeoutMs: 30000, drainTimeoutMs: 1000, sandbox: '${sandbox}' });
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
      const nodePid = await replicaNodePid(replicaPid);
      assert.equal(nodePid !== replicaPid, sandbox === 'bwrap', 'in the sandbox the runtime\'s child is bwrap');
      await kill(server, 'SIGKILL');
      for (const pid of [replicaPid, nodePid]) await waitFor('replica to exit', async () => ((await isRunning(pid)) ? undefined : true), 10_000);
      if (sandbox === 'none') assert.match(await fsp.readFile(path.join(stateDir, 'logs', 'ep', 'linear', 'ep.linear.lifeline.log'), 'utf8'), /server disconnected; draining/);
    } finally {
      await kill(server, 'SIGKILL');
      if (replicaPid !== undefined && await isRunning(replicaPid)) process.kill(replicaPid, 'SIGKILL');
    }
  });
});

/** Resident memory of `pid` in MiB, from /proc. */
async function rssMiB(pid: number): Promise<number> {
  const status = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+)\s+kB$/m.exec(status)?.[1]) / 1024;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)] ?? NaN;
}

describe('LocalRuntime warm pool', () => {
  test('an idle pool process has the scrubbed environment, is what a replica claims, and close kills it', { timeout: 60_000 }, async (t) => {
    const secrets = ['FERRY_ADMIN_TOKEN', 'AWS_SECRET_ACCESS_KEY'];
    process.env.FERRY_ADMIN_TOKEN = 'ferry_secret_admin_token';
    process.env.AWS_SECRET_ACCESS_KEY = 'aws-secret';
    let idlePid = 0;
    try {
      await withRuntime({}, async (rt, stateDir) => {
        [idlePid = 0] = await poolIdle(rt);
        const idleNodePid = await replicaNodePid(idlePid);
        const environ = (await fsp.readFile(`/proc/${idleNodePid}/environ`, 'utf8')).split('\0').filter(Boolean);
        const keys = environ.map((kv) => kv.slice(0, kv.indexOf('=')));
        assert.ok(keys.includes('PATH'), keys.join(' '));
        for (const secret of secrets) assert.ok(!keys.includes(secret), secret);
        assert.ok(!environ.join('\n').includes('secret'), 'no secret value under any name');
        const cmd = (await fsp.readFile(`/proc/${idleNodePid}/cmdline`, 'utf8')).split('\0');
        assert.ok(cmd.includes('--pool') && cmd.some((a) => a.startsWith(path.join(stateDir, 'pool'))), cmd.join(' '));
        t.diagnostic(`idle pool process RSS: ${(await rssMiB(idleNodePid)).toFixed(0)} MiB`);

        const handle = await rt.startReplica(makeSpec('ep.linear.claim', 'linear'));
        assert.equal(handle.fromPool, true);
        assert.equal(handle.pid, idlePid, 'the idle process became the replica');
        await waitFor('the pool to refill', () => (rt.warmPool().idlePids.length === 1 ? true : undefined), 30_000);
        assert.notEqual(rt.warmPool().idlePids[0], idlePid);
        assert.ok(fs.existsSync(path.join(stateDir, 'pids', 'ep.linear.claim.json')));
      });
      // withRuntime checked that close left no process under the state dir.
      assert.equal(await isRunning(idlePid), false);
    } finally {
      for (const secret of secrets) delete process.env[secret];
    }
  });

  test('a claimed replica logs to its own file; a reused id or another heap size spawns instead', { timeout: 60_000 }, async () => {
    await withRuntime({}, async (rt, stateDir) => {
      await poolIdle(rt);
      const poolFilesBefore = await fsp.readdir(path.join(stateDir, 'pool'));
      assert.deepEqual(poolFilesBefore.map((n) => path.extname(n)).sort(), ['.json', '.log']);
      const handle = await rt.startReplica(makeSpec('ep.linear.log', 'linear'));
      assert.equal(handle.fromPool, true);
      const logFile = path.join(stateDir, 'logs', 'ep', 'linear', 'ep.linear.log.log');
      assert.match(await fsp.readFile(logFile, 'utf8'), /pool process warm[^]*replica ready/);
      assert.equal((await fsp.stat(logFile)).mode & 0o777, 0o600);
      const poolFilesAfter = await fsp.readdir(path.join(stateDir, 'pool'));
      assert.deepEqual(poolFilesAfter.filter((n) => poolFilesBefore.includes(n)), [], 'the claimed process left the pool dir');
      await rt.stopReplica(handle.id);
      assert.match(await fsp.readFile(logFile, 'utf8'), /draining/, 'its SIGTERM drain is in its log too');

      await poolIdle(rt);
      const again = await rt.startReplica(makeSpec('ep.linear.log', 'linear'));
      assert.equal(again.fromPool, false, 'a rename would replace the existing log');
      assert.equal((await fsp.readFile(logFile, 'utf8')).match(/replica ready/g)?.length, 2, 'both runs in one log');
      const otherHeap = await rt.startReplica(makeSpec('ep.linear.heap', 'linear', { memoryLimitBytes: 512 * MIB }));
      assert.equal(otherHeap.fromPool, false, 'pool processes run a 512 MiB heap; this spec needs 256 MiB');
      assert.equal(rt.warmPool().idlePids.length, 1, 'the pool is untouched');
    });
  });

  test('a pool process that dies idle is replaced after a backoff, not at once', { timeout: 60_000 }, async () => {
    await withRuntime({}, async (rt, stateDir) => {
      const [pid = 0] = await poolIdle(rt);
      const killedMs = Date.now();
      process.kill(pid, 'SIGKILL');
      await waitFor('the dead process to leave the pool', () => (poolPids(rt).length === 0 ? true : undefined));
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(poolPids(rt), [], 'no replacement within 500 ms');
      assert.match(await fsp.readFile(path.join(stateDir, 'pool', 'last-failure.log'), 'utf8'), /pool process warm/);
      const [replacement] = await poolIdle(rt);
      assert.notEqual(replacement, pid);
      assert.ok(Date.now() - killedMs >= 1000, `replaced after ${Date.now() - killedMs} ms`);
    });
  });

  test('open kills pool processes a crashed server left behind, idle and claimed', { timeout: 60_000 }, async () => {
    const stateDir = await newStateDir();
    for (const d of ['sockets', 'pids', 'pool']) await fsp.mkdir(path.join(stateDir, d));
    // Started by this test (so their control channel stays open, as if the server were alive):
    // one waits idle, one is claimed and serves.
    const start = (token: string) => {
      const child = spawn(process.execPath, [FERRY_BIN, 'replica', '--control', '--pool', token], { stdio: ['ignore', 'ignore', 'inherit', 'pipe'], env: {} });
      const control = child.stdio[3] as Socket;
      const decoder = new ControlDecoder({ maxHeaderBytes: 4096, maxPayloadBytes: 0 });
      const warm = new Promise<void>((resolve) => control.on('data', (c: Buffer) => { if (decoder.push(c).frames.some((f) => f.header.type === 'warm')) resolve(); }));
      return { child, control, warm };
    };
    const idleToken = path.join(stateDir, 'pool', 'idle');
    const claimedToken = path.join(stateDir, 'pool', 'claimed');
    const idle = start(idleToken);
    const claimed = start(claimedToken);
    try {
      await Promise.all([idle.warm, claimed.warm]);
      const socketPath = path.join(stateDir, 'sockets', 'ep.linear.orphan.sock');
      claimed.control.write(encodeControlFrame({
        type: 'start',
        options: {
          socketPath, dir: fx.dir, flavor: 'onnx', loadOptions: { modelFile: 'linear.onnx', workloadType: 'CPU', intraOpThreads: 1 },
          modelName: 'linear', modelVersion: '1', maxBodyBytes: MIB, drainTimeoutMs: 1000,
          maxRowsPerRequest: 100, maxJsonDepth: 64, maxJsonElements: 1000,
          batching: { enabled: true, maxBatchSize: 64, maxQueueDelayUs: 0, preferredBatchSizes: [] },
        },
      }));
      await waitFor('claimed orphan ready', async () => ((await request({ socketPath, path: '/v2/health/ready', token: null }).catch(() => undefined))?.status === 200 ? true : undefined));
      assert.equal((await request({ socketPath, path: '/invocations', token: null, json: { inputs: [[1, 2, 3, 4]] } })).json.predictions[0][0], 5.625);
      await fsp.writeFile(`${idleToken}.json`, JSON.stringify({ pid: idle.child.pid, match: idleToken, startedMs: Date.now() }));
      await fsp.writeFile(path.join(stateDir, 'pids', 'ep.linear.orphan.json'), JSON.stringify({ pid: claimed.child.pid, socketPath, match: claimedToken, startedMs: Date.now() }));
      await fsp.writeFile(`${idleToken}.log`, 'left behind\n');

      const rt = await openRuntime(stateDir, { warmPoolSize: 0 });
      try {
        assert.equal(await waitFor('idle orphan killed', () => idle.child.signalCode ?? undefined, 5000), 'SIGKILL');
        assert.equal(await waitFor('claimed orphan killed', () => claimed.child.signalCode ?? undefined, 5000), 'SIGKILL');
        assert.deepEqual(await fsp.readdir(path.join(stateDir, 'pids')), []);
        assert.deepEqual(await fsp.readdir(path.join(stateDir, 'pool')), []);
        assert.deepEqual(await fsp.readdir(path.join(stateDir, 'sockets')), []);
      } finally {
        await rt.close();
      }
    } finally {
      await Promise.all([kill(idle.child, 'SIGKILL'), kill(claimed.child, 'SIGKILL')]);
    }
  });

  test('idle pool processes exit when the server that started them dies (kill -9)', { timeout: 60_000 }, async () => {
    const stateDir = await newStateDir();
    const runtimeModule = new URL('../src/runtime/local/index.js', import.meta.url).href;
    const script = `
      const { LocalRuntime } = await import(${JSON.stringify(runtimeModule)});
      const rt = await LocalRuntime.open({ stateDir: ${JSON.stringify(stateDir)}, startTimeoutMs: 30000, drainTimeoutMs: 1000, warmPoolSize: 2, sandbox: 'none' });
      const timer = setInterval(() => {
        const { idlePids } = rt.warmPool();
        if (idlePids.length === 2) { clearInterval(timer); process.stdout.write(JSON.stringify(idlePids) + '\\n'); }
      }, 20);
      setInterval(() => {}, 60000);
    `;
    const server = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let pids: number[] = [];
    try {
      let out = '';
      server.stdout.on('data', (c: Buffer) => { out += c.toString(); });
      pids = await waitFor('pool pids from the server', () => (out.includes('\n') ? JSON.parse(out) as number[] : undefined), 30_000);
      assert.equal(pids.length, 2);
      await kill(server, 'SIGKILL');
      await waitFor('pool processes to exit', async () => ((await Promise.all(pids.map(isRunning))).some(Boolean) ? undefined : true), 10_000);
      // Unsandboxed, they notice the closed control channel and log it (in the sandbox bwrap's
      // --die-with-parent kills them first: see the replica test above).
      const logs = await Promise.all((await fsp.readdir(path.join(stateDir, 'pool'))).filter((n) => n.endsWith('.log')).map((n) => fsp.readFile(path.join(stateDir, 'pool', n), 'utf8')));
      assert.equal(logs.filter((l) => /server disconnected while idle in the pool/.test(l)).length, 2);
    } finally {
      await kill(server, 'SIGKILL');
      for (const pid of pids) if (await isRunning(pid)) process.kill(pid, 'SIGKILL');
    }
  });

  test('cold start, linear.onnx: claimed from the pool vs spawned, with and without the sandbox (p50 of 10 each)', { timeout: 300_000 }, async (t) => {
    const runs = 10;
    const measure = async (warmPoolSize: number, sandbox: 'none' | 'bwrap'): Promise<number[]> => {
      const ms: number[] = [];
      await withRuntime({ warmPoolSize, sandbox }, async (rt) => {
        for (let i = 0; i < runs; i++) {
          if (warmPoolSize > 0) await poolIdle(rt);
          const handle = await rt.startReplica(makeSpec(`ep.linear.cold${i}`, 'linear'));
          assert.equal(handle.fromPool, warmPoolSize > 0);
          ms.push(handle.coldStartMs ?? NaN);
          await rt.stopReplica(handle.id);
        }
      });
      return ms;
    };
    const fmt = (xs: number[]): string => xs.map((x) => x.toFixed(0)).join(' ');
    for (const sandbox of ['none', 'bwrap'] as const) {
      const spawned = await measure(0, sandbox);
      const pooled = await measure(1, sandbox);
      t.diagnostic(`sandbox ${sandbox}, spawned: p50 ${median(spawned).toFixed(0)} ms (${fmt(spawned)})`);
      t.diagnostic(`sandbox ${sandbox}, from the pool: p50 ${median(pooled).toFixed(0)} ms (${fmt(pooled)})`);
      assert.ok(median(pooled) < median(spawned), 'the pool makes cold starts cheaper');
    }
  });
});
