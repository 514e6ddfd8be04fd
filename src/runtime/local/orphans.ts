/**
 * Orphan cleanup at the local runtime's `open` (./index.ts): the replicas and pool processes a
 * crashed server left behind, found by their pid files under `pids/` and `pool/`, are SIGKILLed
 * when their command line proves them ours; then stale pid files, sockets, pool files and private
 * model directories are removed.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { commandLine, isRunning, waitGone } from './proc.js';

/** How long `open` waits for a killed orphan to disappear. */
const ORPHAN_KILL_WAIT_MS = 5000;

/**
 * Kills the orphans listed under `dirs.pids` and `dirs.pool`, then empties `pool/`, `models/` and
 * `sockets/`.
 */
export async function clearLeftovers(dirs: { sockets: string; pids: string; pool: string; models: string }): Promise<void> {
  await Promise.all([killOrphans(dirs.pids, dirs.sockets), killOrphans(dirs.pool, dirs.sockets)]);
  // Logs of pool processes that never served anything, and the private model directories of
  // processes that no longer exist.
  await Promise.all([
    ...(await fsp.readdir(dirs.pool)).map((n) => fsp.rm(path.join(dirs.pool, n), { force: true })),
    ...(await fsp.readdir(dirs.models)).map((n) => fsp.rm(path.join(dirs.models, n), { recursive: true, force: true })),
    ...(await fsp.readdir(dirs.sockets)).map((n) => fsp.rm(path.join(dirs.sockets, n), { recursive: true, force: true })),
  ]);
}

/**
 * See `clearLeftovers`. Each `<name>.json` in `dir` is `{pid, match, socketPath?}`; files
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
