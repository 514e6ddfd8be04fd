/**
 * The OS sandbox beneath Node's permission model: every local replica process (spawned or
 * pooled) runs inside bubblewrap (`bwrap`) when it works here. Node's permission model binds a
 * replica's JavaScript; the sandbox binds the whole process, native code included:
 *
 * - namespaces of its own: no network (`--unshare-net`: only loopback, which has nothing on it), a
 *   pid namespace (its /proc shows only its own processes: no other replica, not the server and
 *   its environment), IPC and UTS; a new session (no terminal injection); it dies with the runtime;
 * - a file system of read-only binds at their own host paths (so the permission flags and the
 *   replica's options stay the same): the system directories (`/usr`, the `/lib*`, `/bin`,
 *   `/sbin`, and from `/etc` only the loader cache, the OpenSSL config and os-release), Node's
 *   binary, Ferry's code (`dist/`, `bin/`, `node_modules/` by its real path, `package.json`), the
 *   process's own private model directory; read-write only its own socket directory; a private
 *   `/tmp`. No data directory, no other replica's model or socket;
 * - when the server is root, the process is the replica user from its first instruction
 *   (`setpriv --reuid --regid --clear-groups`, no capabilities, `no_new_privs`): a model's code
 *   (a js module's `load()`, onnxruntime parsing a crafted graph) never runs as root.
 *
 * The runtime's child is then bwrap, not node: SIGKILL of it tears the sandbox down (the pid
 * namespace's init dies, and every process in it with it), a graceful stop goes over the control
 * channel (`drain`), and the memory watchdog sums the process tree under it.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { invalidParameter } from '../../errors.js';
import type { UserIds } from './proc.js';

export const SANDBOX_SETTINGS = ['auto', 'bwrap', 'none'] as const;
/** `auto`: bwrap when it works here (checked once, at `open`); `bwrap`: required; `none`: never. */
export type SandboxSetting = (typeof SANDBOX_SETTINGS)[number];

/** What `open` chose, and why (the server logs it). */
export interface Sandbox {
  kind: 'bwrap' | 'none';
  reason: string;
  /** Absolute paths of bwrap and setpriv (bwrap only). */
  bwrap?: string;
  setpriv?: string;
}

/** What one sandboxed process may see besides the system directories. */
export interface SandboxMounts {
  /** Read-only, at their own paths (files or directories); symlinks are recreated, their targets bound. */
  readOnly: string[];
  /** The process's own socket directory, read-write. */
  socketDir: string;
  /** Its private model directory (read-only) and working directory. */
  modelDir: string;
  /** Device nodes to pass through (the GPU's, for GPU workloads). */
  devices: string[];
}

/** How long the probe at `open` may take (a cold bwrap start is ~10 ms). */
const PROBE_TIMEOUT_MS = 10_000;
/** System directories, bound read-only when they are directories, recreated when they are symlinks (merged /usr). */
const SYSTEM_DIRS = ['/usr', '/lib', '/lib64', '/lib32', '/libx32', '/bin', '/sbin'];
/**
 * The only files of /etc a replica reads: the dynamic loader's cache, OpenSSL's config (Node
 * opens it at start) and the distribution's name (node-llama-cpp chooses its binary by it).
 */
const ETC_FILES = ['/etc/ld.so.cache', '/etc/ssl/openssl.cnf', '/etc/os-release'];

/**
 * Chooses the sandbox for `setting`: for `auto` and `bwrap`, runs bwrap once with the sandbox's
 * namespaces (and, when `user` is given, setpriv to that user) around `node --version`. `bwrap`
 * rejects with INVALID_PARAMETER_VALUE naming `sandbox` when that fails; `auto` falls back to
 * none and says why.
 */
export async function chooseSandbox(setting: SandboxSetting, user: UserIds | undefined): Promise<Sandbox> {
  if (setting === 'none') return { kind: 'none', reason: 'sandbox is "none" in the server config' };
  const bwrap = findExecutable('bwrap');
  const setpriv = user === undefined ? undefined : findExecutable('setpriv');
  let failure: string | undefined;
  if (bwrap === undefined) failure = 'bwrap (bubblewrap) is not installed';
  else if (user !== undefined && setpriv === undefined) failure = 'setpriv (util-linux) is not installed';
  else {
    const mounts: SandboxMounts = { readOnly: [], socketDir: '/tmp', modelDir: '/tmp', devices: [] };
    const { file, args } = sandboxed({ kind: 'bwrap', reason: '', bwrap, ...(setpriv === undefined ? {} : { setpriv }) }, mounts, user, [process.execPath, '--version']);
    failure = await new Promise<string | undefined>((resolve) => {
      execFile(file, args, { timeout: PROBE_TIMEOUT_MS, env: {} }, (err, _stdout, stderr) => {
        resolve(err === null ? undefined : `running it failed: ${(stderr.trim() || err.message).split('\n')[0] ?? ''}`);
      });
    });
  }
  if (failure === undefined) {
    return { kind: 'bwrap', reason: `bwrap works here${user === undefined ? '' : `; replicas run as uid ${user.uid} from their start`}`, ...(bwrap === undefined ? {} : { bwrap }), ...(setpriv === undefined ? {} : { setpriv }) };
  }
  if (setting === 'bwrap') throw invalidParameter('sandbox', setting, `a sandbox that works on this host, but ${failure} (in a container, allow user namespaces or run it privileged)`);
  return { kind: 'none', reason: `sandbox is "auto" and ${failure}` };
}

/**
 * The command that runs `command` (an executable and its arguments) in `sandbox` with `mounts`,
 * as `user` when given; `command` itself when there is no sandbox.
 */
export function sandboxed(sandbox: Sandbox, mounts: SandboxMounts, user: UserIds | undefined, command: string[]): { file: string; args: string[] } {
  if (sandbox.kind === 'none' || sandbox.bwrap === undefined) return { file: command[0] ?? '', args: command.slice(1) };
  const args = [
    '--unshare-net', '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--die-with-parent', '--new-session',
    '--proc', '/proc', '--dev', '/dev', '--perms', '01777', '--tmpfs', '/tmp',
  ];
  for (const dir of SYSTEM_DIRS) args.push(...bindOrLink(dir));
  const binds = [...ETC_FILES, ...mounts.readOnly, mounts.modelDir].filter((p) => fs.existsSync(p));
  // Parents that bwrap would otherwise create itself, with modes of its choosing: traversable.
  const parents = new Set<string>();
  for (const p of [...binds, ...binds.map((b) => fs.realpathSync(b)), mounts.socketDir]) {
    for (let dir = path.dirname(p); dir !== '/' && !isUnder(dir, SYSTEM_DIRS); dir = path.dirname(dir)) parents.add(dir);
  }
  for (const dir of [...parents].sort((a, b) => a.length - b.length)) args.push('--perms', '0755', '--dir', dir);
  for (const p of binds) args.push(...bindOrLink(p));
  args.push('--bind', mounts.socketDir, mounts.socketDir);
  for (const dev of mounts.devices) args.push('--dev-bind-try', dev, dev);
  args.push('--chdir', mounts.modelDir, '--');
  if (user !== undefined && sandbox.setpriv !== undefined) {
    args.push(sandbox.setpriv, `--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs');
  }
  return { file: sandbox.bwrap, args: [...args, ...command] };
}

/** A read-only bind of `p` at its own path, or, for a symlink, its target bound and the link recreated. */
function bindOrLink(p: string): string[] {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    return []; // e.g. no /lib32 here
  }
  if (!st.isSymbolicLink()) return ['--ro-bind', p, p];
  const target = fs.readlinkSync(p);
  const real = fs.realpathSync(p);
  // A relative link into a bound system directory (/lib -> usr/lib) needs only the link.
  return isUnder(real, ['/usr']) ? ['--symlink', target, p] : ['--ro-bind', real, real, '--symlink', target, p];
}

function isUnder(p: string, dirs: readonly string[]): boolean {
  return dirs.some((d) => p === d || p.startsWith(`${d}/`));
}

/** The absolute path of `name` on PATH (or the usual system directories), or undefined. */
function findExecutable(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':').filter((d) => d.startsWith('/')), '/usr/bin', '/bin', '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    const file = path.join(dir, name);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}
