/**
 * The Python warm pool: fork servers (python/ferry_forkserver.py), one pre-started interpreter per
 * model environment that has imported the heavy modules (numpy, pandas, scikit-learn by default;
 * BLAS and OpenMP pinned to one thread before the imports, so forking is safe) and forks the Python
 * worker of each replica. A python replica then starts without paying the imports (~0.8 s here),
 * and N replicas of one model share the imported modules' pages (PSS).
 *
 * Isolation stays per model (docs/security.md): a fork server is started, idle, in a bubblewrap
 * sandbox of its own (the same as a replica's: no network, its own pid namespace, read-only system
 * and Python environment, as the replica user, no data directory) whose private model directory,
 * `models/pyfs-<n>/`, is bound but still empty. The first replica of a model claims an idle one
 * (its own endpoint, served entity, artifact and interpreter: `modelKey`): the model is staged into
 * that directory (hard links, as for a replica) and from then on the fork server forks workers for
 * that model only. Replicas of one model therefore share one sandbox for their workers (a worker
 * may see and signal its siblings, never another model's); the fork server and its workers are not
 * dumpable (no ptrace between them). When the model's last replica is gone the fork server is
 * killed: it never goes back to the pool.
 *
 * The link: the replica (Node, in its own sandbox) is started with a Unix socketpair on its fd 4;
 * the runtime's end is handed to the fork server over a Node IPC channel (SCM_RIGHTS) with the
 * fork request, and the forked worker serves the replica on it exactly as a worker the replica
 * started itself serves fd 3 (same frames). Bytes the replica writes before the hand-over wait in
 * the socket: the runtime's end never reads (`holdLinkEnd`).
 *
 * Process count: each fork server's sandbox is a pids cgroup of its own when the host allows
 * (./pids-limit.ts); a fork bomb in one model's worker kills that fork server, and so its model's
 * replicas, which the controller restarts; other models keep serving.
 *
 * Private to `src/runtime/local/`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import type { Socket } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FerryError } from '../../errors.js';
import type { ReplicaSpec } from '../types.js';
import { PidsLimit } from './pids-limit.js';
import type { UserIds } from './proc.js';
import { sandboxed, type Sandbox } from './sandbox.js';

/** dist/src/runtime/local/python-pool.js → the repository's python/ directory. */
const PYTHON_DIR = fileURLToPath(new URL('../../../../python/', import.meta.url));
const FORK_SERVER = path.join(PYTHON_DIR, 'ferry_forkserver.py');
/** The replica's end of its link to a forked worker (`LoadOptions.pythonLinkFd`). */
export const PYTHON_LINK_FD = 4;
/** Imported by every fork server before it forks (the server's `pythonPreload`). */
export const DEFAULT_PRELOAD = ['numpy', 'pandas', 'sklearn', 'sklearn.linear_model', 'sklearn.ensemble', 'cloudpickle'];
/** How long a fork server may take to import its modules and say `ready`. */
const READY_TIMEOUT_MS = 60_000;
/** First delay before replacing a fork server that died idle; doubles per consecutive death. */
const REFILL_BACKOFF_BASE_MS = 1000;
const REFILL_BACKOFF_MAX_MS = 30_000;

export interface PythonPoolOptions {
  /** Idle fork servers kept per interpreter (the server's `pythonWarmPoolSize`). */
  size: number;
  /** Modules every fork server imports before forking. */
  preload: readonly string[];
  sandbox: Sandbox;
  /** The user a sandboxed fork server is from its start (setpriv), or that it is spawned as without a sandbox. */
  user: UserIds | undefined;
  /** Where fork servers' private model directories (and their writable scratch directories) go. */
  modelsDir: string;
  /** Where an idle fork server logs (`pool/`); a claimed one's log moves to its model's log directory. */
  poolDir: string;
  /** `logs/`: a claimed fork server's log becomes `logs/<endpoint>/<servedEntity>/python-pyfs-<…>.log`. */
  logsDir: string;
  modelDirMode: number;
  /** What the interpreter reads besides the system directories (bound read-only). */
  pythonPaths: (python: string) => Promise<readonly string[]>;
  /** Stages `spec`'s model into a claimed fork server's model directory. */
  stage: (spec: ReplicaSpec, dir: string) => Promise<void>;
  pids: PidsLimit | undefined;
}

/** One replica's worker in a fork server: kill it when the replica is gone. */
export interface PythonWorker {
  release(): void;
  /** Whether its fork server was killed because its sandbox reached the process limit. */
  processLimitHit(): boolean;
}

interface ForkServer {
  seq: number;
  python: string;
  child: ChildProcess;
  modelDir: string;
  scratchDir: string;
  logFile: string;
  cgroup: string | undefined;
  /** Resolves once it imported its modules; rejects when it exits or times out first. */
  ready: Promise<void>;
  isReady: boolean;
  /** The model it serves, once claimed. */
  modelKey: string | undefined;
  /** Live workers it forked, by id. */
  workers: Set<number>;
  gone: Promise<void>;
  exited: boolean;
  /** Set just before it is killed because its sandbox reached the process limit. */
  processLimitHit: boolean;
}

export class PythonPool {
  private readonly idle = new Set<ForkServer>();
  /** Claimed fork servers by model (a promise while the claim stages the model). */
  private readonly claimed = new Map<string, Promise<ForkServer>>();
  private seq = 0;
  private nextWorker = 1;
  private deaths = 0;
  private closed = false;
  private refillTimer: NodeJS.Timeout | undefined;
  /** The refill in progress (a fork server starting), awaited by `close`. */
  private filling: Promise<void> | undefined;
  private readonly interpreters = new Set<string>();

  constructor(private readonly options: PythonPoolOptions) {}

  /** Keeps `size` idle fork servers of `python` from now on (the first one at `open`). */
  warm(python: string): void {
    this.interpreters.add(python);
    this.refill();
  }

  /**
   * Forks the Python worker of replica `spec` (model `spec.artifactDir` in `python`) and hands it
   * `linkEnd`, the runtime's end of the replica's fd 4. The model's fork server is claimed (an idle
   * one, else one started now) on the model's first replica.
   * @throws FerryError MODEL_ERROR when no fork server could be started for it.
   */
  async fork(spec: ReplicaSpec, python: string, linkEnd: Socket): Promise<PythonWorker> {
    const key = modelKey(spec, python);
    let server: ForkServer;
    for (;;) {
      let claim = this.claimed.get(key);
      if (claim === undefined) {
        claim = this.claim(spec, python, key);
        this.claimed.set(key, claim);
        claim.catch(() => this.claimed.delete(key));
      }
      server = await claim;
      if (!server.exited) break;
      // It died (killed at the process limit): the model's next replica claims another.
      if (this.claimed.get(key) === claim) this.claimed.delete(key);
    }
    const id = this.nextWorker++;
    server.workers.add(id);
    server.child.send({ op: 'fork', id }, linkEnd);
    return {
      release: () => {
        if (!server.workers.delete(id)) return;
        if (!server.exited) server.child.send({ op: 'kill', id });
        if (server.workers.size === 0) this.retire(server, key);
      },
      processLimitHit: () => server.processLimitHit,
    };
  }

  /** Kills every fork server and waits for them to be gone. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.refillTimer);
    const claimed = await Promise.all([...this.claimed.values()].map((c) => c.catch(() => undefined)));
    await Promise.all([...this.idle, ...claimed].map(async (s) => {
      if (s !== undefined) await this.kill(s);
    }));
    // One still being started is killed by the refill itself once its start returns.
    await this.filling;
  }

  /**
   * The fork servers now (bwrap's pids, in a sandbox): the idle ones ready to fork, those still
   * importing their modules, and those claimed by a model.
   */
  async state(): Promise<{ idlePids: number[]; startingPids: number[]; claimedPids: number[] }> {
    const claimed = await Promise.all([...this.claimed.values()].map((c) => c.catch(() => undefined)));
    const pid = (s: ForkServer | undefined): number => s?.child.pid ?? 0;
    const idle = [...this.idle].filter((s) => !s.exited);
    return { idlePids: idle.filter((s) => s.isReady).map(pid), startingPids: idle.filter((s) => !s.isReady).map(pid), claimedPids: claimed.filter((s) => s !== undefined && !s.exited).map(pid) };
  }

  /**
   * Called by the runtime's watchdog: kills a fork server whose sandbox refused a fork (a fork
   * bomb), and so its workers; their replicas exit and are replaced. Noted in its log, which is
   * one of its model's logs.
   */
  checkLimits(): void {
    for (const claim of this.claimed.values()) {
      void claim.then((s) => {
        if (s.cgroup === undefined || s.exited || !PidsLimit.exceeded(s.cgroup)) return;
        const line = { ts: new Date().toISOString(), level: 'error', source: 'runtime', msg: 'python fork server killed: its sandbox reached the process limit', maxProcesses: this.options.pids?.max };
        fs.appendFileSync(s.logFile, JSON.stringify(line) + '\n');
        s.processLimitHit = true;
        s.child.kill('SIGKILL');
        PidsLimit.killAll(s.cgroup);
      }, () => undefined);
    }
  }

  private async claim(spec: ReplicaSpec, python: string, key: string): Promise<ForkServer> {
    let server: ForkServer | undefined;
    for (const s of this.idle) {
      if (s.python === python && !s.exited) {
        server = s;
        break;
      }
    }
    if (server !== undefined) this.idle.delete(server);
    else server = await this.start(python);
    server.modelKey = key;
    this.refill();
    try {
      await server.ready;
      await this.options.stage(spec, server.modelDir);
      // The workers' output (the model's prints) joins its replicas' logs.
      const logFile = path.join(this.options.logsDir, spec.endpoint, spec.servedEntity, `python-${path.basename(server.logFile)}`);
      await fsp.rename(server.logFile, logFile);
      server.logFile = logFile;
      return server;
    } catch (err) {
      await this.kill(server);
      throw err instanceof FerryError ? err : new FerryError('MODEL_ERROR', `The Python fork server could not take the model: ${(err as Error).message}`);
    }
  }

  private async start(python: string): Promise<ForkServer> {
    const seq = ++this.seq;
    const name = `pyfs-${process.pid}-${seq}`;
    const modelDir = path.join(this.options.modelsDir, name);
    // Its one writable directory (the sandbox binds one): holds nothing of anyone else's.
    const scratchDir = path.join(this.options.modelsDir, `${name}.rw`);
    const logFile = path.join(this.options.poolDir, `${name}.log`);
    for (const dir of [modelDir, scratchDir]) {
      await fsp.rm(dir, { recursive: true, force: true });
      await fsp.mkdir(dir, { mode: dir === modelDir ? this.options.modelDirMode : 0o700 });
      await fsp.chmod(dir, dir === modelDir ? this.options.modelDirMode : 0o700);
    }
    const user = this.options.user;
    if (user !== undefined && this.options.sandbox.kind === 'bwrap') await fsp.chown(scratchDir, user.uid, user.gid);
    const reads = [PYTHON_DIR, ...(await this.options.pythonPaths(python))];
    const { file, args } = sandboxed(this.options.sandbox, { readOnly: reads, modelDir, socketDir: scratchDir, devices: [] },
      this.options.sandbox.kind === 'bwrap' ? user : undefined, [python, '-I', '-B', FORK_SERVER, ...this.options.preload]);
    // It starts inside its pids cgroup (./pids-limit.ts): nothing it or a model's worker forks is outside.
    const spawnUid = this.options.sandbox.kind === 'none' ? user?.uid : undefined;
    const entered = this.options.pids?.prepare(name, file, args, spawnUid);
    const fd = fs.openSync(logFile, 'a', 0o600);
    let child: ChildProcess;
    try {
      child = spawn(entered?.file ?? file, entered?.args ?? args, {
        cwd: modelDir, env: forkServerEnv(), stdio: ['ignore', fd, fd, 'ipc'], serialization: 'json',
        ...(this.options.sandbox.kind === 'none' && user !== undefined ? { uid: user.uid, gid: user.gid } : {}),
      });
    } catch (err) {
      if (entered !== undefined) this.options.pids?.remove(entered.dir);
      throw err;
    } finally {
      fs.closeSync(fd);
    }
    child.on('error', () => undefined);
    const cgroup = entered?.dir;
    const server: ForkServer = {
      seq, python, child, modelDir, scratchDir, logFile, cgroup, modelKey: undefined, workers: new Set(), exited: false, processLimitHit: false, isReady: false,
      ready: Promise.resolve(), gone: Promise.resolve(),
    };
    // Gone once it exited, or at once when it never started (no exit event follows a failed spawn).
    server.gone = new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.once('error', () => {
        if (child.pid === undefined) resolve();
      });
    }).then(async () => {
      server.exited = true;
      if (this.idle.delete(server) && !this.closed) {
        this.deaths++;
        this.refill();
      }
      await Promise.all([fsp.rm(modelDir, { recursive: true, force: true }), fsp.rm(scratchDir, { recursive: true, force: true })]);
      if (cgroup !== undefined) {
        PidsLimit.killAll(cgroup); // what outlived its outer bwrap
        this.options.pids?.remove(cgroup);
      }
      if (server.modelKey === undefined) await fsp.rm(logFile, { force: true });
    });
    server.ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`it did not import its modules within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
      child.on('message', (m: unknown) => {
        // Anything but the expected shapes is ignored: the fork server's messages only settle this promise.
        if (typeof m === 'object' && m !== null && (m as { op?: unknown }).op === 'ready') {
          clearTimeout(timer);
          this.deaths = 0;
          server.isReady = true;
          resolve();
        }
      });
      void server.gone.then(() => {
        clearTimeout(timer);
        reject(new Error(`it exited while starting (log: ${logFile})`));
      });
    });
    server.ready.catch(() => undefined);
    return server;
  }

  /** Keeps `size` idle fork servers per interpreter, starting one at a time. */
  private refill(): void {
    if (this.closed || this.refillTimer !== undefined) return;
    const python = [...this.interpreters].find((p) => [...this.idle].filter((s) => s.python === p).length < this.options.size);
    if (python === undefined) return;
    const delay = this.deaths === 0 ? 0 : Math.min(REFILL_BACKOFF_MAX_MS, REFILL_BACKOFF_BASE_MS * 2 ** (this.deaths - 1));
    this.refillTimer = setTimeout(() => {
      this.filling = (async () => {
        try {
          const s = await this.start(python);
          this.idle.add(s);
          // Closed meanwhile: `close` has already killed the idle ones it saw.
          if (this.closed) await this.kill(s);
          await s.ready.catch(() => undefined);
        } catch {
          this.deaths++;
        } finally {
          this.refillTimer = undefined;
          this.filling = undefined;
          this.refill();
        }
      })();
    }, delay);
  }

  private retire(server: ForkServer, key: string): void {
    void this.claimed.get(key)?.then((s) => {
      if (s === server && server.workers.size === 0) {
        this.claimed.delete(key);
        void this.kill(server);
      }
    }, () => undefined);
  }

  private async kill(server: ForkServer): Promise<void> {
    this.idle.delete(server);
    if (!server.exited) server.child.kill('SIGKILL');
    await server.gone;
  }
}

/** One fork server per model: the replicas of one served entity's artifact in one interpreter. */
function modelKey(spec: ReplicaSpec, python: string): string {
  return JSON.stringify([spec.endpoint, spec.servedEntity, spec.artifactDir, python]);
}

/** The fork server's environment: nothing from the server's (see the worker's, python flavor). */
function forkServerEnv(): Record<string, string> {
  return {
    PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8', HOME: '/nonexistent',
    PYTHONDONTWRITEBYTECODE: '1', PYTHONNOUSERSITE: '1', PYTHONUNBUFFERED: '1',
  };
}

/**
 * Stops the runtime from reading its end of a replica's link (Node starts reading every stdio
 * socket it creates): bytes the replica writes before the end is handed to a fork server must stay
 * in the socket for the worker. Uses the socket's libuv handle, which Node exposes as `_handle`.
 */
export function holdLinkEnd(end: Socket): void {
  (end as unknown as { _handle?: { readStop?: () => number } })._handle?.readStop?.();
}
