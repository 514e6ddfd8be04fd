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
 * Warm pool (`warmPoolSize`, default 1): generic replica processes started ahead of need
 * (`ferry replica --pool <stateDir>/pool/<key>`: Node started, onnxruntime and the replica code
 * loaded and onnxruntime's one-time setup paid, no model). `startReplica` claims an idle one when
 * it can, stages the model into the process's private directory and sends it the replica's
 * options (the uid to drop to included) over the control channel, which skips most of a cold start (measured
 * here for linear.onnx, p50: ~320 ms spawned, ~115 ms claimed, most of the rest being the
 * replica's calibration worker; test/runtime-local.test.ts prints both); else it spawns a
 * replica as before.
 * Either way the same readiness polling, deadline, memory watchdog, exit reports and pid files
 * apply. Details:
 * - Logs: a pool process writes to `pool/<key>.log`; on claim that file is renamed to the
 *   replica's `logs/<endpoint>/<servedEntity>/<id>.log` before the options are sent. The process
 *   keeps writing through the same open file (a rename moves the name, not the inode), so the
 *   replica's log holds the pool process's start lines followed by the replica's own. When the
 *   replica's log file already exists (an id started before) the claim is skipped: a rename would
 *   replace the old log, and a spawned replica appends to it.
 * - Refill: after a claimed replica's start settles (ready or failed, so refilling does not compete
 *   with its model load for CPU) and at `open`, one pool process is started at a time until
 *   `warmPoolSize` exist (idle or starting). A pool process that dies unclaimed is replaced after
 *   a backoff of 1 s, doubling per consecutive death up to 30 s (reset by a claimed replica
 *   becoming ready); its log is kept as `pool/last-failure.log`.
 * - Heap: a replica's V8 heap limit is a flag at process start (half its memory limit), so pool
 *   processes are started for `warmPoolMemoryLimitBytes` and claimed only by specs whose limit
 *   gives the same heap size; other specs spawn.
 * - Orphans: pool pid files are under `pool/` and a claimed replica's pid file names the pool key
 *   as `match`; `open` kills whatever a crashed server left in either. Idle pool processes also
 *   exit by themselves when the server's control channel closes.
 * - Environment and permissions: pool processes get the same scrubbed environment and permission
 *   flags (naming their own socket and private directory); the claim message carries only the
 *   replica's options (socket, private model dir, model file, names, limits, batching, uid/gid).
 *
 * Assumes one server per state directory: `open` kills every replica listed under `pids/` and
 * every pool process listed under `pool/`, and empties `models/`.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { backoffDelayMs, type Backoff } from '../../backoff.js';
import { FerryError, invalidParameter, toFerryError } from '../../errors.js';
import { FLAVOR_CAPABILITIES, insideArtifact, type FlavorName } from '../../flavors/index.js';
import type { LogLevel } from '../../logs/index.js';
import { tooLarge } from '../../multi/replica.js';
import type { Socket } from 'node:net';
import type { StageRequest } from '../../replica/index.js';
import { replicaOptionsOf, toArgv, type ReplicaOptions } from '../../replica/options.js';
import type { ReplicaExit, ReplicaHandle, ReplicaSpec, Runtime } from '../types.js';
import { ReplicaProtocolError } from '../errors.js';
import { ReplicaLink, type LinkState } from './control.js';
import { chooseSandbox, sandboxed, type Sandbox, type SandboxMounts, type SandboxSetting } from './sandbox.js';
import { GpuPool, type GpuPlacement, type GpuSettings } from './gpu.js';
import { PythonEnvironments } from './python-env.js';
import { PidsLimit } from './pids-limit.js';
import { DEFAULT_PRELOAD, holdLinkEnd, PYTHON_LINK_FD, PythonPool } from './python-pool.js';
import { commandLine, descendants, findOnPath, isRunning, processTree, replicaEnv, residentBytes, resolveUser, waitGone, type UserIds } from './proc.js';

export interface LocalRuntimeOptions {
  /** Directory for sockets, logs and pid files, e.g. `<data-dir>/runtime`; created if missing. */
  stateDir: string;
  /** How long a replica may take from spawn to answering `GET /v2/health/ready` with 200. */
  startTimeoutMs: number;
  /** How long a stopping replica may drain in-flight requests before it is killed. */
  drainTimeoutMs: number;
  /** How often each replica's resident memory is compared with its limit; default 1000. */
  memoryPollMs?: number;
  /**
   * Idle pre-started replica processes kept ready to be claimed by any served entity; default 1,
   * 0 disables the pool. Each costs one idle Node process with onnxruntime loaded (~100 MiB
   * resident here, measured in test/runtime-local.test.ts) and saves a claimed replica most of
   * its cold start.
   */
  warmPoolSize?: number;
  /**
   * The memory limit pool processes are started for (their V8 heap limit is half of it, fixed at
   * process start): only a spec with a limit giving the same heap size claims one. Default 2 GiB,
   * the server's default `replicaMemoryLimit`; the server passes its configured limit.
   */
  warmPoolMemoryLimitBytes?: number;
  /**
   * The user replicas drop to after loading their model when the server runs as root: a name from
   * /etc/passwd or "uid:gid" (the server passes its `replicaUser`, default "nobody"). Resolved at
   * `open`. Ignored when the server is not root (a replica cannot change its uid then); undefined:
   * replicas keep the server's uid.
   */
  replicaUser?: string;
  /** The level replicas log at (the server passes its `logLevel`); default info. */
  logLevel?: LogLevel;
  /**
   * The OS sandbox around every replica process (./sandbox.ts): `auto` (default) uses bubblewrap
   * when it works here, `bwrap` requires it (`open` rejects otherwise), `none` never uses it.
   */
  sandbox?: SandboxSetting;
  /**
   * Whether replicas that run user code (js and python models) may start without a sandbox; default
   * false: they are refused, naming this setting. Without a sandbox such code runs as the server's
   * user until the drop (root when the server is root) with only Node's permission model around it.
   */
  allowUnsandboxedUserCode?: boolean;
  /**
   * The Python interpreter python-flavor models run in (the server's `python` setting): a path, or
   * a command name looked up on the server's PATH at `open` (default `python3`).
   */
  python?: string;
  /**
   * How a python model's environment is made (the server's `pythonEnvManager`): `local` runs it in
   * `python` as it is; `virtualenv` builds a venv per distinct requirements (./python-env.ts).
   */
  pythonEnvManager?: 'local' | 'virtualenv';
  /** Extra `pip install` arguments for `virtualenv` builds (the server's `pythonPipArgs`). */
  pythonPipArgs?: string[];
  /**
   * Idle Python fork servers kept per interpreter (./python-pool.ts); default 1, 0 disables them
   * (each python replica then starts its own worker). Each costs one idle interpreter with the
   * `pythonPreload` modules imported (~120 MiB resident for numpy, pandas and scikit-learn).
   */
  pythonWarmPoolSize?: number;
  /** The modules a fork server imports before it forks workers; default numpy, pandas, scikit-learn, cloudpickle. */
  pythonPreload?: string[];
  /**
   * Most processes (threads included) in one sandbox: a replica, or a Python fork server with all
   * of its model's workers (./pids-limit.ts); default 512, 0 for no limit. A sandbox that hits it
   * is killed. Needs a writable pids cgroup (`processLimit` says whether there is one).
   */
  maxProcessesPerSandbox?: number;
  /**
   * GPUs for `GPU_*` replicas (./gpu.ts; the server's `gpus`, `gpuFallback`, `gpuLibraries`):
   * default discovered, a GPU replica refused when there is none, driver libraries from ldconfig.
   */
  gpu?: Partial<GpuSettings>;
}

/** dist/src/runtime/local/index.js → repository root is four levels up. */
const REPO_ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const FERRY_BIN = path.join(REPO_ROOT, 'bin', 'ferry.js');
/**
 * What of Ferry's checkout a replica may read: its code and dependencies, not the rest (the demo's
 * data directory `./.ferry`, with the database and the admin token, lives in the checkout).
 * `package.json` is read by Node's module loader (the package scope of `dist/`).
 */
const FERRY_CODE_PATHS = ['dist', 'bin', 'node_modules', 'package.json', 'python'].map((p) => path.join(REPO_ROOT, p));
/** Linux `sun_path` is 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;
/** A replica's socket file, in a directory of its own under `sockets/`. */
const SOCKET_FILE = 'replica.sock';
const READY_POLL_MS = 20;
/** One readiness probe may take this long before it counts as "not ready yet". */
const PROBE_TIMEOUT_MS = 1000;
/** How long the Python interpreter may take to list its paths (`pythonEnvironment`); an import-free start takes ~20 ms. */
const PYTHON_PROBE_TIMEOUT_MS = 10_000;
const DEBIAN_ALTERNATIVES = '/etc/alternatives';
/** Bound into every sandbox already (./sandbox.ts): a Python path under them needs no bind of its own. */
const SYSTEM_DIRS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32'];

function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}
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
/** Delay before replacing a pool process that died unclaimed: 1 s, doubling per consecutive death, at most 30 s. */
const POOL_BACKOFF: Backoff = { baseMs: 1000, maxMs: 30_000 };
const DEFAULT_WARM_POOL_SIZE = 1;
const DEFAULT_WARM_POOL_MEMORY_LIMIT_BYTES = 2 * 1024 * MIB;
const DEFAULT_MAX_PROCESSES_PER_SANDBOX = 512;

type Exit = { code: number | undefined; signal: string | undefined };

/** A pre-started generic replica process (see the file comment). */
interface PoolProcess {
  /** `<stateDir>/pool/<key>`: its `--pool` argument, the identity orphan cleanup matches. */
  token: string;
  /** The socket and private model directory a replica that claims it uses (named in its permission flags). */
  socketPath: string;
  modelDir: string;
  child: ChildProcess;
  /** Its control channel (see ./control.ts). */
  link: ReplicaLink;
  /** Its log; renamed to the replica's log when claimed. */
  logFile: string;
  pidFile: string;
  /** Set when it reported `warm`: it waits for its options. */
  warm: boolean;
  /** Set when a replica took it; from then on it is that replica's process. */
  claimed: boolean;
  stopRequested: boolean;
  exited: Promise<Exit>;
  /** Settles once it is warm, or gone. */
  warmOrGone: Promise<void>;
  /** Settles once it exited and, unless claimed, its pool files are cleaned up. */
  gone: Promise<void>;
}

interface LocalReplica {
  handle: ReplicaHandle;
  child: ChildProcess;
  link: ReplicaLink;
  logFile: string;
  pidFile: string;
  /** Set once `startReplica` resolved; only ready replicas are listed and reported by `onExit`. */
  ready: boolean;
  stopRequested: boolean;
  /** Set by the memory watchdog just before it kills the replica. */
  oomRssBytes: number | undefined;
  /** Settles once the process exited and its pid file, socket and private model directory are removed. */
  gone: Promise<Exit>;
  /** Its pids cgroup (./pids-limit.ts), when there is one. */
  cgroup: string | undefined;
}

export class LocalRuntime implements Runtime {
  private readonly replicas = new Map<string, LocalReplica>();
  private readonly listeners: ((exit: ReplicaExit) => void)[] = [];
  private readonly watchdog: NodeJS.Timeout;
  private watching = false;
  private closed = false;
  /** Each Python interpreter's paths, asked once (`pythonEnvironment`). */
  private readonly pythonPaths = new Map<string, Promise<readonly string[]>>();
  /** The virtualenvs of python models, when `pythonEnvManager` is `virtualenv`. */
  private readonly pythonEnvs: PythonEnvironments | undefined;
  /** Python fork servers (./python-pool.ts), unless `pythonWarmPoolSize` is 0 or python code may not run here. */
  private readonly pythonPool: PythonPool | undefined;
  /** Pool processes not (yet) claimed: starting and idle. */
  private readonly pool = new Set<PoolProcess>();
  private readonly poolHeapMiB: number;
  /** The refill loop while it runs (one at a time). */
  private poolFill: Promise<void> | undefined;
  /** Consecutive pool processes that died unclaimed: the refill backoff's exponent. */
  private poolDeaths = 0;
  /** Ends the refill loop's backoff wait early (close). */
  private poolWake: (() => void) | undefined;
  private poolSeq = 0;
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
    // Fork servers run user code's workers: only where such code may run at all.
    this.pythonPool = python.warmPoolSize > 0 && (sandbox.kind === 'bwrap' || opts.allowUnsandboxedUserCode)
      ? new PythonPool({
        size: python.warmPoolSize, preload: python.preload, sandbox, user: this.user, modelsDir: dirs.models,
        poolDir: dirs.pool, logsDir: dirs.logs, modelDirMode: this.modelDirMode, pythonPaths: (p) => this.pythonEnvironment(p),
        stage: (spec, dir) => stageModel(spec, dir, this.modelDirMode), pids: pids instanceof PidsLimit ? pids : undefined,
      })
      : undefined;
    this.pythonEnvs = opts.pythonEnvManager === 'virtualenv'
      ? new PythonEnvironments({ dir: path.join(opts.stateDir, 'python-envs'), basePython: opts.python, pipArgs: opts.pythonPipArgs, systemSitePackages: true })
      : undefined;
    this.watchdog = setInterval(() => void this.checkMemory(), opts.memoryPollMs);
    this.watchdog.unref();
    this.poolHeapMiB = heapMiBOf(opts.warmPoolMemoryLimitBytes);
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
    await Promise.all([killOrphans(dirs.pids, dirs.sockets), killOrphans(dirs.pool, dirs.sockets)]);
    // Logs of pool processes that never served anything, and the private model directories of
    // processes that no longer exist.
    await Promise.all([
      ...(await fsp.readdir(dirs.pool)).map((n) => fsp.rm(path.join(dirs.pool, n), { force: true })),
      ...(await fsp.readdir(dirs.models)).map((n) => fsp.rm(path.join(dirs.models, n), { recursive: true, force: true })),
      ...(await fsp.readdir(dirs.sockets)).map((n) => fsp.rm(path.join(dirs.sockets, n), { recursive: true, force: true })),
    ]);
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
    rt.fillPool();
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
    // is gone; pool processes serve CPU replicas only (see `claimPoolProcess`).
    const placement = this.gpus.place(spec.id, spec.workloadType);
    const pooled = this.claimPoolProcess(spec, logFile, forked);
    // A pool process was allowed its socket and model directory when it started (see `replicaNodeFlags`).
    const socketPath = pooled?.socketPath ?? this.socketPathOf(spec.id);
    const modelDir = pooled?.modelDir ?? path.join(this.dirs.models, `${spec.id}-${randomBytes(4).toString('hex')}`);
    // In the sandbox the process is the replica user from its start; without, it drops after loading.
    const options = replicaOptionsOf({ ...spec, workloadType: placement.workloadType }, {
      socketPath, modelDir, drainTimeoutMs: this.opts.drainTimeoutMs, user: this.sandboxUser === undefined ? this.user : undefined, logLevel: this.opts.logLevel,
      pythonExecutable: this.opts.python, ...(forked ? { pythonLinkFd: PYTHON_LINK_FD } : {}),
    });
    let child: ChildProcess;
    let link: ReplicaLink;
    let exited: Promise<Exit>;
    if (pooled !== undefined) {
      ({ child, link, exited } = pooled);
      link.setState({ pool: false, family: spec.family !== undefined });
    } else {
      let pythonPaths: readonly string[] = [];
      let python = this.opts.python;
      this.staging.add(spec.id);
      try {
        this.makeSocketDir(socketPath);
        await stageModel(spec, modelDir, this.modelDirModeFor(spec));
        if (FLAVOR_CAPABILITIES[spec.flavor].pythonEnvironment && !forked) {
          // A virtualenv is built (once per distinct requirements) before the replica starts.
          python = this.pythonEnvs === undefined ? this.opts.python : await this.pythonEnvs.python(modelDir);
          pythonPaths = await this.pythonEnvironment(python);
        }
        if (this.closed) throw new FerryError('TEMPORARILY_UNAVAILABLE', 'The runtime is shutting down.');
        if (placement.fallback !== undefined) await appendLog(logFile, 'replica runs on the CPU', { reason: placement.fallback }, 'warn');
        child = this.spawnReplica(spec, { ...options, loadOptions: { ...options.loadOptions, pythonExecutable: python } }, logFile, pythonPaths, forked, placement);
      } catch (err) {
        this.gpus.release(spec.id);
        await fsp.rm(modelDir, { recursive: true, force: true });
        throw err;
      } finally {
        this.staging.delete(spec.id);
      }
      // Errors after a successful spawn (a failed kill of an exited process) need no handling.
      child.on('error', () => undefined);
      link = this.linkTo(child, { pool: false, family: spec.family !== undefined }, () => logFile);
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
      child, link, logFile, pidFile, ready: false, stopRequested: false, oomRssBytes: undefined, cgroup: this.attachPids(child, spec.id),
      gone: exited.then(async (e) => {
        this.gpus.release(spec.id);
        if (r.cgroup !== undefined && this.pids instanceof PidsLimit) this.pids.remove(r.cgroup);
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
        this.fillPool();
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
      outcome = await this.waitReady(r, socketPath, exited);
    } finally {
      if (pooled !== undefined) {
        // Refill once this start no longer competes for CPU with the claimed replica's model load.
        this.fillPool();
      }
    }
    if (outcome === 'ready') {
      r.ready = true;
      r.handle.coldStartMs = performance.now() - calledMs;
      if (pooled !== undefined) this.poolDeaths = 0;
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
    const pids = (warm: boolean): number[] => [...this.pool].filter((p) => p.warm === warm && p.child.pid !== undefined).map((p) => p.child.pid ?? 0);
    return { idlePids: pids(true), startingPids: pids(false) };
  }

  /** The Python fork servers now: pids of the idle ones and of those claimed by a model. */
  async pythonWarmPool(): Promise<{ idlePids: number[]; claimedPids: number[] }> {
    return (await this.pythonPool?.state()) ?? { idlePids: [], claimedPids: [] };
  }

  /** The process-count limit per sandbox, or why there is none. */
  get processLimit(): string {
    return this.pids instanceof PidsLimit ? `at most ${this.pids.max} processes per sandbox (pids cgroup)` : `no process limit per sandbox: ${this.pids.unavailable}`;
  }

  /** Stops every replica and every pool process, and waits until they are gone. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.watchdog);
    this.poolWake?.();
    await Promise.all([
      ...[...this.replicas.keys()].map((id) => this.stopReplica(id)),
      ...[...this.pool].map((p) => this.stopPoolProcess(p)),
      this.pythonPool?.close(),
    ]);
    await this.poolFill;
    if (this.pids instanceof PidsLimit) this.pids.close();
  }

  /** The interpreter of a python model's environment (built first for `virtualenv`), kept warm from now on. */
  private async pythonOf(artifactDir: string): Promise<string> {
    const python = this.pythonEnvs === undefined ? this.opts.python : await this.pythonEnvs.python(artifactDir);
    this.pythonPool?.warm(python);
    return python;
  }

  /** Puts a replica's process tree into a pids cgroup of its own (./pids-limit.ts), when there is the limit. */
  private attachPids(child: ChildProcess, id: string): string | undefined {
    return this.pids instanceof PidsLimit && child.pid !== undefined ? this.pids.attach(`replica-${id}`, child.pid) : undefined;
  }

  /**
   * `sockets/<id>/replica.sock`, or `sockets/<sha256(id)[0:16]>/replica.sock` when that is too long
   * (see the file comment): a directory per process, so that a sandbox can bind exactly its own.
   */
  private socketPathOf(id: string): string {
    const plain = path.join(this.dirs.sockets, id, SOCKET_FILE);
    if (Buffer.byteLength(plain) <= MAX_SOCKET_PATH_BYTES) return plain;
    return this.hashedSocketPath(id);
  }

  private hashedSocketPath(name: string): string {
    return path.join(this.dirs.sockets, createHash('sha256').update(name).digest('hex').slice(0, 16), SOCKET_FILE);
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
   * as that user from its start (its files are then made readable too, see `stageModel`); 0700
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

  /**
   * What the Python interpreter `python` reads besides the system directories: its prefixes and
   * every `sys.path` entry (a virtualenv, a `.pth` file's directories), asked of the interpreter
   * once, bound read-only into the sandbox of a python replica. An interpreter that does not run
   * gives none: the replica's own start then fails with the interpreter's error.
   */
  private pythonEnvironment(python: string): Promise<readonly string[]> {
    const known = this.pythonPaths.get(python);
    if (known !== undefined) return known;
    const paths = new Promise<readonly string[]>((resolve) => {
      const script = 'import json, sys; print(json.dumps([sys.executable, sys.prefix, sys.exec_prefix, sys.base_prefix, *sys.path]))';
      execFile(python, ['-I', '-c', script], { timeout: PYTHON_PROBE_TIMEOUT_MS, env: { PATH: '/usr/bin:/bin' } }, (err, stdout) => {
        let paths: unknown;
        try {
          paths = err === null ? JSON.parse(stdout) : [];
        } catch {
          paths = [];
        }
        // Directories outside the system ones the sandbox binds anyway (a venv's bin/python is a
        // link into /usr/bin, which must not be recreated over the bound /usr).
        const list = Array.isArray(paths)
          ? paths.filter((p): p is string => typeof p === 'string' && path.isAbsolute(p) && isDirectory(p) && !SYSTEM_DIRS.some((d) => p === d || p.startsWith(`${d}/`)))
          : [];
        // Debian's BLAS and LAPACK (numpy's libblas.so.3) are symbolic links through /etc/alternatives.
        const alternatives = fs.existsSync(DEBIAN_ALTERNATIVES) ? [DEBIAN_ALTERNATIVES] : [];
        resolve([...new Set([...list, ...alternatives])]);
      });
    });
    this.pythonPaths.set(python, paths);
    return paths;
  }

  /**
   * A fresh directory (0700) for one process's socket (a SIGKILLed one may have left it), owned
   * by the user the process runs as. Synchronous: a pool process's is made just before its spawn.
   */
  private makeSocketDir(socketPath: string): void {
    const dir = path.dirname(socketPath);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { mode: 0o700 });
    const user = this.sandboxUser;
    if (user !== undefined) fs.chownSync(dir, user.uid, user.gid);
  }

  private spawnReplica(spec: ReplicaSpec, options: ReplicaOptions, logFile: string, extraReads: readonly string[], pythonLink: boolean, placement: GpuPlacement): ChildProcess {
    const flags = [...replicaNodeFlags({ modelDir: options.dir, socketPath: options.socketPath }, spec.flavor), `--max-old-space-size=${heapMiBOf(spec.memoryLimitBytes)}`];
    return this.spawnNode(
      [...flags, FERRY_BIN, 'replica', ...toArgv({ control: true, options })],
      { modelDir: options.dir, socketPath: options.socketPath, placement, extraReads, pythonLink }, logFile,
    );
  }

  /**
   * Starts `node <args>` in the sandbox (when there is one) with the scrubbed environment, its
   * output appended to `logFile` (0600) and the control channel on descriptor 3. The V8 heap flag
   * in `args` gets half the memory limit: the rest is for Node itself and onnxruntime's native
   * memory, which the heap flag does not bound (the watchdog does). 256 MiB → 128 MiB heap. The
   * channel is the replica's lifeline: when the server dies, even by SIGKILL, it closes and the
   * replica drains and exits (an idle pool process just exits).
   */
  private spawnNode(
    args: string[], where: { modelDir: string; socketPath: string; placement: GpuPlacement; extraReads?: readonly string[]; pythonLink: boolean }, logFile: string,
  ): ChildProcess {
    const mounts: SandboxMounts = {
      readOnly: [process.execPath, ...FERRY_CODE_PATHS, ...libraryPaths(), ...(where.extraReads ?? []), ...where.placement.readOnly],
      modelDir: where.modelDir,
      socketDir: path.dirname(where.socketPath),
      devices: where.placement.devices,
    };
    const { file, args: argv } = sandboxed(this.sandbox, mounts, this.sandboxUser, [process.execPath, ...args]);
    const fd = fs.openSync(logFile, 'a', 0o600);
    try {
      // fd 4, when asked for: the link to a Python worker a fork server forks (./python-pool.ts).
      const child = spawn(file, argv, { cwd: where.modelDir, env: { ...replicaEnv(process.env), ...where.placement.env }, stdio: ['ignore', fd, fd, 'pipe', ...(where.pythonLink ? ['pipe' as const] : [])] });
      if (where.pythonLink) holdLinkEnd(child.stdio[PYTHON_LINK_FD] as Socket);
      return child;
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * The runtime's end of `child`'s control channel. A protocol violation (see ./control.ts) is
   * noted in the process's log (`logFile()`: a pool process's log moves when it is claimed) and
   * the process is SIGKILLed; its exit is then reported with reason `protocol`.
   */
  private linkTo(child: ChildProcess, state: LinkState, logFile: () => string): ReplicaLink {
    const link = new ReplicaLink(child.stdio[3] as Socket, state, (what) => {
      child.kill('SIGKILL');
      void appendLog(logFile(), 'replica killed: it broke the control protocol', { violation: what });
    });
    return link;
  }

  /**
   * Takes an idle, live pool process for `spec` out of the pool and moves its log file to
   * `logFile`; undefined when there is none (or its heap size differs, or `logFile` exists).
   * Synchronous, so two concurrent starts never take the same process.
   */
  private claimPoolProcess(spec: ReplicaSpec, logFile: string, forked: boolean): PoolProcess | undefined {
    // Pool processes start with the flags of tensor flavors: an llm replica needs more, a js replica
    // fewer (no native addons; see `replicaNodeFlags`); they see no GPU (a CPU placement). A python
    // replica whose worker is forked for it starts no process and reads no Python: it fits.
    if (!(FLAVOR_CAPABILITIES[spec.flavor].warmPool || forked) || spec.workloadType !== 'CPU' || heapMiBOf(spec.memoryLimitBytes) !== this.poolHeapMiB || fs.existsSync(logFile)) return undefined;
    for (const p of this.pool) {
      if (!p.warm || p.link.violation !== undefined || p.child.exitCode !== null || p.child.signalCode !== null) continue;
      try {
        fs.renameSync(p.logFile, logFile);
      } catch {
        continue; // its log vanished (someone cleaned the directory): leave it to the exit path
      }
      p.logFile = logFile;
      p.claimed = true;
      this.pool.delete(p);
      // Its link end for a forked Python worker (fd 4) is not needed by other flavors.
      if (!forked) (p.child.stdio[PYTHON_LINK_FD] as Socket | null)?.destroy();
      return p;
    }
    return undefined;
  }

  /** Starts pool processes, one at a time, until `warmPoolSize` exist; a no-op while it runs. */
  private fillPool(): void {
    if (this.poolFill !== undefined || this.closed || this.opts.warmPoolSize === 0) return;
    this.poolFill = (async () => {
      while (!this.closed && this.pool.size < this.opts.warmPoolSize) {
        if (this.poolDeaths > 0) {
          const delayMs = backoffDelayMs(this.poolDeaths, POOL_BACKOFF);
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, delayMs);
            this.poolWake = () => { clearTimeout(timer); resolve(); };
          });
          this.poolWake = undefined;
          if (this.closed) break;
        }
        let p: PoolProcess;
        try {
          p = this.spawnPoolProcess();
        } catch {
          this.poolDeaths++; // e.g. the log file could not be opened; retried after the backoff
          continue;
        }
        await p.warmOrGone;
      }
    })().finally(() => {
      this.poolFill = undefined;
    });
  }

  private spawnPoolProcess(): PoolProcess {
    const key = `${++this.poolSeq}-${randomBytes(4).toString('hex')}`;
    const token = path.join(this.dirs.pool, key);
    const logFile = `${token}.log`;
    const pidFile = `${token}.json`;
    // Its socket and (still empty) model directory are fixed now: the permission flags name them.
    const socketPath = this.hashedSocketPath(token);
    const modelDir = path.join(this.dirs.models, `pool-${key}`);
    fs.mkdirSync(modelDir, { mode: this.modelDirMode });
    fs.chmodSync(modelDir, this.modelDirMode); // not masked by umask
    const flags = [...replicaNodeFlags({ modelDir, socketPath }), `--max-old-space-size=${this.poolHeapMiB}`];
    let child: ChildProcess;
    try {
      this.makeSocketDir(socketPath);
      child = this.spawnNode([...flags, FERRY_BIN, 'replica', ...toArgv({ control: true, pool: token })], { modelDir, socketPath, placement: this.gpus.place(token, 'CPU'), pythonLink: this.pythonPool !== undefined }, logFile);
    } catch (err) {
      fs.rmSync(modelDir, { recursive: true, force: true });
      fs.rmSync(path.dirname(socketPath), { recursive: true, force: true });
      throw err;
    }
    child.on('error', () => undefined);
    if (child.pid !== undefined) fs.writeFileSync(pidFile, JSON.stringify({ pid: child.pid, match: token, startedMs: Date.now() }));
    let becameWarm: () => void = () => undefined;
    const warm = new Promise<void>((resolve) => { becameWarm = resolve; });
    const link = this.linkTo(child, { pool: true, family: false }, () => p.logFile);
    const exited = exitOf(child, link, socketPath);
    const p: PoolProcess = {
      token, socketPath, modelDir, child, link, logFile, pidFile, warm: false, claimed: false, stopRequested: false, exited,
      warmOrGone: Promise.race([warm, exited.then(() => undefined)]),
      gone: exited.then(async () => {
        this.pool.delete(p);
        if (p.claimed) return;
        await Promise.all([fsp.rm(pidFile, { force: true }), fsp.rm(modelDir, { recursive: true, force: true }), fsp.rm(path.dirname(socketPath), { recursive: true, force: true })]);
        if (p.stopRequested || this.closed) {
          await fsp.rm(p.logFile, { force: true });
        } else {
          await fsp.rename(p.logFile, path.join(this.dirs.pool, 'last-failure.log')).catch(() => undefined);
          this.poolDeaths++;
          this.fillPool();
        }
      }),
    };
    link.onMessage((msg) => {
      if (msg.type !== 'warm') return;
      p.warm = true;
      becameWarm();
    });
    this.pool.add(p);
    return p;
  }

  private async stopPoolProcess(p: PoolProcess): Promise<void> {
    p.stopRequested = true;
    p.link.send({ type: 'drain' }); // idle in the pool, it exits at once
    const timer = setTimeout(() => p.child.kill('SIGKILL'), KILL_GRACE_MS);
    await p.gone;
    clearTimeout(timer);
  }

  /**
   * Polls the readiness probe every 20 ms until 200, the process exits, or the start deadline. The
   * replica's `listening` message cuts the wait before the next probe short.
   */
  private async waitReady(r: LocalReplica, socketPath: string, exited: Promise<unknown>): Promise<'ready' | 'exited' | 'timeout'> {
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    let wake: (() => void) | undefined;
    r.link.onMessage((msg) => {
      if (msg.type === 'listening' && !settled) wake?.();
    });
    const deadline = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), this.opts.startTimeoutMs); });
    const poll = async (): Promise<'ready'> => {
      while (!settled) {
        if (await probeReady(socketPath)) return 'ready';
        await new Promise<void>((res) => {
          const t = setTimeout(res, READY_POLL_MS);
          wake = () => { clearTimeout(t); res(); };
        });
        wake = undefined;
      }
      return 'ready'; // unreachable in effect: the race below has already settled
    };
    try {
      const outcome = await Promise.race([poll(), deadline, exited.then(() => 'exited' as const)]);
      // A replica can answer its probe and die an instant later; trust the exit, and a protocol
      // violation (its kill may not have landed yet).
      if (outcome === 'ready' && (r.child.exitCode !== null || r.child.signalCode !== null || r.link.violation !== undefined)) return 'exited';
      return outcome;
    } finally {
      settled = true;
      clearTimeout(timer);
      wake?.();
    }
  }

  /** The watchdog: SIGKILLs every replica whose resident memory exceeds its limit. */
  private async checkMemory(): Promise<void> {
    if (this.watching) return;
    this.watching = true;
    try {
      // The whole process tree counts: in the sandbox the child is bwrap and the replica a
      // descendant; a python replica's worker is its child (a GPU worker has no address-space
      // limit of its own: CUDA reserves far more address space than it uses).
      const tree = await processTree();
      await Promise.all([...this.replicas.values()].map(async (r) => {
        const pid = r.child.pid;
        const rssBytes = pid === undefined ? undefined : await residentBytes(descendants(pid, tree));
        if (rssBytes === undefined || rssBytes <= r.handle.spec.memoryLimitBytes || r.oomRssBytes !== undefined) return;
        r.oomRssBytes = rssBytes;
        await appendLog(r.logFile, 'replica killed: over its memory limit', { rssBytes, memoryLimitBytes: r.handle.spec.memoryLimitBytes });
        r.child.kill('SIGKILL');
      }));
      // A sandbox that refused a fork (a fork bomb) is killed: the replica is reported as crashed.
      for (const r of this.replicas.values()) {
        if (r.cgroup === undefined || !PidsLimit.exceeded(r.cgroup) || r.child.exitCode !== null) continue;
        await appendLog(r.logFile, 'replica killed: its sandbox reached the process limit', { maxProcesses: this.pids instanceof PidsLimit ? this.pids.max : undefined });
        r.child.kill('SIGKILL');
      }
      this.pythonPool?.checkLimits();
    } finally {
      this.watching = false;
    }
  }

  private async reportExit(r: LocalReplica, e: { code: number | undefined; signal: string | undefined }): Promise<void> {
    // Failed starts are reported by startReplica's rejection, requested stops by stopReplica.
    if (!r.ready || r.stopRequested) return;
    const reason = r.link.violation !== undefined ? 'protocol' : r.oomRssBytes !== undefined ? 'oom' : 'crashed';
    if (reason === 'crashed') await appendLog(r.logFile, 'replica exited unexpectedly', { code: e.code, signal: e.signal });
    const exit: ReplicaExit = { id: r.handle.id, code: e.code, signal: e.signal, reason, lastLogLines: await lastLines(r.logFile) };
    for (const listener of this.listeners) listener(exit);
  }
}

/** The V8 heap limit of a replica: half its memory limit (see `LocalRuntime.spawnNode`), at least 16 MiB. */
function heapMiBOf(memoryLimitBytes: number): number {
  return Math.max(16, Math.floor(memoryLimitBytes / 2 / MIB));
}

/**
 * In the sandbox the child is bwrap. The processes inside outlive it by an instant (the pid
 * namespace's init exits just after its child; killed, bwrap takes them with it an instant
 * later), and one it forked while it was being killed, before that child asked to die with it,
 * would outlive it for good. So after the child's exit, the processes that still name its socket
 * on their command line (every process of a sandbox does) are SIGKILLed, every
 * `STRAGGLER_POLL_MS`, until none is left, for at most `SANDBOX_TEARDOWN_WAIT_MS`.
 */
const SANDBOX_TEARDOWN_WAIT_MS = 5000;
const STRAGGLER_POLL_MS = 20;

/**
 * Settles when `child` has exited and no process of its sandbox is left (see
 * `SANDBOX_TEARDOWN_WAIT_MS`), or at once if it never started (no exit event follows a failed
 * spawn). `match` is on the command line of each of its processes (its socket path).
 */
function exitOf(child: ChildProcess, link: ReplicaLink, match: string): Promise<Exit> {
  return new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      link.markExited();
      void (async () => {
        const deadline = Date.now() + SANDBOX_TEARDOWN_WAIT_MS;
        while ((await killMatching(match)) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, STRAGGLER_POLL_MS));
        link.close();
        resolve({ code: code ?? undefined, signal: signal ?? undefined });
      })();
    });
    child.once('error', () => {
      if (child.pid === undefined) resolve({ code: undefined, signal: undefined });
    });
  });
}

/**
 * Node flags every replica process (spawned or pooled) starts with: Node's permission model, which
 * denies the process's JavaScript any file it is not allowed here, child processes and WASI.
 * Reads: Ferry's code (`FERRY_CODE_PATHS`, also by their real paths, since the module loader
 * resolves symlinks such as a linked `node_modules`), the replica's private model directory and its
 * socket. Writes: its socket only (listening on a Unix socket, chmod and unlink need read and
 * write on its path); logs go to the stdout/stderr descriptors it inherits. Worker threads (the
 * model worker) and, except for the js flavor, native addons (onnxruntime) are allowed: a js
 * replica runs a user's JavaScript and needs no addon, so `process.dlopen` (a `.so` shipped in the
 * artifact) throws ERR_DLOPEN_DISABLED there, and it never imports onnxruntime (flavors are
 * imported on first use). The permission model binds
 * JavaScript only: native code (onnxruntime, a model's custom ops) is bound by the OS, hence the
 * uid drop when the server is root. Two warnings are silenced, as they would open every replica
 * log with the same lines: that the permission model is experimental (ExperimentalWarning), and
 * that --allow-worker and --allow-addons weaken it (SecurityWarning; both are needed, see above).
 * Other warnings stay.
 *
 * Which of these rights a flavor gets is its `FlavorCapabilities` (src/flavors/capabilities.ts).
 * The llm flavor (node-llama-cpp) needs two more rights, for its start only but the permission
 * model cannot take them back: reading the system library directories and /etc/os-release (it
 * looks for glibc and the distribution before choosing a prebuilt llama.cpp binary), and starting
 * child processes (on Linux it forks a copy of itself that loads the binary first, so that an
 * incompatible one crashes that child, not the replica). Its children inherit these flags. The
 * python flavor starts its Python worker as a child process (and loads no addon); the permission
 * model does not bind Python, the OS does (the worker runs as the replica user). Pool processes
 * start without these rights, so llm and python replicas are always spawned.
 */
export function replicaNodeFlags(paths: { modelDir: string; socketPath: string }, flavor?: FlavorName): string[] {
  // A pool process serves any flavor with the pool's rights (`warmPool`): addons, no children.
  const caps = flavor === undefined ? { nativeAddons: true, childProcesses: false, systemReads: [] } : FLAVOR_CAPABILITIES[flavor];
  const reads = new Set([...ferryCodePaths(), paths.modelDir, paths.socketPath, ...caps.systemReads]);
  return [
    '--experimental-permission', '--disable-warning=ExperimentalWarning', '--disable-warning=SecurityWarning', '--allow-worker',
    ...(caps.nativeAddons ? ['--allow-addons'] : []),
    ...(caps.childProcesses ? ['--allow-child-process'] : []),
    ...[...reads].map((p) => `--allow-fs-read=${p}`), `--allow-fs-write=${paths.socketPath}`,
  ];
}

let codePaths: string[] | undefined;
/** `FERRY_CODE_PATHS` and, where they differ, their real paths; computed once. */
export function ferryCodePaths(): string[] {
  codePaths ??= FERRY_CODE_PATHS.flatMap((p) => {
    try {
      return [p, fs.realpathSync(p)];
    } catch {
      return [p]; // missing (e.g. no bin/ in a packaged copy): nothing to resolve
    }
  });
  return codePaths;
}

/**
 * Answers a family replica's `StageRequest`: the server finds the member (`family.stage`, which
 * refuses models outside the family) and its model file's bytes go back as the payload of a
 * control frame, so the replica needs no file access. A file over the replica's cache budget is
 * refused here, unread. Failures are answered with the error.
 */
async function stageMember(link: ReplicaLink, family: NonNullable<ReplicaSpec['family']>, m: StageRequest): Promise<void> {
  try {
    const { artifactDir, modelFile } = await family.stage(m.name, m.version);
    const file = path.join(artifactDir, insideArtifact(modelFile, 'The model file'));
    const st = await fsp.lstat(file);
    if (!st.isFile()) throw new FerryError('MODEL_ERROR', `Model file '${modelFile}' of model '${m.name}' version ${m.version} is not a regular file.`);
    if (st.size > family.cacheBytes) throw tooLarge(`${m.name}/${m.version}`, st.size, family.cacheBytes);
    link.sendStaged({ id: m.id, modelFile, bytes: await fsp.readFile(file) });
  } catch (err) {
    link.sendStaged({ id: m.id, error: toFerryError(err).toBody() });
  }
}

/**
 * Fills `modelDir` (a replica process's private directory) with `spec.artifactDir`'s tree: hard
 * links, so staging a model of any size costs one link per file, or copies where links are refused
 * (another file system: EXDEV; protected_hardlinks or a file system without links: EPERM). Only
 * directories and regular files are staged: a symbolic link could point the replica at files it
 * must not read, so one is refused. Rejects with MODEL_ERROR.
 */
async function stageModel(spec: ReplicaSpec, modelDir: string, dirMode: number): Promise<void> {
  const mkdir = async (dir: string): Promise<void> => {
    await fsp.mkdir(dir, { recursive: true, mode: dirMode });
    await fsp.chmod(dir, dirMode); // not masked by umask
  };
  if (spec.family !== undefined) {
    // A family replica starts with no model; its members arrive over the control channel (`stageMember`).
    await mkdir(modelDir);
    return;
  }
  const stage = async (from: string, to: string): Promise<void> => {
    await mkdir(to);
    for (const entry of await fsp.readdir(from, { withFileTypes: true })) {
      const src = path.join(from, entry.name);
      const dest = path.join(to, entry.name);
      if (entry.isDirectory()) {
        await stage(src, dest);
      } else if (entry.isFile()) {
        await fsp.link(src, dest).catch(async (err: NodeJS.ErrnoException) => {
          if (err.code !== 'EXDEV' && err.code !== 'EPERM') throw err;
          await fsp.copyFile(src, dest);
        });
        // A replica that runs as the replica user from its start must read its files. A hard link
        // shares the stored artifact's inode, so this makes the stored file 0644 too: it stays
        // out of other users' reach behind the 0700 data directory, and a replica sees only its
        // own model directory (the sandbox binds nothing else).
        if (dirMode !== 0o700) await fsp.chmod(dest, 0o644);
      } else {
        throw new Error(`'${path.relative(spec.artifactDir, src)}' is not a regular file or directory`);
      }
    }
  };
  try {
    await stage(spec.artifactDir, modelDir);
  } catch (err) {
    throw new FerryError('MODEL_ERROR', `Could not stage the model of replica '${spec.id}' from '${spec.artifactDir}': ${err instanceof Error ? err.message : String(err)}`, { cause: err });
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
async function appendLog(file: string, msg: string, fields: Record<string, unknown>, level: 'warn' | 'error' = 'error'): Promise<void> {
  const line = JSON.stringify({ ts: new Date().toISOString(), level, msg, source: 'runtime', ...fields });
  await fsp.appendFile(file, line + '\n').catch(() => undefined);
}

/**
 * SIGKILLs every running process with `match` in an argument of its command line (the server's
 * own never has it); resolves how many there were.
 */
async function killMatching(match: string): Promise<number> {
  const pids = (await fsp.readdir('/proc').catch(() => [] as string[])).filter((n) => /^\d+$/.test(n)).map(Number);
  const found = await Promise.all(pids.map(async (pid) => {
    if (pid === process.pid || !(await commandLine(pid)).some((arg) => arg.includes(match)) || !(await isRunning(pid))) return 0;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
    return 1;
  }));
  return found.reduce<number>((a, b) => a + b, 0);
}

/**
 * See `LocalRuntime.open`. Each `<name>.json` in `dir` is `{pid, match, socketPath?}`; files
 * written before pool processes existed have no `match`, and their socket path is the match.
 */
async function killOrphans(dir: string, socketsDir: string): Promise<void> {
  const names = (await fsp.readdir(dir)).filter((n) => n.endsWith('.json'));
  await Promise.all(names.map(async (name) => {
    const file = path.join(dir, name);
    let entry: { pid?: unknown; socketPath?: unknown; match?: unknown } = {};
    try {
      entry = JSON.parse(await fsp.readFile(file, 'utf8')) as typeof entry;
    } catch {
      // A pid file cut short by the crash: nothing to identify, just remove it.
    }
    const { pid, socketPath } = entry;
    const match = typeof entry.match === 'string' ? entry.match : socketPath;
    if (typeof pid === 'number' && Number.isInteger(pid) && pid > 0 && typeof match === 'string' && match !== '') {
      // The pid may have been reused by an unrelated process since: kill only what is provably
      // our replica (its socket, or its pool key, is one of its arguments).
      const cmd = await commandLine(pid);
      if (await isRunning(pid) && cmd.includes('replica') && cmd.includes(match)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Exited in between.
        }
        await waitGone(pid, ORPHAN_KILL_WAIT_MS);
      }
    }
    if (typeof socketPath === 'string' && path.dirname(socketPath) === socketsDir) {
      await fsp.rm(socketPath, { force: true });
    } else if (typeof socketPath === 'string' && path.dirname(path.dirname(socketPath)) === socketsDir) {
      await fsp.rm(path.dirname(socketPath), { recursive: true, force: true });
    }
    await fsp.rm(file, { force: true });
  }));
}

/** The directories of LD_LIBRARY_PATH (where the CUDA libraries are found for GPU workloads), bound read-only in the sandbox. */
function libraryPaths(): string[] {
  return (process.env.LD_LIBRARY_PATH ?? '').split(':').filter((p) => p.startsWith('/'));
}
