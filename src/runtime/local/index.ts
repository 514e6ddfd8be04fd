/**
 * The local runtime: each replica is a child process (`ferry replica`) of the server, on a Unix
 * socket in a 0700 directory, with a scrubbed environment and a memory limit enforced by a
 * watchdog. Files under `stateDir`:
 *
 * - `sockets/<id>.sock` (or `<sha256(id)[0:16]>.sock` when the path would exceed the 107-byte
 *   Unix socket limit)
 * - `logs/<endpoint>/<servedEntity>/<id>.log`: the replica's stdout and stderr, kept after it stops
 * - `pids/<id>.json`: `{pid, socketPath, startedMs}`, so the next server run can kill replicas a
 *   crashed server left behind (see `open`)
 *
 * Assumes one server per state directory: `open` kills every replica listed under `pids/`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FerryError, invalidParameter } from '../../errors.js';
import type { ReplicaExit, ReplicaHandle, ReplicaSpec, Runtime } from '../index.js';
import { commandLine, isRunning, replicaEnv, residentBytes, waitGone } from './proc.js';

export interface LocalRuntimeOptions {
  /** Directory for sockets, logs and pid files, e.g. `<data-dir>/runtime`; created if missing. */
  stateDir: string;
  /** How long a replica may take from spawn to answering `GET /v2/health/ready` with 200. */
  startTimeoutMs: number;
  /** How long a stopping replica may drain in-flight requests before it is killed. */
  drainTimeoutMs: number;
  /** How often each replica's resident memory is compared with its limit; default 1000. */
  memoryPollMs?: number;
}

/** dist/src/runtime/local/index.js → repository root is four levels up. */
const FERRY_BIN = fileURLToPath(new URL('../../../../bin/ferry.js', import.meta.url));
/** Linux `sun_path` is 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;
const READY_POLL_MS = 20;
/** One readiness probe may take this long before it counts as "not ready yet". */
const PROBE_TIMEOUT_MS = 1000;
/**
 * Extra time after `drainTimeoutMs` before SIGKILL: the replica cuts its own remaining requests
 * at `drainTimeoutMs` and then needs a moment to stop its model worker and remove its socket.
 */
const KILL_GRACE_MS = 2000;
/** How long `open` waits for a killed orphan to disappear. */
const ORPHAN_KILL_WAIT_MS = 5000;
const LAST_LOG_LINES = 20;
/** Bytes read from the end of a log to find its last lines. */
const LOG_TAIL_BYTES = 64 * 1024;
/** Ids, endpoint and entity names become file names: no separators, no leading dot. */
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;
const MIB = 1024 * 1024;

interface LocalReplica {
  handle: ReplicaHandle;
  child: ChildProcess;
  logFile: string;
  pidFile: string;
  /** Set once `startReplica` resolved; only ready replicas are listed and reported by `onExit`. */
  ready: boolean;
  stopRequested: boolean;
  /** Set by the memory watchdog just before it kills the replica. */
  oomRssBytes: number | undefined;
  /** Settles once the process exited and its pid file and socket are removed. */
  gone: Promise<{ code: number | undefined; signal: string | undefined }>;
}

export class LocalRuntime implements Runtime {
  private readonly replicas = new Map<string, LocalReplica>();
  private readonly listeners: ((exit: ReplicaExit) => void)[] = [];
  private readonly watchdog: NodeJS.Timeout;
  private watching = false;
  private closed = false;

  private constructor(
    private readonly opts: Required<LocalRuntimeOptions>,
    private readonly dirs: { sockets: string; logs: string; pids: string },
  ) {
    this.watchdog = setInterval(() => void this.checkMemory(), opts.memoryPollMs);
    this.watchdog.unref();
  }

  /**
   * Creates the state directories and kills replicas left behind by a previous server run (after
   * a kill -9 of the server): a pid file whose process is still alive and whose command line is
   * a `ferry replica` on that socket is SIGKILLed; then stale pid files and sockets are removed.
   */
  static async open(opts: LocalRuntimeOptions): Promise<LocalRuntime> {
    const stateDir = path.resolve(opts.stateDir);
    const dirs = { sockets: path.join(stateDir, 'sockets'), logs: path.join(stateDir, 'logs'), pids: path.join(stateDir, 'pids') };
    if (Buffer.byteLength(path.join(dirs.sockets, `${'0'.repeat(16)}.sock`)) > MAX_SOCKET_PATH_BYTES) {
      throw invalidParameter('stateDir', stateDir, `a path short enough for Unix sockets under it (at most ${MAX_SOCKET_PATH_BYTES - 28} bytes)`);
    }
    await fsp.mkdir(dirs.sockets, { recursive: true, mode: 0o700 });
    // mkdir's mode does not apply to a directory that already exists (or is masked by umask).
    await fsp.chmod(dirs.sockets, 0o700);
    await fsp.mkdir(dirs.logs, { recursive: true });
    await fsp.mkdir(dirs.pids, { recursive: true });
    await killOrphans(dirs.pids);
    return new LocalRuntime({ memoryPollMs: 1000, ...opts, stateDir }, dirs);
  }

  async startReplica(spec: ReplicaSpec): Promise<ReplicaHandle> {
    for (const key of ['id', 'endpoint', 'servedEntity'] as const) {
      if (!NAME_PATTERN.test(spec[key])) throw invalidParameter(key, spec[key], 'letters, digits, ".", "_" or "-", starting with a letter or digit');
    }
    if (!(await fsp.stat(spec.artifactDir).catch(() => undefined))?.isDirectory()) {
      throw new FerryError('MODEL_ERROR', `Artifact directory '${spec.artifactDir}' of replica '${spec.id}' does not exist.`);
    }
    const logDir = path.join(this.dirs.logs, spec.endpoint, spec.servedEntity);
    await fsp.mkdir(logDir, { recursive: true });

    // From these checks until the replica is in the table nothing awaits, so two concurrent
    // starts of one id (or a start racing close) cannot both pass.
    if (this.closed) throw new FerryError('TEMPORARILY_UNAVAILABLE', 'The runtime is shutting down.');
    if (this.replicas.has(spec.id)) throw new FerryError('RESOURCE_ALREADY_EXISTS', `Replica '${spec.id}' is already running.`);
    const socketPath = this.socketPathOf(spec.id);
    const logFile = path.join(logDir, `${spec.id}.log`);
    const pidFile = path.join(this.dirs.pids, `${spec.id}.json`);
    fs.rmSync(socketPath, { force: true }); // a socket left by a replica that was SIGKILLed
    const child = this.spawnReplica(spec, socketPath, logFile);
    // Errors after a successful spawn (a failed kill of an exited process) need no handling.
    child.on('error', () => undefined);
    // Written before anything awaits, so the pid file exists before the exit handler can remove it
    // and before a server crash could leave the replica unlisted.
    if (child.pid !== undefined) fs.writeFileSync(pidFile, JSON.stringify({ pid: child.pid, socketPath, startedMs: Date.now() }));
    const exited = new Promise<{ code: number | undefined; signal: string | undefined }>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code: code ?? undefined, signal: signal ?? undefined }));
    });
    const r: LocalReplica = {
      handle: { id: spec.id, spec, address: { kind: 'unix', socketPath }, pid: child.pid },
      child, logFile, pidFile, ready: false, stopRequested: false, oomRssBytes: undefined,
      gone: exited.then(async (e) => {
        await Promise.all([fsp.rm(pidFile, { force: true }), fsp.rm(socketPath, { force: true })]);
        if (this.replicas.get(spec.id) === r) this.replicas.delete(spec.id);
        return e;
      }),
    };
    this.replicas.set(spec.id, r);
    void r.gone.then((e) => this.reportExit(r, e));

    const spawned = await new Promise<Error | undefined>((resolve) => {
      child.once('spawn', () => resolve(undefined));
      child.once('error', resolve);
    });
    if (spawned !== undefined) {
      this.replicas.delete(spec.id);
      throw new FerryError('INTERNAL_ERROR', `Could not start replica '${spec.id}': ${spawned.message}`, { cause: spawned });
    }

    const outcome = await this.waitReady(r, socketPath, exited);
    if (outcome === 'ready') {
      r.ready = true;
      return r.handle;
    }
    if (outcome === 'timeout') {
      child.kill('SIGKILL');
      await r.gone;
      throw new FerryError('DEADLINE_EXCEEDED', `Replica '${spec.id}' did not become ready within ${this.opts.startTimeoutMs} ms; it was killed.`);
    }
    await r.gone;
    if (r.stopRequested) throw new FerryError('TEMPORARILY_UNAVAILABLE', `Replica '${spec.id}' was stopped before it became ready.`);
    throw new FerryError('MODEL_ERROR', `Replica '${spec.id}' failed to start: ${await startFailure(r)}`);
  }

  async stopReplica(id: string): Promise<void> {
    const r = this.replicas.get(id);
    if (r === undefined) return;
    r.stopRequested = true;
    r.child.kill('SIGTERM');
    const timer = setTimeout(() => r.child.kill('SIGKILL'), this.opts.drainTimeoutMs + KILL_GRACE_MS);
    await r.gone;
    clearTimeout(timer);
  }

  onExit(listener: (exit: ReplicaExit) => void): void {
    this.listeners.push(listener);
  }

  /** Ready replicas: those whose `startReplica` resolved and that have not exited since. */
  list(): ReplicaHandle[] {
    return [...this.replicas.values()].filter((r) => r.ready).map((r) => r.handle);
  }

  async logs(endpoint: string, servedEntity: string, maxBytes: number): Promise<string> {
    if (!NAME_PATTERN.test(endpoint)) throw invalidParameter('endpoint', endpoint, 'an endpoint name');
    if (!NAME_PATTERN.test(servedEntity)) throw invalidParameter('servedEntity', servedEntity, 'a served entity name');
    const dir = path.join(this.dirs.logs, endpoint, servedEntity);
    const names = (await fsp.readdir(dir).catch(() => [] as string[])).filter((n) => n.endsWith('.log'));
    const files = await Promise.all(names.map(async (n) => ({ file: path.join(dir, n), mtimeMs: (await fsp.stat(path.join(dir, n))).mtimeMs })));
    files.sort((a, b) => a.mtimeMs - b.mtimeMs || a.file.localeCompare(b.file));
    // Newest first, each file's tail, until maxBytes are collected; then oldest first again.
    const parts: Buffer[] = [];
    let left = maxBytes;
    for (const { file } of files.reverse()) {
      if (left <= 0) break;
      const tail = await readTail(file, left);
      parts.unshift(tail);
      left -= tail.length;
    }
    return Buffer.concat(parts).toString('utf8');
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.watchdog);
    await Promise.all([...this.replicas.keys()].map((id) => this.stopReplica(id)));
  }

  private socketPathOf(id: string): string {
    const plain = path.join(this.dirs.sockets, `${id}.sock`);
    if (Buffer.byteLength(plain) <= MAX_SOCKET_PATH_BYTES) return plain;
    return path.join(this.dirs.sockets, `${createHash('sha256').update(id).digest('hex').slice(0, 16)}.sock`);
  }

  private spawnReplica(spec: ReplicaSpec, socketPath: string, logFile: string): ChildProcess {
    // The V8 heap gets half the limit: the rest is for Node itself and onnxruntime's native
    // memory, which the heap flag does not bound (the watchdog does). 256 MiB → 128 MiB heap.
    const heapMiB = Math.max(16, Math.floor(spec.memoryLimitBytes / 2 / MIB));
    const args = [
      `--max-old-space-size=${heapMiB}`, FERRY_BIN, 'replica',
      '--socket', socketPath, '--dir', path.resolve(spec.artifactDir), '--model-file', spec.modelFile,
      '--flavor', spec.flavor, '--workload-type', spec.workloadType, '--threads', '1',
      '--name', spec.modelName, '--version', spec.modelVersion,
      '--max-body-bytes', String(spec.maxBodyBytes), '--drain-timeout-ms', String(this.opts.drainTimeoutMs),
      '--batching', spec.batching.enabled ? 'on' : 'off', '--max-batch-size', String(spec.batching.maxBatchSize),
      '--max-queue-delay-us', String(spec.batching.maxQueueDelayUs),
      ...(spec.batching.preferredBatchSizes.length ? ['--preferred-batch-sizes', spec.batching.preferredBatchSizes.join(',')] : []),
    ];
    const fd = fs.openSync(logFile, 'a', 0o600);
    try {
      // The IPC channel carries no messages: it is the replica's lifeline. When the server dies,
      // even by SIGKILL, the channel closes and the replica drains and exits.
      return spawn(process.execPath, args, { cwd: spec.artifactDir, env: replicaEnv(process.env), stdio: ['ignore', fd, fd, 'ipc'] });
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Polls the readiness probe every 20 ms until 200, the process exits, or the start deadline. */
  private async waitReady(r: LocalReplica, socketPath: string, exited: Promise<unknown>): Promise<'ready' | 'exited' | 'timeout'> {
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), this.opts.startTimeoutMs); });
    const poll = async (): Promise<'ready'> => {
      while (!settled) {
        if (await probeReady(socketPath)) return 'ready';
        await new Promise((res) => setTimeout(res, READY_POLL_MS));
      }
      return 'ready'; // unreachable in effect: the race below has already settled
    };
    try {
      const outcome = await Promise.race([poll(), deadline, exited.then(() => 'exited' as const)]);
      // A replica can answer its probe and die an instant later; trust the exit.
      if (outcome === 'ready' && (r.child.exitCode !== null || r.child.signalCode !== null)) return 'exited';
      return outcome;
    } finally {
      settled = true;
      clearTimeout(timer);
    }
  }

  /** The watchdog: SIGKILLs every replica whose resident memory exceeds its limit. */
  private async checkMemory(): Promise<void> {
    if (this.watching) return;
    this.watching = true;
    try {
      await Promise.all([...this.replicas.values()].map(async (r) => {
        const pid = r.child.pid;
        const rssBytes = pid === undefined ? undefined : await residentBytes(pid);
        if (rssBytes === undefined || rssBytes <= r.handle.spec.memoryLimitBytes || r.oomRssBytes !== undefined) return;
        r.oomRssBytes = rssBytes;
        await appendLog(r.logFile, 'replica killed: over its memory limit', { rssBytes, memoryLimitBytes: r.handle.spec.memoryLimitBytes });
        r.child.kill('SIGKILL');
      }));
    } finally {
      this.watching = false;
    }
  }

  private async reportExit(r: LocalReplica, e: { code: number | undefined; signal: string | undefined }): Promise<void> {
    // Failed starts are reported by startReplica's rejection, requested stops by stopReplica.
    if (!r.ready || r.stopRequested) return;
    const reason = r.oomRssBytes !== undefined ? 'oom' : 'crashed';
    if (reason === 'crashed') await appendLog(r.logFile, 'replica exited unexpectedly', { code: e.code, signal: e.signal });
    const exit: ReplicaExit = { id: r.handle.id, code: e.code, signal: e.signal, reason, lastLogLines: await lastLines(r.logFile) };
    for (const listener of this.listeners) listener(exit);
  }
}

/** Whether the replica behind `socketPath` answers `GET /v2/health/ready` with 200. */
function probeReady(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ socketPath, path: '/v2/health/ready', agent: false, timeout: PROBE_TIMEOUT_MS }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

/** Why a replica exited before it was ready: its own "replica failed to start" error, else its last log lines. */
async function startFailure(r: LocalReplica): Promise<string> {
  if (r.oomRssBytes !== undefined) {
    return `resident memory ${Math.round(r.oomRssBytes / MIB)} MiB exceeded its limit of ${Math.round(r.handle.spec.memoryLimitBytes / MIB)} MiB while loading; it was killed.`;
  }
  const lines = (await readTail(r.logFile, LOG_TAIL_BYTES)).toString('utf8').split('\n');
  for (const line of lines.reverse()) {
    try {
      const entry = JSON.parse(line) as { msg?: unknown; error?: unknown };
      if (entry.msg === 'replica failed to start' && typeof entry.error === 'string') return entry.error;
    } catch {
      // Not a JSON log line (e.g. a stack trace on stderr).
    }
  }
  const { exitCode, signalCode } = r.child;
  return `it exited (${exitCode !== null ? `code ${exitCode}` : `signal ${signalCode ?? '?'}`}) before it was ready. Last log lines:\n${await lastLines(r.logFile)}`;
}

async function readTail(file: string, maxBytes: number): Promise<Buffer> {
  const handle = await fsp.open(file, 'r').catch(() => undefined);
  if (handle === undefined) return Buffer.alloc(0);
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, Math.max(0, maxBytes));
    const buf = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buf, 0, length, size - length);
    return buf.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

async function lastLines(file: string): Promise<string> {
  const lines = (await readTail(file, LOG_TAIL_BYTES)).toString('utf8').split('\n').filter((l) => l !== '');
  return lines.slice(-LAST_LOG_LINES).join('\n');
}

/** The runtime's own notes in a replica's log, in the replica's JSON-lines format. */
async function appendLog(file: string, msg: string, fields: Record<string, unknown>): Promise<void> {
  const line = JSON.stringify({ ts: new Date().toISOString(), level: 'error', msg, source: 'runtime', ...fields });
  await fsp.appendFile(file, line + '\n').catch(() => undefined);
}

/** See `LocalRuntime.open`. */
async function killOrphans(pidsDir: string): Promise<void> {
  const names = (await fsp.readdir(pidsDir)).filter((n) => n.endsWith('.json'));
  await Promise.all(names.map(async (name) => {
    const file = path.join(pidsDir, name);
    let entry: { pid?: unknown; socketPath?: unknown } = {};
    try {
      entry = JSON.parse(await fsp.readFile(file, 'utf8')) as typeof entry;
    } catch {
      // A pid file cut short by the crash: nothing to identify, just remove it.
    }
    const { pid, socketPath } = entry;
    if (typeof pid === 'number' && Number.isInteger(pid) && pid > 0 && typeof socketPath === 'string') {
      // The pid may have been reused by an unrelated process since: kill only what is provably
      // our replica on that socket.
      const cmd = await commandLine(pid);
      if (await isRunning(pid) && cmd.includes('replica') && cmd.includes(socketPath)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Exited in between.
        }
        await waitGone(pid, ORPHAN_KILL_WAIT_MS);
      }
    }
    if (typeof socketPath === 'string' && path.dirname(socketPath) === path.join(path.dirname(pidsDir), 'sockets')) {
      await fsp.rm(socketPath, { force: true });
    }
    await fsp.rm(file, { force: true });
  }));
}
