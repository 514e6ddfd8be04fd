/**
 * The data directory: who may read it (only Ferry's user) and who may use it (one server at a
 * time, through the `server.pid` lock).
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { FerryError } from '../errors.js';

/**
 * Files at the top of the data directory that hold secrets or callers' data: the metadata and
 * inference databases with their WAL and shared-memory files, the lock and the admin token.
 */
const PRIVATE_FILE = /^(?:ferry|inference)\.db(?:-wal|-shm|-journal)?$|^server\.pid$|^admin-token$/;

/**
 * Creates the data directory 0700, or makes an existing one 0700 (an image may have created it
 * 0755), and makes its database, lock and token files 0600, so that no other local user reads
 * `ferry.db` (tokens' hashes, grants) or `inference.db` (callers' inputs and outputs). Call at
 * start and again once the stores are open (SQLite creates its files with the umask's mode).
 * Subdirectories keep the modes their owners give them (the runtime's state, the artifacts): a
 * 0700 parent already keeps other users out of them.
 *
 * A directory or file this process may not chmod (EPERM: owned by another user, e.g. a volume
 * mounted by root for a non-root server) is left as it is and named in the returned warnings,
 * which the server logs: refusing to start there would take a running installation down.
 */
export async function restrictDataDir(dataDir: string): Promise<string[]> {
  await fsp.mkdir(dataDir, { recursive: true, mode: 0o700 });
  const warnings: string[] = [];
  const restrict = async (target: string, mode: number): Promise<void> => {
    try {
      await fsp.chmod(target, mode);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
      warnings.push(`cannot make ${target} ${mode.toString(8)} (not its owner): other local users may be able to read it; chown it to the user Ferry runs as`);
    }
  };
  await restrict(dataDir, 0o700);
  for (const entry of await fsp.readdir(dataDir, { withFileTypes: true })) {
    if (entry.isFile() && PRIVATE_FILE.test(entry.name)) await restrict(path.join(dataDir, entry.name), 0o600);
  }
  return warnings;
}

/** Data directories this process has locked. */
const lockedHere = new Set<string>();

/**
 * One server per data directory: a second one would adopt (and kill) the first one's replicas.
 * The lock is a file holding the owner's pid (0600). A lock whose owner is gone is taken over:
 * - no process has that pid (a crash);
 * - the process is a zombie (killed with `kill -9`, not yet reaped by its parent): it runs no code;
 * - the process started after the lock file was written: the pid was reused by another process;
 * - it is our own pid but this process did not take the lock: a container restarted with its
 *   data directory kept (a Kubernetes emptyDir) runs the server as the same pid, 1, again.
 */
export async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  const file = path.join(dataDir, 'server.pid');
  for (;;) {
    try {
      await fsp.writeFile(file, String(process.pid), { flag: 'wx', mode: 0o600 });
      lockedHere.add(dataDir);
      return async () => {
        lockedHere.delete(dataDir);
        await fsp.rm(file, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const [text, stat] = await Promise.all([fsp.readFile(file, 'utf8').catch(() => ''), fsp.stat(file).catch(() => undefined)]);
    const pid = Number(text.trim());
    const ours = pid === process.pid && lockedHere.has(dataDir);
    const stale = pid === process.pid ? !ours : !Number.isInteger(pid) || pid <= 0 || !ownsLock(pid, stat?.mtimeMs);
    if (!stale) {
      throw new FerryError('RESOURCE_CONFLICT', `Another Ferry server (pid ${pid}) is using the data directory ${dataDir}. Stop it, or start this one with another --data-dir.`);
    }
    await fsp.rm(file, { force: true });
  }
}

/**
 * Whether process `pid` may be the owner of a lock written at `lockMs`: it exists, is not a zombie
 * (state Z) or dead (X), and did not start after the lock was written. Where /proc cannot be read
 * (not Linux), only existence is checked.
 */
export function ownsLock(pid: number, lockMs: number | undefined): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const info = processInfo(pid);
  if (info === undefined) return true;
  if (info.state === 'Z' || info.state === 'X') return false;
  // btime has a one-second resolution: allow two seconds of slack.
  return lockMs === undefined || info.startMs <= lockMs + 2000;
}

/** Clock ticks per second of /proc/<pid>/stat's start time (USER_HZ, 100 on every Linux architecture Node runs on). */
const USER_HZ = 100;

/**
 * A process's state letter and start time (ms since the epoch) from /proc: `/proc/<pid>/stat`'s
 * third field and 22nd field (clock ticks after boot), plus `btime` (boot time, s) from
 * /proc/stat. The command name (2nd field, in parentheses) may hold spaces and parentheses, so
 * fields are counted after its last ')'. Example: "4242 (node) S 1 ... 4242 ..." with starttime
 * 123456 and btime 1700000000 → started at 1700001234560.
 */
function processInfo(pid: number): { state: string; startMs: number } | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const btime = /^btime (\d+)$/m.exec(fs.readFileSync('/proc/stat', 'utf8'))?.[1];
    const state = fields[0];
    const ticks = Number(fields[19]);
    if (state === undefined || btime === undefined || !Number.isFinite(ticks)) return undefined;
    return { state, startMs: Number(btime) * 1000 + (ticks / USER_HZ) * 1000 };
  } catch {
    return undefined;
  }
}
