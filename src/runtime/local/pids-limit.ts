/**
 * Process-count limits per sandbox, with the kernel's pids controller: each sandboxed process tree
 * (a replica, a Python fork server and its workers) runs in a cgroup of its own,
 * `<ferry cgroup>/<name>/` with `pids.max`. A fresh process starts inside it (`prepare`: a shell
 * enters the cgroup, then execs the sandbox), so nothing it forks can be outside: moving a running
 * tree afterwards raced the sandbox's own first forks, and a process forked in that window stayed
 * unlimited (a fork bomb then ran free). Only an idle warm-pool process, which forks nothing, is
 * moved after its start (`attach`, when it is claimed). A fork bomb in a model then hits that
 * limit (its `fork` fails with EAGAIN) instead of the host's, and the runtime's watchdog, seeing
 * the cgroup's `pids.events` count a refused fork, kills the sandbox (reported as exit reason
 * `processes`).
 *
 * RLIMIT_NPROC cannot do this: it counts the processes of a uid, and every sandbox runs as the same
 * replica user. The cgroup is found through `/proc/self/mountinfo` and `/proc/self/cgroup`: a
 * cgroup v1 `pids` hierarchy, or cgroup v2 where the server's own cgroup offers the `pids`
 * controller to children. Where neither is writable (an unprivileged server, a container without
 * cgroup delegation) `open` says why and replicas run without a process limit (the memory limit
 * and the sandbox still apply). Private to `src/runtime/local/`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { descendants, pidExists, processTreeSync } from './proc.js';

export class PidsLimit {
  private constructor(
    /** The runtime's own cgroup, `<hierarchy>/<server's cgroup>/ferry-<server pid>`. */
    private readonly root: string,
    readonly max: number,
  ) {}

  /** The runtime's pids cgroup, or the reason there is none. */
  static open(max: number): PidsLimit | { unavailable: string } {
    let base: string | undefined;
    let v2 = false;
    try {
      const cgroups = fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n');
      for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
        const [left, right] = line.split(' - ');
        if (left === undefined || right === undefined) continue;
        const mountPoint = left.split(' ')[4];
        const [fstype, , superOptions] = right.split(' ');
        if (mountPoint === undefined) continue;
        if (fstype === 'cgroup' && (superOptions ?? '').split(',').includes('pids')) {
          const own = cgroups.find((c) => c.split(':')[1]?.split(',').includes('pids'))?.split(':')[2];
          if (own !== undefined) base = path.join(mountPoint, own);
          break;
        }
        if (fstype === 'cgroup2' && base === undefined) {
          const own = cgroups.find((c) => c.startsWith('0::'))?.slice(3);
          const candidate = own === undefined ? undefined : path.join(mountPoint, own);
          if (candidate !== undefined && readText(path.join(candidate, 'cgroup.controllers')).split(' ').includes('pids')) {
            base = candidate;
            v2 = true;
          }
        }
      }
    } catch (err) {
      return { unavailable: `the cgroup mounts could not be read (${(err as Error).message})` };
    }
    if (base === undefined) return { unavailable: 'no cgroup hierarchy with the pids controller is mounted' };
    removeDeadServers(base);
    const root = path.join(base, `ferry-${process.pid}`);
    try {
      if (v2) fs.writeFileSync(path.join(base, 'cgroup.subtree_control'), '+pids');
      fs.mkdirSync(root, { recursive: true });
      if (v2) fs.writeFileSync(path.join(root, 'cgroup.subtree_control'), '+pids');
      // A probe: a child cgroup with a limit can be made here.
      const probe = path.join(root, 'probe');
      fs.mkdirSync(probe, { recursive: true });
      fs.writeFileSync(path.join(probe, 'pids.max'), String(max));
      fs.rmdirSync(probe);
    } catch (err) {
      return { unavailable: `the pids cgroup ${base} is not writable (${(err as Error).message})` };
    }
    return new PidsLimit(root, max);
  }

  /**
   * Makes cgroup `name` with `pids.max` for a process about to start and returns its directory and
   * the command that starts `file args` inside it: `/bin/sh` writes its own pid to the cgroup's
   * `cgroup.procs`, then execs `file` (same pid), so the sandbox's first instruction already runs
   * in the cgroup. When that write fails the shell exits 1 (its message in the process's log)
   * rather than start the sandbox without its limit. `uid`: the process starts as that user
   * (it is given the cgroup's procs file, to enter it).
   * @throws when the cgroup cannot be made (the caller does not start the process).
   */
  prepare(name: string, file: string, args: readonly string[], uid?: number): { dir: string; file: string; args: string[] } {
    const dir = path.join(this.root, name);
    fs.mkdirSync(dir, { recursive: true });
    try {
      fs.writeFileSync(path.join(dir, 'pids.max'), String(this.max));
      const procs = path.join(dir, 'cgroup.procs');
      if (uid !== undefined) fs.chownSync(procs, uid, -1);
      return { dir, file: '/bin/sh', args: ['-c', 'echo $$ > "$0" && exec "$@"', procs, file, ...args] };
    } catch (err) {
      this.remove(dir);
      throw err;
    }
  }

  /**
   * Moves process `pid` and its descendants into the cgroup `name`, made with `pids.max`; what
   * they start from then on is in it too. Only for a process that is not forking (an idle
   * warm-pool process): a fork racing the move could leave a child outside. Returns the cgroup's
   * directory, or undefined when the process is already gone.
   */
  attach(name: string, pid: number): string | undefined {
    const dir = path.join(this.root, name);
    try {
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, 'pids.max'), String(this.max));
      fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(pid));
      for (const child of descendants(pid, processTreeSync()).slice(1)) {
        try {
          fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(child));
        } catch {
          // exited meanwhile
        }
      }
      return dir;
    } catch {
      this.remove(dir);
      return undefined;
    }
  }

  /** Whether a fork was refused in cgroup `dir` because of its limit. */
  static exceeded(dir: string): boolean {
    const events = readText(path.join(dir, 'pids.events'));
    const max = /^max (\d+)$/m.exec(events);
    return max !== null && Number(max[1]) > 0;
  }

  /**
   * SIGKILLs every process still in cgroup `dir`. A sandbox's outer bwrap can die before the
   * sandbox's init (pid 1 of its namespace) has asked to die with it (`--die-with-parent` is set
   * by the child, racing a kill early in its start); that init then lives on, holding the
   * descriptors it inherited. Called when a sandbox is killed or its outer process is gone.
   */
  static killAll(dir: string): void {
    for (let round = 0; round < 10; round++) {
      const pids = readText(path.join(dir, 'cgroup.procs')).split('\n').filter((l) => l !== '').map(Number);
      if (pids.length === 0) return;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
    }
  }

  /** Removes cgroup `dir` once its processes are gone (a no-op while some remain). */
  remove(dir: string): void {
    try {
      fs.rmdirSync(dir);
    } catch {
      // processes left (a zombie not reaped yet) or already removed
    }
  }

  /** Removes the runtime's cgroup (at close, after every process is gone). */
  close(): void {
    this.remove(this.root);
  }
}

/**
 * Removes the empty cgroups that servers no longer running left under `base` (`ferry-<pid>`, and
 * their sandboxes' cgroups: a server killed with SIGKILL never closes its runtime). A cgroup that
 * still holds a process is left (rmdir refuses it); so is any of a live process's.
 */
function removeDeadServers(base: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(base).filter((n) => /^ferry-\d+$/.test(n) && n !== `ferry-${process.pid}`);
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(name.slice('ferry-'.length));
    if (pidExists(pid)) continue; // alive (a server, or a process that reused its pid): not ours to touch
    const dir = path.join(base, name);
    try {
      for (const child of fs.readdirSync(dir, { withFileTypes: true })) {
        if (child.isDirectory()) fs.rmdirSync(path.join(dir, child.name));
      }
      fs.rmdirSync(dir);
    } catch {
      // a process is still in one of them, or another server removed it first
    }
  }
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}
