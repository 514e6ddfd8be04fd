/**
 * The error table against its documentation, and a full disk as the user sees it: a real server
 * whose data directory is a 4 MiB tmpfs (mounted in a private mount namespace, so no root is
 * needed), filled up by an upload and by metadata writes: 507 INSUFFICIENT_STORAGE that says
 * what to do, never a 500.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { ERROR_TABLE } from '../src/errors.js';
import { ADMIN_TOKEN, FERRY_BIN, kill, request, ROOT, waitFor, withTempDir } from './support/index.js';

test('docs/api.md lists every error code of src/errors.ts with its status, and no other', async () => {
  const doc = await fsp.readFile(path.join(ROOT, 'docs', 'api.md'), 'utf8');
  const section = doc.slice(doc.indexOf('| error_code | HTTP | when |'));
  const documented = new Map<string, number>();
  for (const line of section.split('\n').slice(2)) {
    if (!line.startsWith('|')) break;
    const [codes, status] = line.split('|').slice(1, 3);
    for (const m of (codes ?? '').matchAll(/`([A-Z_]+)`/g)) documented.set(m[1] as string, Number(status));
  }
  const table = new Map(Object.entries(ERROR_TABLE).map(([code, e]) => [code, e.status]));
  assert.deepEqual([...documented].sort(), [...table].sort());
});

const namespacesWork = spawnSync('unshare', ['-rm', 'true']).status === 0;

test('a full disk is a 507 INSUFFICIENT_STORAGE naming the cause, for uploads and metadata writes', { skip: namespacesWork ? false : 'unshare -rm (user and mount namespaces) is not available here', timeout: 60_000 }, async () => {
  await withTempDir(async (dir) => {
    const mnt = path.join(dir, 'mnt');
    const logFile = path.join(dir, 'server.log');
    await fsp.mkdir(mnt);
    await fsp.writeFile(path.join(dir, 'config.json'), JSON.stringify({ warmPoolSize: 0 }));
    const log = await fsp.open(logFile, 'w');
    // The tmpfs exists only in the server's mount namespace; 3.5 MiB of it are taken at once.
    const child = spawn('unshare', ['-rm', 'sh', '-c',
      'mount -t tmpfs -o size=4m tmpfs "$1" && head -c 3584k /dev/zero > "$1/filler" && exec "$2" "$3" server --port 0 --data-dir "$1/data" --config "$4"',
      'sh', mnt, process.execPath, FERRY_BIN, path.join(dir, 'config.json')], { env: { ...process.env, FERRY_ADMIN_TOKEN: ADMIN_TOKEN }, stdio: ['ignore', log.fd, log.fd] });
    await log.close();
    try {
      const url = await waitFor('the server to listen', async () => {
        const text = await fsp.readFile(logFile, 'utf8');
        if (child.exitCode !== null) throw new Error(`server exited: ${text}`);
        return /listening on (http:\/\/\S+)/.exec(text)?.[1];
      });
      const upload = await request({ url, method: 'PUT', path: '/api/2.0/mlflow-artifacts/artifacts/big.bin', body: Buffer.alloc(2 << 20, 1) });
      assert.equal(upload.status, 507, upload.text);
      assert.equal(upload.json.error_code, 'INSUFFICIENT_STORAGE');
      assert.match(upload.json.message, /No space left/);

      let last = await request({ url, path: '/v2/health/live' });
      for (let i = 0; i < 200 && last.status !== 507; i++) {
        last = await request({ url, method: 'POST', path: '/api/2.0/mlflow/registered-models/create', json: { name: `m${i}`, description: 'x'.repeat(60_000) } });
        assert.ok(last.status === 200 || last.status === 507, last.text);
      }
      assert.equal(last.status, 507, 'the disk never filled up');
      assert.equal(last.json.error_code, 'INSUFFICIENT_STORAGE');
      assert.match(last.json.message, /^No space left to write to the metadata database ferry\.db \((SQLITE_FULL|ENOSPC)\)/);
      // The server keeps answering.
      assert.equal((await request({ url, path: '/v2/health/ready' })).status, 200);
    } finally {
      await kill(child, 'SIGKILL');
    }
  });
});
