/**
 * The Postgres metadata store against a real PostgreSQL server this file starts (see
 * support/postgres.ts): the shared contract suites (metadata, inference table), what only a shared database can get wrong
 * (concurrent writers, concurrent migrations), and a real server keeping its state there.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { compileServerConfig } from '../src/config/index.js';
import { writeFixtures } from '../src/fixtures/index.js';
import { openInferenceTableStore, openStore, type EndpointRecord, type MetadataStore } from '../src/store/index.js';
import { PG_MIGRATIONS } from '../src/store/postgres-migrations.js';
import { inferenceTableStoreContract } from './contract/inference-table-store.js';
import { storeContract } from './contract/store.js';
import { registerVersion, request, startTestServer, tempDir, waitFor, waitSettled } from './support/index.js';
import { postgresUnavailable, startPostgres, type TestPostgres } from './support/postgres.js';

test('databaseUrl must be a postgres URL; the error does not repeat it (it may hold a password)', () => {
  assert.equal(compileServerConfig({ databaseUrl: 'postgresql://u:p@db/ferry' }).databaseUrl, 'postgresql://u:p@db/ferry');
  assert.equal(compileServerConfig({}).databaseUrl, undefined);
  assert.throws(() => compileServerConfig({ databaseUrl: 'mysql://u:hunter2@db/ferry' }), (err: Error) =>
    /'databaseUrl'.*"mysql".*postgres:\/\//.test(err.message) && !err.message.includes('hunter2'));
});

const unavailable = postgresUnavailable();

if (unavailable !== undefined) {
  test('Postgres metadata store', { skip: unavailable }, () => undefined);
} else {
  let postgres: TestPostgres | undefined;
  const cluster = (): TestPostgres => {
    assert.ok(postgres, 'PostgreSQL started in before()');
    return postgres;
  };
  before(async () => {
    postgres = await startPostgres();
  });
  after(async () => {
    await postgres?.stop();
  });

  // A fresh database per test; they all go when the cluster's directory is removed in after().
  storeContract('postgres', async () => {
    const url = await cluster().createDatabase();
    return { open: () => openStore({ kind: 'postgres', url }), cleanup: async () => undefined };
  });

  inferenceTableStoreContract('postgres', async () => {
    const url = await cluster().createDatabase();
    return { open: () => openInferenceTableStore({ kind: 'postgres', url }), cleanup: async () => undefined };
  });

  describe('Postgres store: several writers on one database', () => {
    const endpoint = (name: string, id: string): EndpointRecord => ({
      name, id, creator: 'admin', createdMs: 1, updatedMs: 1, description: '', tags: {},
      config: undefined, pendingConfig: undefined, configUpdate: 'NOT_UPDATING', updateMessage: '', aiGateway: {},
    });

    test('servers starting at once migrate once; writers racing get distinct versions and one endpoint', async () => {
      const url = await cluster().createDatabase();
      const stores: MetadataStore[] = await Promise.all([1, 2, 3, 4].map(() => openStore({ kind: 'postgres', url })));
      try {
        const db = new pg.Client({ connectionString: url });
        await db.connect();
        try {
          const { rows } = await db.query<{ version: number }>('SELECT version FROM ferry_schema_version');
          assert.deepEqual(rows, [{ version: PG_MIGRATIONS.length }], 'one schema version row');
        } finally {
          await db.end();
        }
        const [a, b] = stores as [MetadataStore, MetadataStore];
        await a.createRegisteredModel({ name: 'm', description: '', tags: {} }, 1);
        const created = await Promise.all(Array.from({ length: 20 }, (_, i) =>
          (i % 2 ? a : b).createModelVersion({ name: 'm', source: `/s/${i}`, runId: '', description: '', tags: {} }, 2)));
        assert.deepEqual(created.map((v) => v.version).sort((x, y) => x - y), Array.from({ length: 20 }, (_, i) => i + 1));

        const results = await Promise.allSettled(stores.map((s, i) => s.createEndpoint(endpoint('ep', `id-${i}`))));
        assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1, 'exactly one create wins');
        for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as { code?: string }).code, 'RESOURCE_ALREADY_EXISTS');
        assert.equal((await b.listEndpoints()).length, 1);
      } finally {
        await Promise.all(stores.map((s) => s.close()));
      }
    });

    test('a database at a newer schema version is refused', async () => {
      const url = await cluster().createDatabase();
      await (await openStore({ kind: 'postgres', url })).close();
      const db = new pg.Client({ connectionString: url });
      await db.connect();
      await db.query('UPDATE ferry_schema_version SET version = 99').finally(() => db.end());
      await assert.rejects(openStore({ kind: 'postgres', url }), /schema version 99, newer than this Ferry/);
    });
  });

  test('a ferry server on Postgres: register, create an endpoint, restart and find both', async () => {
    const dir = await tempDir();
    const dataDir = path.join(dir, 'data');
    const databaseUrl = await cluster().createDatabase();
    let server = await startTestServer(dataDir, { databaseUrl });
    try {
      const fx = await writeFixtures(path.join(dir, 'fixtures'));
      assert.equal(await registerVersion(server.url, 'linear', fx.linear), '1');
      const created = await request({
        url: server.url, method: 'POST', path: '/api/2.0/serving-endpoints',
        json: { name: 'lin', config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] } },
      });
      assert.equal(created.status, 200, created.text);
      assert.equal((await waitSettled(server.url, 'lin')).state.ready, 'READY');
      for (const file of ['ferry.db', 'inference.db']) assert.equal(fs.existsSync(path.join(dataDir, file)), false, `no ${file} beside Postgres`);

      await server.close();
      server = await startTestServer(dataDir, { databaseUrl });
      const version = await request({ url: server.url, path: '/api/2.0/mlflow/model-versions/get?name=linear&version=1' });
      assert.equal(version.json?.model_version?.status, 'READY', version.text);
      // The endpoint comes back from its stored config; its replica starts again after the restart.
      const url = server.url;
      await waitFor('endpoint lin to be ready again', async () => {
        const r = await request({ url, path: '/api/2.0/serving-endpoints/lin' });
        assert.equal(r.status, 200, r.text);
        return r.json.state.ready === 'READY' ? true : undefined;
      }, 30_000);
      const answer = await request({ url: server.url, method: 'POST', path: '/serving-endpoints/lin/invocations', json: { inputs: [[1, 2, 3, 4]] } });
      assert.equal(answer.status, 200, answer.text);
    } finally {
      await server.close();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
}
