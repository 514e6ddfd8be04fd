/**
 * Every acknowledged registry write survives `kill -9` of the server: concurrent writers, a hard
 * kill in the middle, a restart, and every write that got a 200 must be there.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { writeFixtures } from '../src/fixtures/index.js';
import { kill, Processes, request, withTempDir } from './support/index.js';

test('acknowledged writes survive kill -9 of the server', async () => {
  const procs = new Processes();
  await withTempDir(async (dir) => {
    try {
      const fx = await writeFixtures(path.join(dir, 'fixtures'));
      const dataDir = path.join(dir, 'data');
      const first = await procs.startServer(dataDir);
      const acked: string[] = [];
      const ackedVersions: string[] = [];
      let stop = false;
      const writer = async (w: number): Promise<void> => {
        for (let i = 0; !stop; i++) {
          const name = `m-${w}-${i}`;
          try {
            const r = await request({ url: first.url, method: 'POST', path: '/api/2.0/mlflow/registered-models/create', json: { name, tags: [{ key: 'i', value: String(i) }] } });
            if (r.status === 200) acked.push(name);
            if (i % 5 === 0 && r.status === 200) {
              const v = await request({ url: first.url, method: 'POST', path: '/api/2.0/mlflow/model-versions/create', json: { name, source: fx.linear } });
              if (v.status === 200 && v.json.model_version.status === 'READY') ackedVersions.push(name);
            }
          } catch {
            return; // the server is gone
          }
        }
      };
      const writers = [0, 1, 2, 3].map(writer);
      // Kill once enough writes are in flight.
      while (acked.length < 150) await new Promise((r) => setTimeout(r, 5));
      await kill(first.child, 'SIGKILL');
      stop = true;
      await Promise.all(writers);
      assert.ok(acked.length >= 150);

      const second = await procs.startServer(dataDir);
      for (const name of acked) {
        const r = await request({ url: second.url, path: `/api/2.0/mlflow/registered-models/get?name=${name}` });
        assert.equal(r.status, 200, `acknowledged model ${name} lost after kill -9`);
      }
      for (const name of ackedVersions) {
        const r = await request({ url: second.url, path: `/api/2.0/mlflow/model-versions/get?name=${name}&version=1` });
        assert.equal(r.json?.model_version?.status, 'READY', `acknowledged version of ${name} lost after kill -9`);
      }
      // Nothing is left half-registered: interrupted registrations were finished at start.
      const pending = await request({ url: second.url, path: '/api/2.0/mlflow/model-versions/search?max_results=1000' });
      for (const v of pending.json.model_versions) assert.notEqual(v.status, 'PENDING_REGISTRATION', `${v.name} v${v.version} still pending`);
      await fsp.access(path.join(dataDir, 'ferry.db'));
    } finally {
      await procs.killAll();
    }
  });
});
