/**
 * The audit log under attack and under failure, through a real server and real SQLite: anonymous
 * floods stay small, old rows expire, and a change whose audit row cannot be written is not made.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { ANONYMOUS_PATH_CHARS } from '../src/auth/index.js';
import { compileServerConfig } from '../src/config/index.js';
import { startServer, type FerryServer } from '../src/server/index.js';
import { ADMIN_TOKEN, request, withTempDir, TEST_GATEWAY_WORKERS } from './support/index.js';

const DAY_MS = 86_400_000;

async function start(dataDir: string, now: () => number): Promise<FerryServer> {
  return startServer(compileServerConfig({ port: 0, dataDir, warmPoolSize: 0 , gatewayWorkers: TEST_GATEWAY_WORKERS }), { adminToken: ADMIN_TOKEN, now });
}

async function auditRows(url: string): Promise<any[]> {
  const rows: any[] = [];
  let token: string | undefined;
  do {
    const r = await request({ url, path: `/api/2.0/audit-log?max_results=1000${token === undefined ? '' : `&page_token=${token}`}` });
    assert.equal(r.status, 200, r.text);
    rows.push(...r.json.entries);
    token = r.json.next_page_token;
  } while (token !== undefined);
  return rows;
}

test('2,000 anonymous changes with 8 KiB paths add a few KB to the audit log, not MBs; the overflow is one row with its count', { timeout: 120_000 }, async () => {
  await withTempDir(async (dir) => {
    let clock = Date.now();
    const server = await start(path.join(dir, 'data'), () => clock);
    try {
      const before = await auditRows(server.url);
      const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
      const longName = 'x'.repeat(8192);
      const one = (): Promise<number> => new Promise((resolve, reject) => {
        const req = http.request(`${server.url}/api/2.0/serving-endpoints/${longName}`, { method: 'DELETE', agent }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.end();
      });
      let sent = 0;
      await Promise.all(Array.from({ length: 16 }, async () => {
        while (sent < 2000) {
          sent++;
          assert.equal(await one(), 401);
        }
      }));
      agent.destroy();
      // The minute ends: the next anonymous call writes the summary of the one before.
      clock += 60_000;
      assert.equal((await request({ url: server.url, method: 'POST', path: '/api/2.0/principals', token: null, json: {} })).status, 401);

      const added = (await auditRows(server.url)).slice(0, -before.length || undefined);
      const anonymous = added.filter((e) => e.principal === '');
      const own = anonymous.filter((e) => e.action === 'DELETE /api/2.0/serving-endpoints/:name');
      const summary = anonymous.filter((e) => e.method === '*');
      assert.equal(own.length, 100, 'auditAnonymousRowsPerMinute rows of their own');
      assert.deepEqual(summary.map((e) => [e.count, e.status, e.error_code]), [[1900, 401, 'UNAUTHENTICATED']]);
      assert.ok(own.every((e) => e.path.length <= ANONYMOUS_PATH_CHARS + 3 && e.status === 401));
      const bytes = Buffer.byteLength(JSON.stringify(added));
      assert.ok(bytes < 64 * 1024, `the audit rows added take ${bytes} bytes`);
    } finally {
      await server.close();
    }
  });
});

test('rows older than auditRetention (90 days) are deleted at start', { timeout: 60_000 }, async () => {
  await withTempDir(async (dir) => {
    const dataDir = path.join(dir, 'data');
    const then = Date.now() - 100 * DAY_MS;
    const old = await start(dataDir, () => then);
    assert.equal((await request({ url: old.url, method: 'POST', path: '/api/2.0/mlflow/registered-models/create', json: { name: 'old' } })).status, 200);
    assert.equal((await auditRows(old.url)).filter((e) => e.timestamp === then).length, 1);
    await old.close();

    const later = await start(dataDir, Date.now);
    try {
      assert.equal((await request({ url: later.url, method: 'POST', path: '/api/2.0/mlflow/registered-models/create', json: { name: 'new' } })).status, 200);
      const rows = await auditRows(later.url);
      assert.deepEqual(rows.map((e) => e.path), ['/api/2.0/mlflow/registered-models/create']);
      assert.ok(rows.every((e) => e.timestamp > then));
    } finally {
      await later.close();
    }
  });
});

test('a change whose audit row cannot be written is refused with 503 and not made', { timeout: 60_000 }, async () => {
  await withTempDir(async (dir) => {
    const dataDir = path.join(dir, 'data');
    const server = await start(dataDir, Date.now);
    // Another connection to the real database makes audit inserts fail, as a failing disk would.
    const db = new Database(path.join(dataDir, 'ferry.db'));
    try {
      db.exec(`CREATE TRIGGER audit_fails BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit log unavailable'); END`);
      const create = await request({ url: server.url, method: 'POST', path: '/api/2.0/mlflow/registered-models/create', json: { name: 'unrecorded' } });
      assert.equal(create.status, 503, create.text);
      assert.equal(create.json.error_code, 'TEMPORARILY_UNAVAILABLE');
      assert.match(create.json.message, /The change was not made: its audit log entry could not be written \(audit log unavailable\)/);
      assert.equal((await request({ url: server.url, path: '/api/2.0/mlflow/registered-models/get?name=unrecorded' })).status, 404);
      const principal = await request({ url: server.url, method: 'POST', path: '/api/2.0/principals', json: { name: 'ghost', type: 'USER' } });
      assert.equal(principal.status, 503);
      assert.equal((await request({ url: server.url, path: '/api/2.0/principals/ghost' })).status, 404);

      db.exec('DROP TRIGGER audit_fails');
      assert.equal((await request({ url: server.url, method: 'POST', path: '/api/2.0/mlflow/registered-models/create', json: { name: 'recorded' } })).status, 200);
      const rows = await auditRows(server.url);
      assert.deepEqual(rows.map((e) => `${e.principal} ${e.action} ${e.status}`), ['admin POST /api/2.0/mlflow/registered-models/create 200']);
    } finally {
      db.close();
      await server.close();
    }
  });
});
