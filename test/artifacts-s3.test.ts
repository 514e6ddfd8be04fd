import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { openArtifactStore } from '../src/artifacts/index.js';
import { FerryError } from '../src/errors.js';
import { artifactContract } from './contract/artifacts.js';
import { tempDir } from './support/index.js';
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
