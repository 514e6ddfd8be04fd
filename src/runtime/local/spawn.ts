/**
 * Starting the local runtime's processes: every replica or pool process is `node bin/ferry.js
 * replica …` with Node's permission flags (`replicaNodeFlags`) and a V8 heap limit, in the sandbox
 * (./sandbox.ts) when there is one, with the scrubbed environment, its output appended to its log
 * and the control channel on descriptor 3 (`Spawner`); the socket paths and directories they
 * listen in; and waiting for a process's exit until nothing of its sandbox is left (`exitOf`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Socket } from 'node:net';
import { FLAVOR_CAPABILITIES, type FlavorName } from '../../flavors/index.js';
import { toArgv, type ReplicaOptions } from '../../replica/options.js';
import type { ReplicaSpec } from '../types.js';
import { ReplicaLink, type LinkState } from './control.js';
import { sandboxed, type Sandbox, type SandboxMounts } from './sandbox.js';
import type { GpuPlacement } from './gpu.js';
import { holdLinkEnd, PYTHON_LINK_FD } from './python-pool.js';
import { commandLine, isRunning, replicaEnv, type UserIds } from './proc.js';
import { appendLog } from './log-files.js';
import { MIB, type Exit } from './types.js';

/** dist/src/runtime/local/spawn.js → repository root is four levels up. */
const REPO_ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
export const FERRY_BIN = path.join(REPO_ROOT, 'bin', 'ferry.js');
/**
 * What of Ferry's checkout a replica may read: its code and dependencies, not the rest (the demo's
 * data directory `./.ferry`, with the database and the admin token, lives in the checkout).
 * `package.json` is read by Node's module loader (the package scope of `dist/`).
 */
const FERRY_CODE_PATHS = ['dist', 'bin', 'node_modules', 'package.json', 'python'].map((p) => path.join(REPO_ROOT, p));
/** Linux `sun_path` is 108 bytes including the terminating NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;
/** A replica's socket file, in a directory of its own under `sockets/`. */
export const SOCKET_FILE = 'replica.sock';

/**
 * `<socketsDir>/<id>/replica.sock`, or `<socketsDir>/<sha256(id)[0:16]>/replica.sock` when that
 * is too long (see the file comment of ./index.ts): a directory per process, so that a sandbox can
 * bind exactly its own.
 */
export function socketPathOf(socketsDir: string, id: string): string {
  const plain = path.join(socketsDir, id, SOCKET_FILE);
  if (Buffer.byteLength(plain) <= MAX_SOCKET_PATH_BYTES) return plain;
  return hashedSocketPath(socketsDir, id);
}

export function hashedSocketPath(socketsDir: string, name: string): string {
  return path.join(socketsDir, createHash('sha256').update(name).digest('hex').slice(0, 16), SOCKET_FILE);
}

/** The V8 heap limit of a replica: half its memory limit (see `Spawner.spawnNode`), at least 16 MiB. */
export function heapMiBOf(memoryLimitBytes: number): number {
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
export function exitOf(child: ChildProcess, link: ReplicaLink, match: string): Promise<Exit> {
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
/** Wraps a command so that it starts inside a pids cgroup (`PidsLimit.prepare`). */
export type EnterCgroup = (file: string, args: readonly string[]) => { file: string; args: string[] };

/**
 * Starts the processes of one runtime: in `sandbox`, as `user` from their start when given (the
 * replica user of a sandboxed root server; undefined: the server's user).
 */
export class Spawner {
  constructor(
    private readonly sandbox: Sandbox,
    private readonly user: UserIds | undefined,
  ) {}

  /**
   * A fresh directory (0700) for one process's socket (a SIGKILLed one may have left it), owned
   * by the user the process runs as. Synchronous: a pool process's is made just before its spawn.
   */
  makeSocketDir(socketPath: string): void {
    const dir = path.dirname(socketPath);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { mode: 0o700 });
    const user = this.user;
    if (user !== undefined) fs.chownSync(dir, user.uid, user.gid);
  }

  spawnReplica(
    spec: ReplicaSpec, options: ReplicaOptions, logFile: string, extraReads: readonly string[], pythonLink: boolean, placement: GpuPlacement, enter: EnterCgroup | undefined,
  ): ChildProcess {
    const flags = [...replicaNodeFlags({ modelDir: options.dir, socketPath: options.socketPath }, spec.flavor), `--max-old-space-size=${heapMiBOf(spec.memoryLimitBytes)}`];
    return this.spawnNode(
      [...flags, FERRY_BIN, 'replica', ...toArgv({ control: true, options })],
      { modelDir: options.dir, socketPath: options.socketPath, placement, extraReads, pythonLink, ...(enter === undefined ? {} : { enter }) }, logFile,
    );
  }

  /**
   * Starts `node <args>` in the sandbox (when there is one) with the scrubbed environment, its
   * output appended to `logFile` (0600) and the control channel on descriptor 3. The V8 heap flag
   * in `args` gets half the memory limit: the rest is for Node itself and onnxruntime's native
   * memory, which the heap flag does not bound (the watchdog does). 256 MiB → 128 MiB heap. The
   * channel is the replica's lifeline: when the server dies, even by SIGKILL, it closes and the
   * replica drains and exits (an idle pool process just exits). `where.enter`: the command is
   * started inside a pids cgroup (see `PidsLimit.prepare` in ./pids-limit.ts).
   */
  spawnNode(
    args: string[], where: { modelDir: string; socketPath: string; placement: GpuPlacement; extraReads?: readonly string[]; pythonLink: boolean; enter?: EnterCgroup }, logFile: string,
  ): ChildProcess {
    const mounts: SandboxMounts = {
      readOnly: [process.execPath, ...FERRY_CODE_PATHS, ...libraryPaths(), ...(where.extraReads ?? []), ...where.placement.readOnly],
      modelDir: where.modelDir,
      socketDir: path.dirname(where.socketPath),
      devices: where.placement.devices,
    };
    const command = sandboxed(this.sandbox, mounts, this.user, [process.execPath, ...args]);
    const { file, args: argv } = where.enter === undefined ? command : where.enter(command.file, command.args);
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
}

/**
 * The runtime's end of `child`'s control channel. A protocol violation (see ./control.ts) is
 * noted in the process's log (`logFile()`: a pool process's log moves when it is claimed) and
 * the process is SIGKILLed; its exit is then reported with reason `protocol`.
 */
export function linkTo(child: ChildProcess, state: LinkState, logFile: () => string): ReplicaLink {
  const link = new ReplicaLink(child.stdio[3] as Socket, state, (what) => {
    child.kill('SIGKILL');
    void appendLog(logFile(), 'replica killed: it broke the control protocol', { violation: what });
  });
  return link;
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

/** The directories of LD_LIBRARY_PATH (where the CUDA libraries are found for GPU workloads), bound read-only in the sandbox. */
function libraryPaths(): string[] {
  return (process.env.LD_LIBRARY_PATH ?? '').split(':').filter((p) => p.startsWith('/'));
}
