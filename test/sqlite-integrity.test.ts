/**
 * SQLite damage, as it happens to real files: a flipped byte in the WAL of a server killed with
 * acknowledged writes in it, a truncated or foreign database file, a page corrupted under a
 * running server. Each is refused or reported with one clear message naming the file and the
 * recovery steps; nothing starts as if all were well.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { findLostCommits } from '../src/store/sqlite-integrity.js';
import { ADMIN_TOKEN, FERRY_BIN, kill, Processes, request, startTestServer, withTempDir, TEST_GATEWAY_WORKERS } from './support/index.js';

/** Runs `ferry server` on `dataDir` expecting it to refuse to start; resolves with its exit code and output. */
function refusedStart(dataDir: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [FERRY_BIN, 'server', '--port', '0', '--data-dir', dataDir], { env: { ...process.env, FERRY_ADMIN_TOKEN: ADMIN_TOKEN }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => {
      void kill(child, 'SIGKILL');
      reject(new Error(`ferry server did not exit: ${output}`));
    }, 20_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

function assertOneLineRefusal(r: { code: number | null; output: string }, message: RegExp): void {
  assert.equal(r.code, 1, r.output);
  assert.match(r.output, message);
  assert.match(r.output, /Recovery .*cp -a.*sqlite3 \S+ "\.recover"/);
  assert.doesNotMatch(r.output, /\n\s+at /, 'no stack trace');
  assert.doesNotMatch(r.output, /listening on/);
}

test('one flipped byte in ferry.db-wal of a killed server holding 60 acknowledged models: the start is refused, naming the loss and the recovery', { timeout: 120_000 }, async () => {
  const procs = new Processes();
  await withTempDir(async (dir) => {
    try {
      const dataDir = path.join(dir, 'data');
      const { child, url } = await procs.startServer(dataDir, {}, ['--config', await writeConfig(dir)]);
      for (let i = 0; i < 60; i++) {
        const r = await request({ url, method: 'POST', path: '/api/2.0/mlflow/registered-models/create', json: { name: `m-${i}` } });
        assert.equal(r.status, 200, r.text);
      }
      await kill(child, 'SIGKILL');
      const walFile = path.join(dataDir, 'ferry.db-wal');
      const wal = await fsp.readFile(walFile);
      const pageSize = wal.readUInt32BE(8);
      const frames = Math.floor((wal.length - 32) / (24 + pageSize));
      assert.ok(frames > 60, `${frames} frames in the WAL`);
      assert.equal(findLostCommits(wal), undefined, 'an intact WAL loses nothing');

      // The same directory, intact: every acknowledged model is there (no false alarm).
      const intact = path.join(dir, 'intact');
      await fsp.cp(dataDir, intact, { recursive: true });
      await fsp.rm(path.join(intact, 'server.pid'), { force: true });
      const ok = await procs.startServer(intact, {}, ['--config', await writeConfig(dir)]);
      const listed = await request({ url: ok.url, path: '/api/2.0/mlflow/registered-models/search?max_results=1000' });
      assert.equal(listed.json.registered_models.length, 60);
      await kill(ok.child, 'SIGTERM');

      // One byte of a page image a third of the way in.
      const frame = Math.floor(frames / 3);
      const offset = 32 + frame * (24 + pageSize) + 24 + 100;
      wal[offset] = (wal[offset] as number) ^ 0x01;
      await fsp.writeFile(walFile, wal);
      const lost = findLostCommits(wal);
      assert.ok(lost !== undefined && lost.frame === frame + 1 && lost.lostCommits > 20, JSON.stringify(lost));
      console.log(`wal: ${frames} frames; one byte flipped in frame ${frame + 1}: SQLite's replay would drop ${lost.lostCommits} committed transactions`);
      assertOneLineRefusal(await refusedStart(dataDir), new RegExp(`The metadata database \\S+ferry\\.db cannot be opened safely: its write-ahead log \\S+ferry\\.db-wal is damaged at byte \\d+ \\(frame ${frame + 1}\\), and ${lost.lostCommits} committed transaction\\(s\\) after that point would be silently dropped`));
      // Refusing changed nothing: the WAL still holds what a recovery needs.
      assert.deepEqual(await fsp.readFile(walFile), wal);
    } finally {
      await procs.killAll();
    }
  });
});

test('a WAL that ends in a torn, uncommitted frame (a crash while writing) is normal: the server starts', async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, 'x.db');
    const db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.pragma('wal_autocheckpoint = 0');
    db.exec('CREATE TABLE t (v TEXT)');
    for (let i = 0; i < 5; i++) db.prepare('INSERT INTO t VALUES (?)').run('x'.repeat(3000));
    const wal = await fsp.readFile(`${file}-wal`);
    db.close();
    assert.equal(findLostCommits(wal.subarray(0, wal.length - 1000)), undefined);
    // The header damaged: SQLite would ignore every frame, all of them commits.
    const header = Buffer.from(wal);
    header[17] = (header[17] as number) ^ 0xff;
    assert.equal(findLostCommits(header)?.frame, 0);
  });
});

test('a truncated ferry.db, and one that is not a database, stop the start with one clear line', { timeout: 60_000 }, async () => {
  await withTempDir(async (dir) => {
    const dataDir = path.join(dir, 'data');
    const server = await startTestServer(dataDir, { warmPoolSize: 0 });
    for (let i = 0; i < 50; i++) await request({ url: server.url, method: 'POST', path: '/api/2.0/mlflow/registered-models/create', json: { name: `m-${i}`, description: 'd'.repeat(500) } });
    await server.close();
    const file = path.join(dataDir, 'ferry.db');
    const size = (await fsp.stat(file)).size;
    await fsp.truncate(file, Math.floor(size / 2) + 100);
    assertOneLineRefusal(await refusedStart(dataDir), /The metadata database \S+ferry\.db (is damaged or is not a SQLite database|failed its integrity check)/);

    await fsp.writeFile(file, Buffer.alloc(8192, 'garbage!'));
    assertOneLineRefusal(await refusedStart(dataDir), /The metadata database \S+ferry\.db is damaged or is not a SQLite database \(SQLITE_NOTADB/);
  });
});

test('a page corrupted under a running server: a 500 naming the database and the recovery, logged as an error; the server keeps running', { timeout: 60_000 }, async () => {
  await withTempDir(async (dir) => {
    const dataDir = path.join(dir, 'data');
    const logged: string[] = [];
    const { compileServerConfig } = await import('../src/config/index.js');
    const { startServer } = await import('../src/server/index.js');
    const server = await startServer(compileServerConfig({ port: 0, dataDir, warmPoolSize: 0 , gatewayWorkers: TEST_GATEWAY_WORKERS }), {
      adminToken: ADMIN_TOKEN, log: (level, msg, fields) => logged.push(`${level} ${msg} ${JSON.stringify(fields)}`),
    });
    try {
      for (let i = 0; i < 100; i++) await request({ url: server.url, method: 'POST', path: '/api/2.0/mlflow/registered-models/create', json: { name: `m-${i}`, description: 'd'.repeat(200) } });
      // Another connection moves the pages into ferry.db, overwrites the models table's root page,
      // and writes elsewhere, so that the server's connection reads the file again.
      const other = new Database(path.join(dataDir, 'ferry.db'));
      other.pragma('wal_checkpoint(TRUNCATE)');
      const root = (other.prepare("SELECT rootpage FROM sqlite_master WHERE name = 'registered_models'").get() as { rootpage: number }).rootpage;
      const pageSize = other.pragma('page_size', { simple: true }) as number;
      const fd = await fsp.open(path.join(dataDir, 'ferry.db'), 'r+');
      await fd.write(Buffer.alloc(pageSize, 0xa5), 0, pageSize, (root - 1) * pageSize);
      await fd.close();
      other.prepare("INSERT INTO gateway_load (server, reported_ms, entities) VALUES ('x', 1, '{}')").run();
      other.close();

      const r = await request({ url: server.url, path: '/api/2.0/mlflow/registered-models/search' });
      assert.equal(r.status, 500, r.text);
      assert.deepEqual(r.json, {
        error_code: 'INTERNAL_ERROR',
        message: 'Storage failure: the metadata database ferry.db is corrupt (SQLITE_CORRUPT). Stop the server, back the file up and recover it (docs/storage.md, "Integrity checks and recovery").',
      });
      assert.ok(!r.text.includes(dir), 'no server path in the answer');
      assert.ok(logged.some((l) => l.startsWith('error request failed') && l.includes('ferry.db is corrupt')), logged.join('\n'));
      assert.equal((await request({ url: server.url, path: '/v2/health/live' })).status, 200);
    } finally {
      await server.close();
    }
  });
});

async function writeConfig(dir: string): Promise<string> {
  const file = path.join(dir, 'config.json');
  await fsp.writeFile(file, JSON.stringify({ warmPoolSize: 0 }));
  return file;
}
