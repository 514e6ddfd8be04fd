/**
 * The local runtime's watchdog: every `memoryPollMs` it SIGKILLs each replica whose process tree's
 * resident memory exceeds its limit (reported as `oom`) or whose sandbox reached its process limit
 * (./pids-limit.ts; reported as `processes`), and has the Python fork servers check theirs.
 */
import { PidsLimit } from './pids-limit.js';
import type { PythonPool } from './python-pool.js';
import { descendants, processTree, residentBytes } from './proc.js';
import { appendLog } from './log-files.js';
import type { LocalReplica } from './types.js';

export class Watchdog {
  private readonly timer: NodeJS.Timeout;
  private watching = false;

  constructor(
    private readonly replicas: ReadonlyMap<string, LocalReplica>,
    private readonly pids: PidsLimit | { unavailable: string },
    private readonly pythonPool: PythonPool | undefined,
    pollMs: number,
  ) {
    this.timer = setInterval(() => void this.checkMemory(), pollMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
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
      // A sandbox that refused a fork (a fork bomb) is killed: the replica is reported as `processes`.
      for (const r of this.replicas.values()) {
        if (r.cgroup === undefined || !PidsLimit.exceeded(r.cgroup) || r.child.exitCode !== null) continue;
        r.processLimitHit = true;
        PidsLimit.killAll(r.cgroup);
        await appendLog(r.logFile, 'replica killed: its sandbox reached the process limit', { maxProcesses: this.pids instanceof PidsLimit ? this.pids.max : undefined });
        r.child.kill('SIGKILL');
      }
      this.pythonPool?.checkLimits();
    } finally {
      this.watching = false;
    }
  }
}
