/**
 * Small Linux process helpers for the local runtime: resident memory, liveness and command lines
 * read from /proc, the environment a replica is given, and the user it runs as. Private to
 * `src/runtime/local/`.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { FerryError } from '../../errors.js';

/**
 * Environment variables a replica inherits from the server; everything else (FERRY_ADMIN_TOKEN,
 * cloud credentials, database URLs) stays behind, because a replica runs a user's model and must
 * not be able to read the server's secrets. PATH/HOME/locale/TZ/NODE_OPTIONS keep Node behaving as
 * the operator configured it; TMPDIR is where onnxruntime may spill; LD_LIBRARY_PATH is how the
 * CUDA libraries are found for GPU workloads. CUDA_VISIBLE_DEVICES is not inherited: the runtime
 * sets it per replica (./gpu.ts: the replica's one GPU, or none).
 */
export const REPLICA_ENV_KEYS = [
  'PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'NODE_OPTIONS', 'TMPDIR', 'LD_LIBRARY_PATH',
] as const;

/** The scrubbed environment for a replica: only `REPLICA_ENV_KEYS` that are set. */
export function replicaEnv(from: NodeJS.ProcessEnv): Record<string, string> {
  const env: Record<string, string> = {};
  for (const key of REPLICA_ENV_KEYS) {
    const value = from[key];
    if (value !== undefined) env[key] = value;
  }
  return env;
}

/**
 * `command` as an absolute path: itself when it contains a slash, else the first executable file
 * of that name in `searchPath`'s directories (e.g. "python3" → "/usr/bin/python3"); unchanged when
 * none is found, so that starting it fails with a clear ENOENT.
 */
export function findOnPath(command: string, searchPath: string | undefined): string {
  if (command.includes('/')) return path.resolve(command);
  for (const dir of (searchPath ?? '').split(':')) {
    if (dir === '') continue;
    const candidate = path.join(dir, command);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return command;
}

/**
 * Resident set size of `pids` together in bytes (VmRSS in /proc/<pid>/status, summed), or
 * undefined when none is readable.
 */
export async function residentBytes(pids: readonly number[]): Promise<number | undefined> {
  const each = await Promise.all(pids.map(async (pid) => {
    const status = await fsp.readFile(`/proc/${pid}/status`, 'utf8').catch(() => undefined);
    const kib = status === undefined ? undefined : /^VmRSS:\s+(\d+)\s+kB$/m.exec(status)?.[1];
    return kib === undefined ? undefined : Number(kib) * 1024;
  }));
  const known = each.filter((b): b is number => b !== undefined);
  return known.length === 0 ? undefined : known.reduce((a, b) => a + b, 0);
}

/**
 * Proportional set size of `pids` together in bytes (Pss in /proc/<pid>/smaps_rollup, summed):
 * pages shared between them (a fork server's modules in its workers) count once overall.
 */
export async function proportionalBytes(pids: readonly number[]): Promise<number> {
  const each = await Promise.all(pids.map(async (pid) => {
    const rollup = await fsp.readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => '');
    return Number(/^Pss:\s+(\d+)\s+kB$/m.exec(rollup)?.[1] ?? 0) * 1024;
  }));
  return each.reduce((a, b) => a + b, 0);
}

/**
 * Every process's children by parent pid, from the ppid field of each /proc/<pid>/stat (this
 * kernel has no /proc/<pid>/task/<tid>/children). One scan serves every replica of a watchdog tick.
 */
export async function processTree(): Promise<Map<number, number[]>> {
  const children = new Map<number, number[]>();
  const pids = (await fsp.readdir('/proc').catch(() => [] as string[])).filter((n) => /^\d+$/.test(n));
  await Promise.all(pids.map(async (name) => {
    addChild(children, name, await fsp.readFile(`/proc/${name}/stat`, 'utf8').catch(() => undefined));
  }));
  return children;
}

/** `processTree`, read synchronously: for a step that must finish before a process starts. */
export function processTreeSync(): Map<number, number[]> {
  const children = new Map<number, number[]>();
  for (const name of fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    let stat: string | undefined;
    try {
      stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      stat = undefined; // exited meanwhile
    }
    addChild(children, name, stat);
  }
  return children;
}

/** Files process `name` under its parent, read from its /proc stat line (absent: it exited). */
function addChild(children: Map<number, number[]>, name: string, stat: string | undefined): void {
  if (stat === undefined) return;
  // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so read after the last ')'.
  const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  if (!Number.isInteger(ppid)) return;
  const list = children.get(ppid);
  if (list === undefined) children.set(ppid, [Number(name)]);
  else list.push(Number(name));
}

/** `root` and every process below it in `tree` (from `processTree`). */
export function descendants(root: number, tree: ReadonlyMap<number, readonly number[]>): number[] {
  const out: number[] = [];
  const todo = [root];
  for (let pid = todo.pop(); pid !== undefined; pid = todo.pop()) {
    out.push(pid);
    todo.push(...(tree.get(pid) ?? []));
  }
  return out;
}

/**
 * Whether `pid` is a running process. A zombie (exited, not yet reaped, e.g. under a PID 1 that
 * does not reap) counts as gone: it holds no memory and no socket.
 */
export async function isRunning(pid: number): Promise<boolean> {
  if (!pidExists(pid)) return false;
  const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  // Format: "pid (comm) S ..."; comm may contain spaces and parentheses, so read after the last ')'.
  const state = stat?.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

/** Whether process `pid` exists, a zombie included (signal 0; EPERM: it belongs to someone else). */
export function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The command line of `pid` as its arguments, or [] when it cannot be read. */
export async function commandLine(pid: number): Promise<string[]> {
  const raw = await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return raw.split('\0').filter((a) => a !== '');
}

/** Polls until `pid` is gone or `timeoutMs` passes; resolves whether it is gone. */
export async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (await isRunning(pid)) {
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

/** A numeric user and group, what a replica drops to. */
export interface UserIds {
  uid: number;
  gid: number;
}

/**
 * Resolves `value` ("uid:gid", or a user name looked up in /etc/passwd, with that user's primary
 * group) for the setting `key`, e.g. "nobody" → {uid: 65534, gid: 65534}. Users only known to NSS
 * (LDAP, systemd-homed) are not found: give them as "uid:gid". Root (uid 0) is refused: dropping
 * to it would drop nothing. Rejects with INVALID_PARAMETER_VALUE naming `key` and `value`.
 */
export async function resolveUser(key: string, value: string): Promise<UserIds> {
  const bad = (why: string): FerryError => new FerryError('INVALID_PARAMETER_VALUE', `Invalid value '${value}' for '${key}': ${why}.`);
  let ids: UserIds | undefined;
  const numeric = /^(\d{1,10}):(\d{1,10})$/.exec(value);
  if (numeric) {
    ids = { uid: Number(numeric[1]), gid: Number(numeric[2]) };
  } else {
    const passwd = await fsp.readFile('/etc/passwd', 'utf8').catch(() => '');
    // name:password:uid:gid:gecos:home:shell
    const fields = passwd.split('\n').map((line) => line.split(':')).find((f) => f[0] === value);
    if (fields === undefined || fields.length < 4) throw bad(`no such user in /etc/passwd; give a user name from it or "uid:gid"`);
    ids = { uid: Number(fields[2]), gid: Number(fields[3]) };
  }
  const { uid, gid } = ids;
  if (!Number.isInteger(uid) || !Number.isInteger(gid) || uid > 0xfffffffe || gid > 0xfffffffe) throw bad('the uid and gid must be integers below 4294967295');
  if (uid === 0 || gid === 0) throw bad('replicas must not run as root (uid or gid 0); choose an unprivileged user');
  return ids;
}
