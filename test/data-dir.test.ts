/**
 * The data directory: private to Ferry's user even when it existed with wider modes, and its
 * lock taken over from an owner that is gone (crashed, a zombie after kill -9, a reused pid).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { kill, startTestServer, withTempDir } from './support/index.js';

test('a pre-existing 0755 data directory and 0644 files become 0700 and 0600', async () => {
  await withTempDir(async (dir) => {
    const dataDir = path.join(dir, 'data');
    await fsp.mkdir(dataDir, { mode: 0o755 });
    await fsp.chmod(dataDir, 0o755);
    // A first start under a permissive umask, then the files opened up by hand.
    const first = await startTestServer(dataDir);
    await first.close();
    for (const f of ['ferry.db', 'inference.db']) await fsp.chmod(path.join(dataDir, f), 0o644);
    await fsp.chmod(dataDir, 0o755);

    const server = await startTestServer(dataDir);
    try {
      assert.equal((await fsp.stat(dataDir)).mode & 0o777, 0o700);
      const files = (await fsp.readdir(dataDir)).filter((f) => /\.db(-wal|-shm)?$|^server\.pid$/.test(f));
      assert.ok(files.includes('ferry.db') && files.includes('inference.db') && files.includes('server.pid'), files.join(','));
      for (const f of files) assert.equal((await fsp.stat(path.join(dataDir, f))).mode & 0o777, 0o600, f);
    } finally {
      await server.close();
    }
  });
});

test('a lock held by a zombie (killed, not yet reaped) is taken over', async () => {
  await withTempDir(async (dataDir) => {
    // sh starts a child that exits at once, then becomes `sleep`, which never reaps it: a zombie.
    const parent = spawn('sh', ['-c', 'sleep 0 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const zombie = Number(await new Promise<string>((resolve) => parent.stdout.once('data', (d: Buffer) => resolve(d.toString().trim()))));
      await waitState(zombie, 'Z');
      await fsp.writeFile(path.join(dataDir, 'server.pid'), String(zombie));
      const server = await startTestServer(dataDir);
      await server.close();
    } finally {
      await kill(parent, 'SIGKILL');
    }
  });
});

test('a lock naming a live process that started after the lock was written (a reused pid) is taken over; a live owner is not', async () => {
  await withTempDir(async (dataDir) => {
    const lock = path.join(dataDir, 'server.pid');
    const other = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      await fsp.writeFile(lock, String(other.pid));
      // The lock is as old as a crash an hour ago; the process with its pid is new.
      const hourAgo = new Date(Date.now() - 3_600_000);
      await fsp.utimes(lock, hourAgo, hourAgo);
      const server = await startTestServer(dataDir);
      await server.close();
      // Written now, by a process that was already running: a live owner, refused.
      await fsp.writeFile(lock, String(other.pid));
      await assert.rejects(startTestServer(dataDir), new RegExp(`Another Ferry server \\(pid ${other.pid}\\) is using the data directory`));
    } finally {
      await kill(other, 'SIGKILL');
    }
  });
});

async function waitState(pid: number, state: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith(state)) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail(`process ${pid} never reached state ${state}`);
}
