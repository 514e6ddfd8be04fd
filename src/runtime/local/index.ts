/**
 * The local runtime: each replica is a child process (`ferry replica`) of the server, on a Unix
 * socket in a directory of its own, with a scrubbed environment and a memory limit enforced by a
 * watchdog. Isolation: a replica runs a user's model, so it is kept from the server's secrets
 * and from other endpoints, and the server trusts nothing it sends:
 * - The OS sandbox (./sandbox.ts, when bwrap works here): its own network, pid, IPC and UTS
 *   namespaces, read-only binds of the system, Node, Ferry's code and its own model directory,
 *   its own socket directory read-write; as `replicaUser` from its first instruction when the
 *   server is root. Replicas that run user code (a flavor's `runsUserCode`) are refused without it
 *   unless `allowUnsandboxedUserCode`.
 * - Node's permission model (`replicaNodeFlags`): its JavaScript may read Ferry's code, its own
 *   private model directory and its socket, write its socket, start worker threads and (except
 *   js replicas) load native addons; every other file read or write, child processes and WASI
 *   throw ERR_ACCESS_DENIED. Native code (onnxruntime) is not bound by it: the sandbox is.
 * - A private model directory per replica process: the entity's artifact directory is staged
 *   into `models/<name>/` (hard links, or copies across file systems) and the replica loads from
 *   there, so the flags and the sandbox can name exactly one model. Removed when the process is gone.
 * - Without a sandbox, when the server runs as root, the replica loads its model as root, then,
 *   once its socket listens and before it answers, switches to `replicaUser` (default "nobody").
 * - The control channel (./control.ts, the child's fd 3): bounded frames, each message checked;
 *   a replica that sends anything else is SIGKILLed and reported (`protocol`).
 * - The scrubbed environment (`replicaEnv`) and the RSS watchdog: an over-limit replica is
 *   SIGKILLed and reported (`oom`), never the server.
 * - GPUs (./gpu.ts): a GPU_* replica sees one GPU (`CUDA_VISIBLE_DEVICES`), and its sandbox only
 *   that GPU's device node, the NVIDIA control nodes and the driver's sysfs and libraries; a CPU
 *   replica sees none.
 *
 * Files under `stateDir`:
 *
 * - `sockets/<id>/replica.sock` (or `sockets/<sha256(id)[0:16]>/replica.sock` when the path would
 *   exceed the 107-byte Unix socket limit), the directory 0700 and owned by the user the process
 *   runs as; a replica claimed from the pool keeps the socket its pool process was started for,
 *   `sockets/<sha256(pool key)[0:16]>/replica.sock` (its permission flags and sandbox name it)
 * - `models/<id>-<random>/` (spawned replica) or `models/pool-<key>/` (pool process; empty until
 *   claimed): the private model directory under a 0700 `models/`: 0700, or 0755 with 0644 files
 *   when the process is the replica user from its start (sandboxed under a root server)
 * - `logs/<endpoint>/<servedEntity>/<id>.log`: the replica's stdout and stderr, kept after it stops
 * - `pids/<id>.json`: `{pid, socketPath, match, startedMs}`, so the next server run can kill
 *   replicas a crashed server left behind (see `open`)
 * - `pool/<key>.json` and `pool/<key>.log`: pid file and output of an idle warm-pool process
 *
 * Warm pool (`warmPoolSize`, default 1; ./warm-pool.ts): generic replica processes started ahead
 * of need, no model loaded; `startReplica` claims an idle one when it can, stages the model into
 * the process's private directory and sends it the replica's options over the control channel;
 * else it spawns a replica. Either way the same readiness polling (./readiness.ts), deadline,
 * watchdog (./watchdog.ts), exit reports and pid files apply.
 *
 * The other parts: ./spawn.ts starts the processes (permission flags, sandbox, environment, log,
 * control channel) and waits for their exit; ./stage.ts stages models; ./orphans.ts is the cleanup
 * at `open`; ./log-files.ts reads and appends to replica logs; ./python-paths.ts asks a Python
 * interpreter for its paths; ./types.ts holds the shared types.
 *
 * Assumes one server per state directory: `open` kills every replica listed under `pids/` and
 * every pool process listed under `pool/`, and empties `models/`.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { FerryError, invalidParameter, toFerryError } from '../../errors.js';
import { FLAVOR_CAPABILITIES, type FlavorName } from '../../flavors/index.js';
import type { Socket } from 'node:net';
import { replicaOptionsOf } from '../../replica/options.js';
import type { ReplicaExit, ReplicaExitReason, ReplicaHandle, ReplicaSpec, Runtime } from '../types.js';
import { ReplicaProtocolError } from '../errors.js';
import type { ReplicaLink } from './control.js';
import { chooseSandbox, type Sandbox } from './sandbox.js';
import { GpuPool } from './gpu.js';
import { PythonEnvironments } from './python-env.js';
import { PidsLimit } from './pids-limit.js';
import { DEFAULT_PRELOAD, PYTHON_LINK_FD, PythonPool } from './python-pool.js';
import { findOnPath, resolveUser, type UserIds } from './proc.js';
import { appendLog, lastLines, readTail, startFailure } from './log-files.js';
import { clearLeftovers } from './orphans.js';
import { PythonPaths } from './python-paths.js';
import { waitReady } from './readiness.js';
import { exitOf, heapMiBOf, linkTo, MAX_SOCKET_PATH_BYTES, SOCKET_FILE, socketPathOf, Spawner } from './spawn.js';
import { stageMember, stageModel } from './stage.js';
import { WarmPool } from './warm-pool.js';
import { Watchdog } from './watchdog.js';
import type { LocalRuntimeOptions } from './options.js';
import { hitProcessLimit, KILL_GRACE_MS, MIB, type Exit, type LocalReplica } from './types.js';

export { ferryCodePaths, replicaNodeFlags } from './spawn.js';
export type { LocalRuntimeOptions } from './options.js';

/** Ids, endpoint and entity names become file names: no separators, no leading dot. */
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;
const DEFAULT_WARM_POOL_SIZE = 1;
const DEFAULT_WARM_POOL_MEMORY_LIMIT_BYTES = 2 * 1024 * MIB;
const DEFAULT_MAX_PROCESSES_PER_SANDBOX = 512;

export class LocalRuntime implements Runtime {
  private readonly replicas = new Map<string, LocalReplica>();
  private readonly listeners: ((exit: ReplicaExit) => void)[] = [];
  /** The memory and process-count watchdog (./watchdog.ts). */
  private readonly watchdog: Watchdog;
  private closed = false;
  /** Each Python interpreter's paths, asked once (./python-paths.ts). */
  private readonly pythonPaths = new PythonPaths();
  /** The virtualenvs of python models, when `pythonEnvManager` is `virtualenv`. */
  private readonly pythonEnvs: PythonEnvironments | undefined;
  /** Python fork servers (./python-pool.ts), unless `pythonWarmPoolSize` is 0 or python code may not run here. */
  private readonly pythonPool: PythonPool | undefined;
  /** The warm pool of generic replica processes (./warm-pool.ts). */
  private readonly pool: WarmPool;
  /** Starts every replica and pool process (./spawn.ts). */
  private readonly spawner: Spawner;
  /** Ids of spawned replicas whose model is being staged (not yet in `replicas`). */
  private readonly staging = new Set<string>();

  private constructor(
    private readonly opts: Required<Omit<LocalRuntimeOptions, 'replicaUser' | 'sandbox' | 'pythonWarmPoolSize' | 'pythonPreload' | 'maxProcessesPerSandbox' | 'gpu'>>,
    private readonly dirs: { sockets: string; logs: string; pids: string; pool: string; models: string },
    /** The ids replicas run as (see `replicaUser`); undefined: they keep the server's. */
    private readonly user: UserIds | undefined,
    /** The sandbox chosen at `open`: every replica process runs in it. */
    readonly sandbox: Sandbox,
    /** The process-count limit per sandbox, or why there is none (logged by the server). */
    private readonly pids: PidsLimit | { unavailable: string },
    python: { warmPoolSize: number; preload: readonly string[] },
    /** The host's GPUs, found at `open`, and which replica has which. */
    readonly gpus: GpuPool,
  ) {
    this.spawner = new Spawner(sandbox, this.sandboxUser);
    // Fork servers run user code's workers: only where such code may run at all.
    this.pythonPool = python.warmPoolSize > 0 && (sandbox.kind === 'bwrap' || opts.allowUnsandboxedUserCode)
      ? new PythonPool({
        size: python.warmPoolSize, preload: python.preload, sandbox, user: this.user, modelsDir: dirs.models,
        poolDir: dirs.pool, logsDir: dirs.logs, modelDirMode: this.modelDirMode, pythonPaths: (p) => this.pythonPaths.of(p),
        stage: (spec, dir) => stageModel(spec, dir, this.modelDirMode), pids: pids instanceof PidsLimit ? pids : undefined,
      })
      : undefined;
    this.pythonEnvs = opts.pythonEnvManager === 'virtualenv'
      ? new PythonEnvironments({ dir: path.join(opts.stateDir, 'python-envs'), basePython: opts.python, pipArgs: opts.pythonPipArgs, systemSitePackages: true })
      : undefined;
    this.watchdog = new Watchdog(this.replicas, pids, this.pythonPool, opts.memoryPollMs);
    this.pool = new WarmPool({
      size: opts.warmPoolSize, heapMiB: heapMiBOf(opts.warmPoolMemoryLimitBytes), dirs, modelDirMode: this.modelDirMode, spawner: this.spawner,
      gpus, pythonLink: this.pythonPool !== undefined, closed: () => this.closed,
    });
  }

  /**
   * Creates the state directories and kills replicas left behind by a previous server run (after
   * a kill -9 of the server): a pid file whose process is still alive and whose command line is
   * a `ferry replica` on that socket (or with that pool key) is SIGKILLed; then stale pid files,
   * sockets, pool files and private model directories are removed. The warm pool then fills in
   * the background. Rejects with INVALID_PARAMETER_VALUE when running as root and `replicaUser`
   * names no user.
   */
  static async open(opts: LocalRuntimeOptions): Promise<LocalRuntime> {
    const stateDir = path.resolve(opts.stateDir);
    const dirs = {
      sockets: path.join(stateDir, 'sockets'), logs: path.join(stateDir, 'logs'), pids: path.join(stateDir, 'pids'), pool: path.join(stateDir, 'pool'),
      models: path.join(stateDir, 'models'),
    };
    const warmPoolSize = opts.warmPoolSize ?? DEFAULT_WARM_POOL_SIZE;
    if (!Number.isInteger(warmPoolSize) || warmPoolSize < 0) throw invalidParameter('warmPoolSize', warmPoolSize, 'an integer ≥ 0');
    if (Buffer.byteLength(path.join(dirs.sockets, '0'.repeat(16), SOCKET_FILE)) > MAX_SOCKET_PATH_BYTES) {
      throw invalidParameter('stateDir', stateDir, `a path short enough for Unix sockets under it (at most ${MAX_SOCKET_PATH_BYTES - 34} bytes)`);
    }
    // Only root can change its uid; any other server's replicas keep its uid.
    const user = opts.replicaUser !== undefined && process.getuid?.() === 0 ? await resolveUser('replicaUser', opts.replicaUser) : undefined;
    const sandbox = await chooseSandbox(opts.sandbox ?? 'auto', user);
    const gpus = await GpuPool.open({ gpus: 'auto', gpuFallback: 'fail', gpuLibraries: 'auto', ...opts.gpu });
    for (const dir of [dirs.sockets, dirs.models]) {
      await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
      // mkdir's mode does not apply to a directory that already exists (or is masked by umask).
      await fsp.chmod(dir, 0o700);
    }
    await fsp.mkdir(dirs.logs, { recursive: true });
    await fsp.mkdir(dirs.pids, { recursive: true });
    await fsp.mkdir(dirs.pool, { recursive: true, mode: 0o700 });
    await clearLeftovers(dirs);
    const { replicaUser: _, sandbox: __, gpu: ___, pythonWarmPoolSize, pythonPreload, maxProcessesPerSandbox, ...rest } = opts;
    const pythonPool = { warmPoolSize: pythonWarmPoolSize ?? 1, preload: pythonPreload ?? DEFAULT_PRELOAD };
    if (!Number.isInteger(pythonPool.warmPoolSize) || pythonPool.warmPoolSize < 0) throw invalidParameter('pythonWarmPoolSize', pythonWarmPoolSize, 'an integer ≥ 0');
    const maxProcesses = maxProcessesPerSandbox ?? DEFAULT_MAX_PROCESSES_PER_SANDBOX;
    if (!Number.isInteger(maxProcesses) || maxProcesses < 0) throw invalidParameter('maxProcessesPerSandbox', maxProcessesPerSandbox, 'an integer ≥ 0');
    const pids = maxProcesses === 0 ? { unavailable: 'maxProcessesPerSandbox is 0' } : PidsLimit.open(maxProcesses);
    const rt = new LocalRuntime({
      memoryPollMs: 1000, warmPoolMemoryLimitBytes: DEFAULT_WARM_POOL_MEMORY_LIMIT_BYTES, logLevel: 'info', allowUnsandboxedUserCode: false,
      pythonEnvManager: 'local', pythonPipArgs: [], ...rest, warmPoolSize, stateDir,
      python: findOnPath(opts.python ?? 'python3', process.env.PATH),
    }, dirs, user, sandbox, pids, pythonPool, gpus);
    rt.pool.fill();
    if (rt.opts.pythonEnvManager === 'local') rt.pythonPool?.warm(rt.opts.python);
    return rt;
  }

  async startReplica(spec: ReplicaSpec): Promise<ReplicaHandle> {
    const calledMs = performance.now();
    for (const key of ['id', 'endpoint', 'servedEntity'] as const) {
      if (!NAME_PATTERN.test(spec[key])) throw invalidParameter(key, spec[key], 'letters, digits, ".", "_" or "-", starting with a letter or digit');
    }
    if (FLAVOR_CAPABILITIES[spec.flavor].runsUserCode && this.sandbox.kind === 'none' && !this.opts.allowUnsandboxedUserCode) {
      throw new FerryError('INVALID_PARAMETER_VALUE', `Replica '${spec.id}' runs user code (${spec.flavor} flavor) and replicas have no OS sandbox here (${this.sandbox.reason}); `
        + 'the server refuses to run it unsandboxed. Install bubblewrap (bwrap), or set allowUnsandboxedUserCode: true in the server config to accept the risk.');
    }
    if (spec.family === undefined && !(await fsp.stat(spec.artifactDir).catch(() => undefined))?.isDirectory()) {
      throw new FerryError('MODEL_ERROR', `Artifact directory '${spec.artifactDir}' of replica '${spec.id}' does not exist.`);
    }
    const logDir = path.join(this.dirs.logs, spec.endpoint, spec.servedEntity);
    await fsp.mkdir(logDir, { recursive: true });
    // A python replica whose worker a fork server forks: its environment is built first. GPU
    // replicas start their own worker (its device and CUDA environment are the replica's).
    const forked = this.pythonPool !== undefined && FLAVOR_CAPABILITIES[spec.flavor].pythonEnvironment && spec.family === undefined && spec.workloadType === 'CPU';
    const forkPython = forked ? await this.pythonOf(spec.artifactDir) : undefined;

    // From these checks until the replica is in the table (or, while a spawned one's model is
    // staged, its id is in `staging`) nothing awaits, so two concurrent starts of one id (or a
    // start racing close) cannot both pass.
    if (this.closed) throw new FerryError('TEMPORARILY_UNAVAILABLE', 'The runtime is shutting down.');
    if (this.replicas.has(spec.id) || this.staging.has(spec.id)) throw new FerryError('RESOURCE_ALREADY_EXISTS', `Replica '${spec.id}' is already running.`);
    const logFile = path.join(logDir, `${spec.id}.log`);
    const pidFile = path.join(this.dirs.pids, `${spec.id}.json`);
    // A GPU replica takes its GPU here, before anything awaits, and gives it back when its process
    // is gone; pool processes serve CPU replicas only (see `WarmPool.claim` in ./warm-pool.ts).
    const placement = this.gpus.place(spec.id, spec.workloadType);
    const pooled = this.pool.claim(spec, logFile, forked);
    // A pool process was allowed its socket and model directory when it started (see `replicaNodeFlags` in ./spawn.ts).
    const socketPath = pooled?.socketPath ?? socketPathOf(this.dirs.sockets, spec.id);
    const modelDir = pooled?.modelDir ?? path.join(this.dirs.models, `${spec.id}-${randomBytes(4).toString('hex')}`);
    // In the sandbox the process is the replica user from its start; without, it drops after loading.
    const options = replicaOptionsOf({ ...spec, workloadType: placement.workloadType }, {
      socketPath, modelDir, drainTimeoutMs: this.opts.drainTimeoutMs, user: this.sandboxUser === undefined ? this.user : undefined, logLevel: this.opts.logLevel,
      pythonExecutable: this.opts.python, ...(forked ? { pythonLinkFd: PYTHON_LINK_FD } : {}),
    });
    let child: ChildProcess;
    let link: ReplicaLink;
    let exited: Promise<Exit>;
    let cgroup: string | undefined;
    if (pooled !== undefined) {
      ({ child, link, exited } = pooled);
      link.setState({ pool: false, family: spec.family !== undefined });
      // An idle pool process forks nothing: it is moved into its pids cgroup now.
      if (this.pids instanceof PidsLimit && child.pid !== undefined) cgroup = this.pids.attach(`replica-${spec.id}`, child.pid);
    } else {
      let pythonPaths: readonly string[] = [];
      let python = this.opts.python;
      this.staging.add(spec.id);
      try {
        this.spawner.makeSocketDir(socketPath);
        await stageModel(spec, modelDir, this.modelDirModeFor(spec));
        if (FLAVOR_CAPABILITIES[spec.flavor].pythonEnvironment && !forked) {
          // A virtualenv is built (once per distinct requirements) before the replica starts.
          python = this.pythonEnvs === undefined ? this.opts.python : await this.pythonEnvs.python(modelDir);
          pythonPaths = await this.pythonPaths.of(python);
        }
        if (this.closed) throw new FerryError('TEMPORARILY_UNAVAILABLE', 'The runtime is shutting down.');
        if (placement.fallback !== undefined) await appendLog(logFile, 'replica runs on the CPU', { reason: placement.fallback }, 'warn');
        // A fresh process starts inside its pids cgroup: nothing it forks is ever outside.
        const pids = this.pids;
        const enter = pids instanceof PidsLimit ? (file: string, args: readonly string[]) => {
          const prepared = pids.prepare(`replica-${spec.id}`, file, args);
          cgroup = prepared.dir;
          return prepared;
        } : undefined;
        child = this.spawner.spawnReplica(spec, { ...options, loadOptions: { ...options.loadOptions, pythonExecutable: python } }, logFile, pythonPaths, forked, placement, enter);
      } catch (err) {
        if (cgroup !== undefined && this.pids instanceof PidsLimit) this.pids.remove(cgroup);
        this.gpus.release(spec.id);
        await fsp.rm(modelDir, { recursive: true, force: true });
        throw err;
      } finally {
        this.staging.delete(spec.id);
      }
      // Errors after a successful spawn (a failed kill of an exited process) need no handling.
      child.on('error', () => undefined);
      link = linkTo(child, { pool: false, family: spec.family !== undefined }, () => logFile);
      exited = exitOf(child, link, socketPath);
    }
    // Written before anything awaits, so the pid file exists before the exit handler can remove it
    // and before a server crash could leave the replica unlisted. `match` is what orphan cleanup
    // looks for on the command line: the socket, or the pool key a claimed process started with.
    if (child.pid !== undefined) {
      fs.writeFileSync(pidFile, JSON.stringify({ pid: child.pid, socketPath, match: pooled?.token ?? socketPath, startedMs: Date.now() }));
    }
    const r: LocalReplica = {
      handle: { id: spec.id, spec, address: { kind: 'unix', socketPath }, pid: child.pid, fromPool: pooled !== undefined },
      child, link, logFile, pidFile, ready: false, stopRequested: false, oomRssBytes: undefined, processLimitHit: false, pythonWorker: undefined, cgroup,
      gone: exited.then(async (e) => {
        this.gpus.release(spec.id);
        if (r.cgroup !== undefined && this.pids instanceof PidsLimit) {
          PidsLimit.killAll(r.cgroup); // what outlived its outer bwrap
          this.pids.remove(r.cgroup);
        }
        await Promise.all([
          fsp.rm(pidFile, { force: true }), fsp.rm(path.dirname(socketPath), { recursive: true, force: true }), fsp.rm(modelDir, { recursive: true, force: true }),
        ]);
        if (this.replicas.get(spec.id) === r) this.replicas.delete(spec.id);
        return e;
      }),
    };
    this.replicas.set(spec.id, r);
    void r.gone.then((e) => this.reportExit(r, e));
    // The fork server forks the worker while the replica starts; the worker goes with the replica.
    let forkError: unknown;
    if (forkPython !== undefined && this.pythonPool !== undefined) {
      const worker = this.pythonPool.fork(spec, forkPython, child.stdio[PYTHON_LINK_FD] as Socket);
      worker.catch((err: unknown) => {
        forkError = err;
        child.kill('SIGKILL');
      });
      void worker.then((w) => { r.pythonWorker = w; }, () => undefined);
      void r.gone.then(() => worker).then((w) => w.release(), () => undefined);
    }
    if (spec.family !== undefined) {
      const family = spec.family;
      // The link admits only well-formed stage requests, a bounded number at a time.
      link.onMessage((m) => {
        if (m.type === 'stage') void stageMember(link, family, m);
      });
    }

    if (pooled !== undefined) {
      fs.rmSync(pooled.pidFile, { force: true });
      try {
        await stageModel(spec, modelDir, this.modelDirMode);
      } catch (err) {
        r.stopRequested = true;
        child.kill('SIGKILL');
        await r.gone;
        this.pool.fill();
        throw err;
      }
      // If the process is going away the frame is lost, and the start fails below like any
      // replica that exits before it is ready.
      link.send({ type: 'start', options });
    } else {
      const spawned = await new Promise<Error | undefined>((resolve) => {
        child.once('spawn', () => resolve(undefined));
        child.once('error', resolve);
      });
      if (spawned !== undefined) {
        this.replicas.delete(spec.id);
        throw new FerryError('INTERNAL_ERROR', `Could not start replica '${spec.id}': ${spawned.message}`, { cause: spawned });
      }
    }

    let outcome: 'ready' | 'exited' | 'timeout';
    try {
      outcome = await waitReady(r, socketPath, exited, this.opts.startTimeoutMs);
    } finally {
      if (pooled !== undefined) {
        // Refill once this start no longer competes for CPU with the claimed replica's model load.
        this.pool.fill();
      }
    }
    if (outcome === 'ready') {
      r.ready = true;
      r.handle.coldStartMs = performance.now() - calledMs;
      if (pooled !== undefined) this.pool.resetBackoff();
      return r.handle;
    }
    if (outcome === 'timeout') {
      child.kill('SIGKILL');
      await r.gone;
      throw new FerryError('DEADLINE_EXCEEDED', `Replica '${spec.id}' did not become ready within ${this.opts.startTimeoutMs} ms; it was killed.`);
    }
    await r.gone;
    if (r.link.violation !== undefined) throw new ReplicaProtocolError(`Replica '${spec.id}' failed to start: it ${r.link.violation}; it was killed.`);
    if (r.stopRequested) throw new FerryError('TEMPORARILY_UNAVAILABLE', `Replica '${spec.id}' was stopped before it became ready.`);
    if (forkError !== undefined) throw toFerryError(forkError);
    throw new FerryError('MODEL_ERROR', `Replica '${spec.id}' failed to start: ${await startFailure(r)}`);
  }

  async stopReplica(id: string): Promise<void> {
    const r = this.replicas.get(id);
    if (r === undefined) return;
    r.stopRequested = true;
    r.link.send({ type: 'drain' });
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

  async deleteLogs(endpoint: string): Promise<void> {
    if (!NAME_PATTERN.test(endpoint)) throw invalidParameter('endpoint', endpoint, 'an endpoint name');
    await fsp.rm(path.join(this.dirs.logs, endpoint), { recursive: true, force: true });
  }

  async buildLogs(artifactDir: string, flavor: FlavorName, maxBytes: number): Promise<string> {
    if (this.pythonEnvs === undefined || !FLAVOR_CAPABILITIES[flavor].pythonEnvironment) return '';
    return (await readTail(this.pythonEnvs.logFile(await this.pythonEnvs.keyOf(artifactDir)), maxBytes)).toString('utf8');
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

  /** The warm pool now: pids of idle processes (claimable) and of those still starting. */
  warmPool(): { idlePids: number[]; startingPids: number[] } {
    return this.pool.state();
  }

  /** The Python fork servers now: pids of the idle ones, of those still starting and of those claimed by a model. */
  async pythonWarmPool(): Promise<{ idlePids: number[]; startingPids: number[]; claimedPids: number[] }> {
    return (await this.pythonPool?.state()) ?? { idlePids: [], startingPids: [], claimedPids: [] };
  }

  /** The process-count limit per sandbox, or why there is none. */
  get processLimit(): string {
    return this.pids instanceof PidsLimit ? `at most ${this.pids.max} processes per sandbox (pids cgroup)` : `no process limit per sandbox: ${this.pids.unavailable}`;
  }

  /** Stops every replica and every pool process, and waits until they are gone. */
  async close(): Promise<void> {
    this.closed = true;
    this.watchdog.stop();
    await Promise.all([
      ...[...this.replicas.keys()].map((id) => this.stopReplica(id)),
      this.pool.close(),
      this.pythonPool?.close(),
    ]);
    await this.pool.filled();
    if (this.pids instanceof PidsLimit) this.pids.close();
  }

  /** The interpreter of a python model's environment (built first for `virtualenv`), kept warm from now on. */
  private async pythonOf(artifactDir: string): Promise<string> {
    const python = this.pythonEnvs === undefined ? this.opts.python : await this.pythonEnvs.python(artifactDir);
    this.pythonPool?.warm(python);
    return python;
  }


  /**
   * The user a sandboxed process runs as from its start (setpriv): the replica user when the server
   * is root and there is a sandbox; undefined otherwise (no sandbox: the replica drops after loading).
   */
  private get sandboxUser(): UserIds | undefined {
    return this.sandbox.kind === 'bwrap' ? this.user : undefined;
  }

  /**
   * Mode of a private model directory's directories: traversable by the replica user when it runs
   * as that user from its start (its files are then made readable too, see `stageModel` in ./stage.ts); 0700
   * otherwise. Either way it lies under the 0700 `models/` and data directories, which only the
   * server's user can enter; inside the sandbox only the process's own model directory exists.
   */
  private get modelDirMode(): number {
    return this.sandboxUser === undefined ? 0o700 : 0o755;
  }

  /**
   * `modelDirMode`, or 0755 for a flavor whose model is read by a process that is the replica user
   * from its start even without a sandbox (the Python worker, started as that user by a replica
   * that has not dropped yet).
   */
  private modelDirModeFor(spec: ReplicaSpec): number {
    return FLAVOR_CAPABILITIES[spec.flavor].modelReadAsReplicaUser && this.user !== undefined ? 0o755 : this.modelDirMode;
  }


  private async reportExit(r: LocalReplica, e: { code: number | undefined; signal: string | undefined }): Promise<void> {
    // Failed starts are reported by startReplica's rejection, requested stops by stopReplica.
    if (!r.ready || r.stopRequested) return;
    const reason: ReplicaExitReason = r.link.violation !== undefined ? 'protocol' : r.oomRssBytes !== undefined ? 'oom'
      : hitProcessLimit(r) ? 'processes' : 'crashed';
    if (reason === 'crashed') await appendLog(r.logFile, 'replica exited unexpectedly', { code: e.code, signal: e.signal });
    const exit: ReplicaExit = { id: r.handle.id, code: e.code, signal: e.signal, reason, lastLogLines: await lastLines(r.logFile) };
    for (const listener of this.listeners) listener(exit);
  }
}
