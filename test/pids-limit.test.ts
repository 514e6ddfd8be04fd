/**
 * The pids cgroup per sandbox (src/runtime/local/pids-limit.ts) against the real kernel: a process
 * started through `prepare` is inside its cgroup before its first fork, its limit holds, and a
 * process that cannot enter its cgroup never runs its command. Skipped where no pids cgroup is
 * writable (a non-root run, a container without delegation).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, test } from 'node:test';
import { PidsLimit } from '../src/runtime/local/pids-limit.js';
import { tempDir } from './support/index.js';

const opened = PidsLimit.open(8);
const limit = opened instanceof PidsLimit ? opened : undefined;
const skip = limit === undefined ? `no pids cgroup here: ${'unavailable' in opened ? opened.unavailable : ''}` : false;
after(() => limit?.close());

/** The pids cgroup path of process `pid` ("/ferry-123/name"), from /proc/<pid>/cgroup. */
function pidsCgroupOf(pid: number): string | undefined {
  const lines = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n');
  return (lines.find((l) => l.split(':')[1]?.split(',').includes('pids')) ?? lines.find((l) => l.startsWith('0::')))?.split(':')[2];
}

/** Starts `script` under /bin/sh inside cgroup `name`; resolves with its exit code. */
function runIn(name: string, script: string): { dir: string; pid: number; exited: Promise<number | null> } {
  assert.ok(limit !== undefined);
  const { dir, file, args } = limit.prepare(name, '/bin/sh', ['-c', script]);
  const child = spawn(file, args, { stdio: 'ignore' });
  assert.ok(child.pid !== undefined);
  return { dir, pid: child.pid, exited: new Promise((resolve) => child.once('exit', (code) => resolve(code))) };
}

test('a process started through prepare and the children it forks at once are all in its cgroup', { skip }, async () => {
  const dir = await tempDir();
  try {
    // The first instruction forks: under the old move-after-start, such children could stay outside.
    const pidsFile = path.join(dir, 'pids');
    const run = runIn('forks-at-once', `sleep 3 & echo $! >> ${pidsFile}; sh -c 'sleep 3 & echo $! >> ${pidsFile}; wait' & echo $! >> ${pidsFile}; sleep 0.5; echo $$ >> ${pidsFile}; wait`);
    await new Promise((r) => setTimeout(r, 1000));
    const pids = (await fsp.readFile(pidsFile, 'utf8')).trim().split('\n').map(Number);
    assert.equal(pids.length, 4, `pids: ${pids.join(', ')}`);
    const own = pidsCgroupOf(run.pid);
    assert.ok(own?.endsWith('/forks-at-once'), `the started process is in its cgroup: ${own}`);
    for (const pid of pids) assert.equal(pidsCgroupOf(pid), own, `process ${pid}`);
    assert.equal(await run.exited, 0);
    limit?.remove(run.dir);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('the limit holds: forks past pids.max fail and the cgroup says a fork was refused', { skip }, async () => {
  // 20 background sleeps against a limit of 8 (the shell itself is one): some forks fail.
  const run = runIn('bounded', 'for i in $(seq 20); do sleep 2 & done 2>/dev/null; wait');
  await new Promise((r) => setTimeout(r, 500));
  const current = Number(fs.readFileSync(path.join(run.dir, 'pids.current'), 'utf8'));
  assert.ok(current <= 8, `pids.current ${current}`);
  assert.equal(PidsLimit.exceeded(run.dir), true);
  await run.exited;
  limit?.remove(run.dir);
});

test('a process that cannot enter its cgroup exits without running its command', { skip }, async () => {
  const dir = await tempDir();
  try {
    const marker = path.join(dir, 'ran');
    assert.ok(limit !== undefined);
    const { dir: cgroup, file, args } = limit.prepare('gone', '/bin/sh', ['-c', `touch ${marker}`]);
    limit.remove(cgroup); // e.g. removed by someone between prepare and start
    const code = await new Promise<number | null>((resolve) => spawn(file, args, { stdio: 'ignore' }).once('exit', (c) => resolve(c)));
    assert.notEqual(code, 0);
    assert.equal(fs.existsSync(marker), false, 'the command did not run outside its limit');
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('opening removes the empty cgroups of servers that are gone, and leaves a live one\'s', { skip }, () => {
  assert.ok(limit !== undefined);
  const base = path.dirname(path.dirname(limit.prepare('probe-base', '/bin/true', []).dir));
  limit.remove(path.join(base, `ferry-${process.pid}`, 'probe-base'));
  // A pid that is not running (beyond pid_max) and one that is (this process's parent).
  const dead = path.join(base, 'ferry-4194999');
  const live = path.join(base, `ferry-${process.ppid}`);
  fs.mkdirSync(path.join(dead, 'replica-x'), { recursive: true });
  const liveExisted = fs.existsSync(live);
  fs.mkdirSync(live, { recursive: true });
  try {
    const again = PidsLimit.open(8);
    assert.ok(again instanceof PidsLimit);
    assert.equal(fs.existsSync(dead), false, 'the dead server\'s cgroups are gone');
    assert.equal(fs.existsSync(live), true, 'a live process\'s cgroup is left');
  } finally {
    if (!liveExisted) fs.rmdirSync(live);
    if (fs.existsSync(path.join(dead, 'replica-x'))) fs.rmdirSync(path.join(dead, 'replica-x'));
    if (fs.existsSync(dead)) fs.rmdirSync(dead);
  }
});
