/**
 * Child processes and temp dirs the bench makes, and their cleanup on every path out: normal end,
 * a thrown error, Ctrl+C (SIGINT) or SIGTERM. Servers are spawned in their own process group
 * (`detached`), so killing the group also ends what they started (Ferry's replicas).
 * Also: CPU time per process from /proc/<pid>/stat, to say where the time goes.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

interface Tracked { child: ChildProcess; group: boolean }

const children = new Set<Tracked>();
const tempDirs = new Set<string>();

/** Registers `child` for cleanup; `group` when it leads its own process group. Returns an untrack function. */
export function track(child: ChildProcess, group: boolean): () => void {
  const t = { child, group };
  children.add(t);
  return () => { children.delete(t); };
}

export function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function signal(t: Tracked, sig: NodeJS.Signals): void {
  const pid = t.child.pid;
  if (pid === undefined) return;
  try {
    if (t.group) process.kill(-pid, sig);
    else t.child.kill(sig);
  } catch { /* already gone */ }
}

/** SIGTERM every child (a Ferry server drains and stops its replicas), SIGKILL the groups after `graceMs`, remove temp dirs. */
export async function cleanup(graceMs = 5000): Promise<void> {
  const list = [...children];
  for (const t of list) if (alive(t.child)) t.child.kill('SIGTERM');
  const deadline = Date.now() + graceMs;
  while (list.some((t) => alive(t.child)) && Date.now() < deadline) await sleep(50);
  // The group kill also reaches grandchildren whose parent already exited.
  for (const t of list) signal(t, 'SIGKILL');
  children.clear();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

/** Stops one server started by `startServerProcess`: SIGTERM, then SIGKILL to its group after `graceMs`. */
export async function stopServer(proc: ServerProcess, graceMs = 5000): Promise<void> {
  const t = [...children].find((c) => c.child === proc.child);
  if (t === undefined) return;
  if (alive(t.child)) t.child.kill('SIGTERM');
  const deadline = Date.now() + graceMs;
  while (alive(t.child) && Date.now() < deadline) await sleep(50);
  signal(t, 'SIGKILL');
  children.delete(t);
}

/** Last resort on a synchronous exit path: no waiting, kill everything, remove dirs. */
function cleanupNow(): void {
  for (const t of children) signal(t, 'SIGKILL');
  children.clear();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

let stopping = false;

/** True once SIGINT/SIGTERM arrived: failures after that are the interruption, not worth reporting. */
export function interrupted(): boolean {
  return stopping;
}

/** Installs the Ctrl+C / SIGTERM / exit handlers; call once at start. */
export function installCleanupHandlers(): void {
  const onSignal = (sig: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`\nbench: ${sig}, stopping children and removing temp dirs...\n`);
    void cleanup(3000).finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', cleanupNow);
}

export interface ServerProcess {
  child: ChildProcess;
  pid: number;
  /** The match of `urlPattern` in the child's stdout. */
  url: string;
  /** The last lines the child wrote to stderr (for error messages). */
  stderrTail(): string;
  /** stderr lines by JSON `level` field ("error", "warn", ...; "other" for non-JSON lines). */
  stderrLevels: Map<string, number>;
  /** The first few distinct stderr lines that are not JSON info logs (warnings, errors, stack traces). */
  stderrNotable: Set<string>;
}

/**
 * Spawns `node <args>` in its own process group and waits until stdout matches `urlPattern`
 * (group 1 is the URL). Both pipes are drained for the child's lifetime, so a chatty child never
 * blocks on a full pipe.
 */
export async function startServerProcess(args: string[], env: NodeJS.ProcessEnv, urlPattern: RegExp, timeoutMs: number): Promise<ServerProcess> {
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  track(child, true);
  const tail: string[] = [];
  const levels = new Map<string, number>();
  const notable = new Set<string>();
  let partial = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => {
    const lines = (partial + s).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      tail.push(line);
      if (tail.length > 40) tail.shift();
      let level = 'other';
      try {
        const parsed = (JSON.parse(line) as { level?: unknown }).level;
        if (typeof parsed === 'string') level = parsed;
      } catch { /* not JSON */ }
      levels.set(level, (levels.get(level) ?? 0) + 1);
      if (level !== 'info' && level !== 'debug' && notable.size < 10) notable.add(line.replace(/^\(node:\d+\) /, '').slice(0, 300));
    }
  });
  const stderrTail = (): string => [...tail, partial].join('\n').trim();
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${args.join(' ')}: no listening line after ${timeoutMs} ms\n${out}${stderrTail()}`)), timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      const m = urlPattern.exec(out);
      if (m?.[1] !== undefined) { clearTimeout(timer); resolve(m[1]); }
    });
    child.once('error', (err) => { clearTimeout(timer); reject(err); });
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`${args.join(' ')} exited (${code ?? sig}) before listening\n${out}${stderrTail()}`));
    });
  });
  return { child, pid: child.pid!, url, stderrTail, stderrLevels: levels, stderrNotable: notable };
}

/** Runs `command args` to completion, tracked for cleanup, and collects its output. */
export async function runTracked(command: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const untrack = track(child, false);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => { stdout += s; });
  child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c) => resolve(c));
  }).finally(untrack);
  return { code, stdout, stderr };
}

/** Runs `node <args>` to completion (tracked for cleanup) and returns its stdout; rejects on a non-zero exit. */
export async function runNodeScript(args: string[]): Promise<string> {
  const { code, stdout, stderr } = await runTracked(process.execPath, args);
  if (code !== 0) throw new Error(`node ${args.join(' ')} failed (exit ${code}):\n${stdout}${stderr}`);
  return stdout;
}

// ---- CPU accounting from /proc -------------------------------------------------------------

let clockTicksPerS: number | undefined;
function ticksPerS(): number {
  if (clockTicksPerS === undefined) {
    try { clockTicksPerS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100; } catch { clockTicksPerS = 100; }
  }
  return clockTicksPerS;
}

interface ProcStat { ppid: number; cpuUs: number }

function readStat(pid: number): ProcStat | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the ")" that ends the command name: state ppid ... utime(14) stime(15).
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(f[11]) + Number(f[12]);
    return { ppid: Number(f[1]), cpuUs: (ticks * 1e6) / ticksPerS() };
  } catch {
    return undefined;
  }
}

/**
 * Labels of a process tree: `rootLabel` for the root, and for each descendant the label that
 * `labelOf(commandLine, pid, parentLabel)` gives it (a replica's sandbox children take the replica's
 * label through `parentLabel`: in the sandbox the runtime's child is bwrap); a descendant labelled
 * undefined is left out (with its subtree).
 */
export interface TreeLabels {
  rootLabel: string;
  labelOf(commandLine: string, pid: number, parentLabel: string): string | undefined;
}

/** `root` and the descendants `labels` keeps, with their labels, e.g. {1234: "server", 1240: "replica"}. */
export function processTree(root: number, labels: TreeLabels): Map<number, string> {
  const byParent = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    const st = readStat(pid);
    if (!st) continue;
    byParent.set(st.ppid, [...(byParent.get(st.ppid) ?? []), pid]);
  }
  const out = new Map<number, string>([[root, labels.rootLabel]]);
  const queue = [root];
  while (queue.length > 0) {
    const parent = queue.shift()!;
    for (const kid of byParent.get(parent) ?? []) {
      let cmd = '';
      try { cmd = readFileSync(`/proc/${kid}/cmdline`, 'utf8').split('\0').join(' '); } catch { /* gone */ }
      const label = labels.labelOf(cmd, kid, out.get(parent) ?? labels.rootLabel);
      if (label === undefined) continue;
      out.set(kid, label);
      queue.push(kid);
    }
  }
  return out;
}

/** CPU µs (user + system, all threads) used so far by each pid. */
export function cpuSnapshot(pids: Iterable<number>): Map<number, number> {
  const out = new Map<number, number>();
  for (const pid of pids) {
    const st = readStat(pid);
    if (st) out.set(pid, st.cpuUs);
  }
  return out;
}

/** Resident memory (VmRSS) of `pid` in MiB, or undefined when it is gone. */
export function rssMiB(pid: number): number | undefined {
  try {
    const kb = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb === undefined ? undefined : Math.round(Number(kb) / 1024);
  } catch {
    return undefined;
  }
}

/** Whole-machine CPU from /proc/stat: busy and total, in ticks. */
export function machineCpu(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
