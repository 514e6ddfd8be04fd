import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { openArtifactStore } from '../src/artifacts/index.js';
import { compileServerConfig } from '../src/config/index.js';
import { FerryError } from '../src/errors.js';
import { writeFixtures } from '../src/fixtures/index.js';
import type { FerryServer } from '../src/server/index.js';
import { artifactContract } from './contract/artifacts.js';
import { ferryChildren, registerVersion, request, startTestServer, tempDir, waitFor, waitSettled } from './support/index.js';
import { startTestS3, type TestS3 } from './support/s3.js';

let s3: TestS3 | undefined;
let stores = 0;
before(async () => {
  s3 = await startTestS3(['ferry']);
});
after(async () => {
  await s3?.close();
});

/** A store under its own prefix of the shared bucket, with its own cache directory. */
async function openStore(): Promise<{ store: Awaited<ReturnType<typeof openArtifactStore>>; cacheDir: string; cleanup: () => Promise<void> }> {
  if (!s3) throw new Error('s3rver did not start');
  const cacheDir = await tempDir();
  const store = await openArtifactStore({ kind: 's3', ...s3.settings('ferry', `t${++stores}/`), cacheDir });
  return { store, cacheDir, cleanup: () => fsp.rm(cacheDir, { recursive: true, force: true }) };
}

// s3rver keeps each object in a file named after its key plus '._S3rver_metadata.json' (22
// bytes), so its longest name is 233 bytes where S3's keys allow 1024 in all.
artifactContract('s3', async () => ({ ...(await openStore()), maxNameBytes: 233 }));

describe('S3 artifact store', () => {
  test('a file over one part goes up as a multipart upload and reads back whole', async () => {
    const { store, cleanup } = await openStore();
    try {
      const big = Buffer.alloc(19 * 1024 * 1024);
      for (let i = 0; i < big.length; i += 4096) big[i] = i % 251;
      const r = await store.putFile('m/big.bin', Readable.from([big.subarray(0, 5e6), big.subarray(5e6, 12e6), big.subarray(12e6)]), big.length);
      assert.equal(r.sizeBytes, big.length);
      const got = await store.getFile('m/big.bin');
      assert.equal(got.sizeBytes, big.length);
      const chunks: Buffer[] = [];
      for await (const c of got.stream) chunks.push(c as Buffer);
      assert.ok(Buffer.concat(chunks).equals(big));
      await assert.rejects(store.putFile('m/too-big.bin', Readable.from([big, big]), big.length),
        (e: unknown) => e instanceof FerryError && e.code === 'PAYLOAD_TOO_LARGE');
      assert.deepEqual((await store.list('m')).map((e) => e.path), ['big.bin'], 'an aborted multipart upload leaves no object');
    } finally {
      await cleanup();
    }
  });

  test('digests match the local store, and localDir refuses a tree changed behind its back', async () => {
    const { store, cacheDir, cleanup } = await openStore();
    const localRoot = await tempDir();
    try {
      const local = await openArtifactStore({ kind: 'local', root: localRoot });
      for (const s of [store, local]) {
        await s.putFile('v/model.onnx', Readable.from([Buffer.from('abc')]), 10);
        await s.putFile('v/sub/b.json', Readable.from([Buffer.from('{}')]), 10);
        await s.putFile('v/sub-a.txt', Readable.from([Buffer.from('x')]), 10); // '-' sorts before '/'
      }
      const d = await store.digest('v');
      assert.deepEqual(d, await local.digest('v'));
      const dir = await store.localDir('v', d.sha256);
      assert.equal(await fsp.readFile(path.join(dir, 'sub', 'b.json'), 'utf8'), '{}');

      // A corrupted cached copy is replaced by a fresh download.
      await fsp.writeFile(path.join(dir, 'model.onnx'), 'tampered');
      const reopened = await openArtifactStore({ kind: 's3', ...s3!.settings('ferry', `t${stores}/`), cacheDir });
      const again = await reopened.localDir('v', d.sha256);
      assert.equal(await fsp.readFile(path.join(again, 'model.onnx'), 'utf8'), 'abc');

      // The bucket's copy changed outside Ferry: not served under the old digest.
      await store.putFile('v/model.onnx', Readable.from([Buffer.from('abd')]), 10);
      await fsp.rm(path.join(cacheDir, (await fsp.readdir(cacheDir)).find((n) => n !== '.tmp') ?? 'none'), { recursive: true });
      await assert.rejects(store.localDir('v', d.sha256), (e: unknown) => e instanceof FerryError && e.code === 'MODEL_ERROR' && e.message.includes(d.sha256));

      await store.localDir('v/sub');
      assert.equal((await fsp.readdir(cacheDir)).length, 3, '.tmp, v and v/sub');
      await store.delete('v');
      assert.deepEqual(await fsp.readdir(cacheDir), ['.tmp'], 'delete drops the cached copies under the key');
    } finally {
      await cleanup();
      await fsp.rm(localRoot, { recursive: true, force: true });
    }
  });

  test('a bucket that cannot be reached fails the open with the bucket named', async () => {
    const cacheDir = await tempDir();
    try {
      await assert.rejects(openArtifactStore({ kind: 's3', ...s3!.settings('no-such-bucket'), cacheDir }),
        (e: unknown) => e instanceof FerryError && e.status === 400 && /'no-such-bucket'/.test(e.message));
    } finally {
      await fsp.rm(cacheDir, { recursive: true, force: true });
    }
  });
});

describe('a ferry server on the S3 artifact store', () => {
  test('registers from an upload and from a path, serves, and after a restart rebuilds its verified cache from S3', async () => {
    const dir = await tempDir();
    const dataDir = path.join(dir, 'data');
    const cacheDir = path.join(dataDir, 'artifact-cache');
    const { endpoint } = s3!;
    const config = { artifactStore: { kind: 's3', bucket: 'ferry', prefix: 'server', endpoint, forcePathStyle: true, accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } };
    let server: FerryServer | undefined;
    try {
      const fx = await writeFixtures(path.join(dir, 'fixtures'));
      server = await startTestServer(dataDir, config);
      const url = server.url;
      const put = await request({ url, method: 'PUT', path: '/api/2.0/mlflow-artifacts/artifacts/up1/model.onnx', body: await fsp.readFile(fx.linear) });
      assert.equal(put.status, 200, put.text);
      await registerVersion(url, 'uploaded', 'mlflow-artifacts:/up1');
      await registerVersion(url, 'from-path', fx.linear);

      // The versions live in the bucket (under the prefix), not in the data directory, with the
      // digest the local store would compute.
      const reader = await openArtifactStore({ kind: 's3', ...s3!.settings('ferry', 'server/'), cacheDir: path.join(dir, 'reader-cache') });
      assert.deepEqual((await reader.list('models')).map((e) => e.path), ['from-path', 'uploaded']);
      assert.equal(await fsp.stat(path.join(dataDir, 'artifacts')).then(() => true, () => false), false);
      const local = await openArtifactStore({ kind: 'local', root: path.join(dir, 'local') });
      for (const [name, file] of [['uploaded', 'model.onnx'], ['from-path', path.basename(fx.linear)]] as const) {
        await local.importLocal(fx.linear, `${name}/${file}`, 1e9);
        const v = await request({ url, path: `/api/2.0/mlflow/model-versions/get?name=${name}&version=1` });
        assert.equal(v.json.model_version.artifact_sha256, (await local.digest(name)).sha256, name);
      }

      const query = async (name: string): Promise<void> => {
        const r = await request({ url: server!.url, method: 'POST', path: `/serving-endpoints/${name}/invocations`, json: { inputs: [[1, 2, 3, 4]] } });
        assert.equal(r.status, 200, r.text);
        assert.deepEqual(r.json, { predictions: [[5.625]] });
      };
      for (const name of ['uploaded', 'from-path']) {
        const created = await request({ url, method: 'POST', path: '/api/2.0/serving-endpoints', json: { name, config: { served_entities: [{ entity_name: name, entity_version: '1' }] } } });
        assert.equal(created.status, 200, created.text);
        assert.equal((await waitSettled(url, name)).state.ready, 'READY');
        await query(name);
      }

      // While stopped: one version's cached copy disappears, the other's is corrupted.
      await server.close();
      server = undefined;
      const entries = new Map<string, string>();
      for (const e of await fsp.readdir(cacheDir)) {
        const record = await fsp.readFile(path.join(cacheDir, e, 'record.json'), 'utf8').catch(() => undefined);
        if (record !== undefined) entries.set((JSON.parse(record) as { key: string }).key, path.join(cacheDir, e));
      }
      assert.deepEqual([...entries.keys()].sort(), ['models/from-path/1', 'models/uploaded/1']);
      await fsp.rm(entries.get('models/from-path/1')!, { recursive: true });
      await fsp.writeFile(path.join(entries.get('models/uploaded/1')!, 'tree', 'model.onnx'), 'not a model');

      server = await startTestServer(dataDir, config);
      for (const name of ['uploaded', 'from-path']) {
        const url = server.url;
        await waitFor(`${name} ready after the restart`, async () => ((await request({ url, path: `/api/2.0/serving-endpoints/${name}` })).json.state?.ready === 'READY' ? true : undefined), 30_000);
        await query(name);
      }
      assert.deepEqual(await fsp.readFile(path.join(entries.get('models/uploaded/1')!, 'tree', 'model.onnx')), await fsp.readFile(fx.linear), 'the corrupted copy was downloaded again');
      assert.equal(await fsp.stat(entries.get('models/from-path/1')!).then(() => true, () => false), true, 'the missing copy was downloaded again');
    } finally {
      await server?.close();
      assert.deepEqual(await ferryChildren(dataDir), [], 'no replica outlives the server');
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('artifactStore server setting', () => {
  test('defaults to the local store; s3 settings are compiled, and bad ones name the key', () => {
    assert.deepEqual(compileServerConfig({}).artifactStore, { kind: 'local' });
    assert.deepEqual(compileServerConfig({ artifactStore: { kind: 's3', bucket: 'm', prefix: '/ferry/prod/' } }).artifactStore, {
      kind: 's3', bucket: 'm', prefix: 'ferry/prod/', endpoint: undefined, region: 'us-east-1', forcePathStyle: false, credentials: undefined,
    });
    const bad: Array<[unknown, RegExp]> = [
      [{ kind: 's3' }, /'artifactStore\.bucket'/],
      [{ kind: 'gcs', bucket: 'm' }, /'artifactStore\.kind'/],
      [{ kind: 's3', bucket: 'm', endpoint: 'localhost:9000' }, /'artifactStore\.endpoint'.*http/],
      [{ kind: 's3', bucket: 'm', prefix: 'a/../b' }, /'artifactStore\.prefix'/],
      [{ kind: 's3', bucket: 'm', accessKeyId: 'k' }, /'artifactStore\.secretAccessKey'/],
      [{ kind: 's3', bucket: 'm', bukket: 'x' }, /Unknown key 'bukket' in 'artifactStore'/],
    ];
    for (const [artifactStore, message] of bad) {
      assert.throws(() => compileServerConfig({ artifactStore }), (e: unknown) => e instanceof FerryError && e.status === 400 && message.test(e.message), JSON.stringify(artifactStore));
    }
  });
});
