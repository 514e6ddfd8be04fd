/**
 * The local runtime's warm pool (`WarmPool`; `open` and `startReplica` below are the runtime's, in
 * ./index.ts).
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
 */
import { type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Socket } from 'node:net';
import { backoffDelayMs, type Backoff } from '../../backoff.js';
import { FLAVOR_CAPABILITIES } from '../../flavors/index.js';
import { toArgv } from '../../replica/options.js';
import type { ReplicaSpec } from '../types.js';
import type { GpuPool } from './gpu.js';
import { PYTHON_LINK_FD } from './python-pool.js';
import { exitOf, FERRY_BIN, hashedSocketPath, heapMiBOf, linkTo, replicaNodeFlags, type Spawner } from './spawn.js';
import { KILL_GRACE_MS, type PoolProcess } from './types.js';

/** Delay before replacing a pool process that died unclaimed: 1 s, doubling per consecutive death, at most 30 s. */
const POOL_BACKOFF: Backoff = { baseMs: 1000, maxMs: 30_000 };

export interface WarmPoolOptions {
  /** `warmPoolSize`: how many pool processes to keep (idle or starting); 0 disables the pool. */
  size: number;
  /** The V8 heap limit pool processes start with (`warmPoolMemoryLimitBytes`, see `heapMiBOf`). */
  heapMiB: number;
  /** The runtime's state directories: `pool/` for pid files and logs, `models/` and `sockets/` for each process's own. */
  dirs: { pool: string; models: string; sockets: string };
  /** Mode of a pool process's private model directory (the runtime's `modelDirMode`). */
  modelDirMode: number;
  spawner: Spawner;
  /** Pool processes take a CPU placement (no GPU) under their token. */
  gpus: GpuPool;
  /** Whether pool processes get a link end for a forked Python worker (fd 4): when there are fork servers. */
  pythonLink: boolean;
  /** Whether the runtime is closing: no refill then, and a pool process that exits is not replaced. */
  closed: () => boolean;
}

export class WarmPool {
  /** Pool processes not (yet) claimed: starting and idle. */
  private readonly processes = new Set<PoolProcess>();
  private readonly heapMiB: number;
  /** The refill loop while it runs (one at a time). */
  private filling: Promise<void> | undefined;
  /** Consecutive pool processes that died unclaimed: the refill backoff's exponent. */
  private deaths = 0;
  /** Ends the refill loop's backoff wait early (close). */
  private wake: (() => void) | undefined;
  private seq = 0;

  constructor(private readonly deps: WarmPoolOptions) {
    this.heapMiB = deps.heapMiB;
  }

  /** The pool now: pids of idle processes (claimable) and of those still starting. */
  state(): { idlePids: number[]; startingPids: number[] } {
    const pids = (warm: boolean): number[] => [...this.processes].filter((p) => p.warm === warm && p.child.pid !== undefined).map((p) => p.child.pid ?? 0);
    return { idlePids: pids(true), startingPids: pids(false) };
  }

  /** A claimed replica became ready: the refill backoff starts over. */
  resetBackoff(): void {
    this.deaths = 0;
  }

  /** Ends the refill loop's backoff wait and stops every pool process; resolves when they are gone. */
  async close(): Promise<void> {
    this.wake?.();
    await Promise.all([...this.processes].map((p) => this.stop(p)));
  }

  /** Settles when the refill loop (if it runs) has ended. */
  async filled(): Promise<void> {
    await this.filling;
  }

  /**
   * Takes an idle, live pool process for `spec` out of the pool and moves its log file to
   * `logFile`; undefined when there is none (or its heap size differs, or `logFile` exists).
   * Synchronous, so two concurrent starts never take the same process.
   */
  claim(spec: ReplicaSpec, logFile: string, forked: boolean): PoolProcess | undefined {
    // Pool processes start with the flags of tensor flavors: an llm replica needs more, a js replica
    // fewer (no native addons; see `replicaNodeFlags` in ./spawn.ts); they see no GPU (a CPU
    // placement). A python replica whose worker is forked for it starts no process and reads no
    // Python: it fits.
    if (!(FLAVOR_CAPABILITIES[spec.flavor].warmPool || forked) || spec.workloadType !== 'CPU' || heapMiBOf(spec.memoryLimitBytes) !== this.heapMiB || fs.existsSync(logFile)) return undefined;
    for (const p of this.processes) {
      if (!p.warm || p.link.violation !== undefined || p.child.exitCode !== null || p.child.signalCode !== null) continue;
      try {
        fs.renameSync(p.logFile, logFile);
      } catch {
        continue; // its log vanished (someone cleaned the directory): leave it to the exit path
      }
      p.logFile = logFile;
      p.claimed = true;
      this.processes.delete(p);
      // Its link end for a forked Python worker (fd 4) is not needed by other flavors.
      if (!forked) (p.child.stdio[PYTHON_LINK_FD] as Socket | null)?.destroy();
      return p;
    }
    return undefined;
  }

  /** Starts pool processes, one at a time, until `warmPoolSize` exist; a no-op while it runs. */
  fill(): void {
    if (this.filling !== undefined || this.deps.closed() || this.deps.size === 0) return;
    this.filling = (async () => {
      while (!this.deps.closed() && this.processes.size < this.deps.size) {
        if (this.deaths > 0) {
          const delayMs = backoffDelayMs(this.deaths, POOL_BACKOFF);
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, delayMs);
            this.wake = () => { clearTimeout(timer); resolve(); };
          });
          this.wake = undefined;
          if (this.deps.closed()) break;
        }
        let p: PoolProcess;
        try {
          p = this.spawn();
        } catch {
          this.deaths++; // e.g. the log file could not be opened; retried after the backoff
          continue;
        }
        await p.warmOrGone;
      }
    })().finally(() => {
      this.filling = undefined;
    });
  }

  private spawn(): PoolProcess {
    const key = `${++this.seq}-${randomBytes(4).toString('hex')}`;
    const token = path.join(this.deps.dirs.pool, key);
    const logFile = `${token}.log`;
    const pidFile = `${token}.json`;
    // Its socket and (still empty) model directory are fixed now: the permission flags name them.
    const socketPath = hashedSocketPath(this.deps.dirs.sockets, token);
    const modelDir = path.join(this.deps.dirs.models, `pool-${key}`);
    fs.mkdirSync(modelDir, { mode: this.deps.modelDirMode });
    fs.chmodSync(modelDir, this.deps.modelDirMode); // not masked by umask
    const flags = [...replicaNodeFlags({ modelDir, socketPath }), `--max-old-space-size=${this.heapMiB}`];
    let child: ChildProcess;
    try {
      this.deps.spawner.makeSocketDir(socketPath);
      child = this.deps.spawner.spawnNode([...flags, FERRY_BIN, 'replica', ...toArgv({ control: true, pool: token })], { modelDir, socketPath, placement: this.deps.gpus.place(token, 'CPU'), pythonLink: this.deps.pythonLink }, logFile);
    } catch (err) {
      fs.rmSync(modelDir, { recursive: true, force: true });
      fs.rmSync(path.dirname(socketPath), { recursive: true, force: true });
      throw err;
    }
    child.on('error', () => undefined);
    if (child.pid !== undefined) fs.writeFileSync(pidFile, JSON.stringify({ pid: child.pid, match: token, startedMs: Date.now() }));
    let becameWarm: () => void = () => undefined;
    const warm = new Promise<void>((resolve) => { becameWarm = resolve; });
    const link = linkTo(child, { pool: true, family: false }, () => p.logFile);
    const exited = exitOf(child, link, socketPath);
    const p: PoolProcess = {
      token, socketPath, modelDir, child, link, logFile, pidFile, warm: false, claimed: false, stopRequested: false, exited,
      warmOrGone: Promise.race([warm, exited.then(() => undefined)]),
      gone: exited.then(async () => {
        this.processes.delete(p);
        if (p.claimed) return;
        await Promise.all([fsp.rm(pidFile, { force: true }), fsp.rm(modelDir, { recursive: true, force: true }), fsp.rm(path.dirname(socketPath), { recursive: true, force: true })]);
        if (p.stopRequested || this.deps.closed()) {
          await fsp.rm(p.logFile, { force: true });
        } else {
          await fsp.rename(p.logFile, path.join(this.deps.dirs.pool, 'last-failure.log')).catch(() => undefined);
          this.deaths++;
          this.fill();
        }
      }),
    };
    link.onMessage((msg) => {
      if (msg.type !== 'warm') return;
      p.warm = true;
      becameWarm();
    });
    this.processes.add(p);
    return p;
  }

  private async stop(p: PoolProcess): Promise<void> {
    p.stopRequested = true;
    p.link.send({ type: 'drain' }); // idle in the pool, it exits at once
    const timer = setTimeout(() => p.child.kill('SIGKILL'), KILL_GRACE_MS);
    await p.gone;
    clearTimeout(timer);
  }
}
