/**
 * The artifact-store contract: every ArtifactStore implementation runs this suite
 * (local directory now; S3 later with the same file).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { buildPack, newPackKey, type ArtifactStore } from '../../src/artifacts/index.js';
import { FerryError } from '../../src/errors.js';
import { tempDir } from '../support/index.js';

export interface ArtifactHarness {
  store: ArtifactStore;
  cleanup(): Promise<void>;
  /**
   * Longest key segment (bytes) the backing storage holds, when under the 255 that keys allow: an
   * S3 test server that keeps objects as files in a directory cannot take a 255-byte name.
   */
  maxNameBytes?: number;
}

async function readAll(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function chunks(...parts: string[]): AsyncIterable<Uint8Array> {
  return Readable.from(parts.map((p) => Buffer.from(p)));
}

/** Keys that try to escape the store, raw and in encoded variants (as decoded once by the router). */
export const TRAVERSAL_KEYS = [
  '../escape', 'a/../../escape', '/etc/passwd', '..', '.', 'a/./b', 'a//b', '', 'a\\..\\b', 'C:/windows',
  'a/%2e%2e/b', '%2e%2e/escape', '..%2fescape', 'a\0b', '%252e%252e/escape',
];

export function artifactContract(name: string, make: () => Promise<ArtifactHarness>): void {
  describe(`ArtifactStore contract: ${name}`, () => {
    const withStore = (title: string, fn: (s: ArtifactStore, h: ArtifactHarness) => Promise<void>): void => {
      test(title, async () => {
        const h = await make();
        try {
          await fn(h.store, h);
        } finally {
          await h.cleanup();
        }
      });
    };

    withStore('put streams a file, returns size and sha256, get reads it back', async (s) => {
      const r = await s.putFile('a/b/model.onnx', chunks('hello ', 'world'), 1000);
      assert.deepEqual(r, { sizeBytes: 11, sha256: createHash('sha256').update('hello world').digest('hex') });
      const got = await s.getFile('a/b/model.onnx');
      assert.equal(got.sizeBytes, 11);
      assert.equal((await readAll(got.stream)).toString(), 'hello world');
      assert.equal(await s.exists('a/b/model.onnx'), true);
      assert.deepEqual(await s.list(''), [{ path: 'a', isDir: true, sizeBytes: 0 }], 'a directory holding only directories');
      assert.deepEqual(await s.list('a'), [{ path: 'b', isDir: true, sizeBytes: 0 }]);
      assert.deepEqual(await s.list('a/b'), [{ path: 'model.onnx', isDir: false, sizeBytes: 11 }]);
      await s.putFile('a/b/model.onnx', chunks('v2'), 1000);
      assert.equal((await readAll((await s.getFile('a/b/model.onnx')).stream)).toString(), 'v2', 'put replaces');
    });

    withStore('a pack member is a one-file tree read from its byte range: get, list, exists, digest, localDir, readVerifiedFile, copy; it goes with its pack', async (s) => {
      const pack = newPackKey();
      const { bytes, members } = buildPack(pack, [{ file: 'model.onnx', content: Buffer.from('first') }, { file: 'model.ubj', content: Buffer.from('second!') }, { file: 'm.onnx', content: Buffer.alloc(0) }]);
      await s.putFile(pack, Readable.from([bytes]), bytes.length);
      const [a, b, empty] = members.map((m) => m.key) as [string, string, string];
      assert.equal(b, `${pack}/5-7-model.ubj`);
      assert.equal((await readAll((await s.getFile(`${b}/model.ubj`)).stream)).toString(), 'second!');
      assert.equal((await s.getFile(`${a}/model.onnx`)).sizeBytes, 5);
      assert.equal((await readAll((await s.getFile(`${empty}/m.onnx`)).stream)).length, 0);
      await assert.rejects(s.getFile(b), (e: unknown) => e instanceof FerryError && e.code === 'RESOURCE_DOES_NOT_EXIST', 'the tree is not a file');
      await assert.rejects(s.getFile(`${b}/other`), (e: unknown) => e instanceof FerryError && e.code === 'RESOURCE_DOES_NOT_EXIST');
      assert.deepEqual(await s.list(b), [{ path: 'model.ubj', isDir: false, sizeBytes: 7 }]);
      assert.equal(await s.exists(b), true);
      assert.equal(await s.exists(`${b}/model.ubj`), true);
      assert.equal(await s.exists(`${b}/other`), false);
      // A range past the pack's end is no member.
      assert.equal(await s.exists(`${pack}/5-8-model.ubj`), false);
      await assert.rejects(s.getFile(`${pack}/5-8-model.ubj/model.ubj`), (e: unknown) => e instanceof FerryError && e.code === 'RESOURCE_DOES_NOT_EXIST');
      const digest = await s.digest(b);
      assert.deepEqual(digest, { sha256: (members[1] as { sha256: string }).sha256, sizeBytes: 7, files: 1 });
      const dir = await s.localDir(b, digest.sha256);
      assert.deepEqual(await fsp.readdir(dir), ['model.ubj']);
      assert.equal(await fsp.readFile(path.join(dir, 'model.ubj'), 'utf8'), 'second!');
      assert.equal(await s.localDir(b, digest.sha256), dir, 'made once');
      const tooLarge = (n: number): Error => new Error(`too large: ${n}`);
      assert.equal((await s.readVerifiedFile(b, digest.sha256, 'model.ubj', 100, tooLarge)).toString(), 'second!');
      await assert.rejects(s.readVerifiedFile(b, digest.sha256, 'model.ubj', 6, tooLarge), /too large: 7/);
      await assert.rejects(s.readVerifiedFile(b, '0'.repeat(64), 'model.ubj', 100, tooLarge), (e: unknown) => e instanceof FerryError && e.code === 'MODEL_ERROR' && /does not match its recorded sha256/.test(e.message));
      await s.copy(b, 'models/x/1');
      assert.equal((await readAll((await s.getFile('models/x/1/model.ubj')).stream)).toString(), 'second!');
      assert.equal((await s.digest('models/x/1')).sha256, digest.sha256, 'a copy digests as the member');
      await s.delete(b);
      assert.equal(await s.exists(b), true, 'a member is not deleted alone');
      await s.delete(pack);
      assert.equal(await s.exists(a), false);
      assert.deepEqual(await s.list(a), []);
      await assert.rejects(s.readVerifiedFile(b, digest.sha256, 'model.ubj', 100, tooLarge), (e: unknown) => e instanceof FerryError && (e.code === 'RESOURCE_DOES_NOT_EXIST' || e.code === 'MODEL_ERROR'));
    });

    withStore('an upload over the limit is refused and leaves nothing behind', async (s) => {
      await assert.rejects(s.putFile('big', chunks('x'.repeat(600), 'y'.repeat(600)), 1000),
        (e: unknown) => e instanceof FerryError && e.code === 'PAYLOAD_TOO_LARGE' && e.status === 413);
      assert.equal(await s.exists('big'), false);
      assert.deepEqual(await s.list(''), []);
    });

    withStore('keys that try to escape the store are refused with a 400', async (s) => {
      for (const key of TRAVERSAL_KEYS) {
        for (const op of [
          () => s.putFile(key, chunks('x'), 10),
          () => s.getFile(key),
          () => s.delete(key),
          ...(key === '' ? [] : [() => s.list(key)]), // '' lists the root
        ]) {
          await assert.rejects(op(), (e: unknown) => e instanceof FerryError && e.status === 400, `key ${JSON.stringify(key)}`);
        }
      }
    });

    withStore('missing files are 404; delete is idempotent and recursive', async (s) => {
      await assert.rejects(s.getFile('nope'), (e: unknown) => e instanceof FerryError && e.code === 'RESOURCE_DOES_NOT_EXIST');
      await s.putFile('d/x', chunks('1'), 10);
      await s.putFile('d/e/y', chunks('2'), 10);
      await assert.rejects(s.getFile('d'), (e: unknown) => e instanceof FerryError && e.code === 'RESOURCE_DOES_NOT_EXIST', 'a directory is not a file');
      await s.delete('d');
      await s.delete('d');
      assert.equal(await s.exists('d/x'), false);
      assert.deepEqual(await s.list('d'), []);
    });

    // Found by the route fuzzer (test/fuzz.test.ts): each of these was a 500.
    withStore('a path through a file is a 409 to write, absent to delete; names over 255 bytes are a 400', async (s, h) => {
      await s.putFile('f', chunks('1'), 10);
      await assert.rejects(s.putFile('f/x', chunks('2'), 10), (e: unknown) => e instanceof FerryError && e.code === 'RESOURCE_CONFLICT' && /'f\/x'/.test(e.message));
      await assert.rejects(s.putFile('f/x/y', chunks('2'), 10), (e: unknown) => e instanceof FerryError && e.code === 'RESOURCE_CONFLICT');
      await s.delete('f/x');
      assert.equal(await s.exists('f'), true);
      await assert.rejects(s.getFile('f/x'), (e: unknown) => e instanceof FerryError && e.code === 'RESOURCE_DOES_NOT_EXIST');
      for (const key of ['a'.repeat(256), `d/${'é'.repeat(128)}`, 'é/'.repeat(400) + 'x']) {
        await assert.rejects(s.putFile(key, chunks('1'), 10), (e: unknown) => e instanceof FerryError && e.code === 'INVALID_PARAMETER_VALUE', key.slice(0, 20));
      }
      await s.putFile('a'.repeat(h.maxNameBytes ?? 255), chunks('1'), 10);
    });

    withStore('an upload the client cuts off is a 400 and leaves nothing behind', async (s) => {
      const cut = new Readable({ read() { this.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' })); } });
      await assert.rejects(s.putFile('cut', cut, 10), (e: unknown) => e instanceof FerryError && e.code === 'MALFORMED_REQUEST');
      assert.equal(await s.exists('cut'), false);
    });

    withStore('copy and digest of a tree', async (s) => {
      await s.putFile('src/model.onnx', chunks('abc'), 10);
      await s.putFile('src/sub/extra.json', chunks('{}'), 10);
      await s.copy('src', 'dst');
      const a = await s.digest('src');
      const b = await s.digest('dst');
      assert.deepEqual(a, b);
      assert.equal(a.files, 2);
      assert.equal(a.sizeBytes, 5);
      await s.putFile('dst/sub/extra.json', chunks('[]'), 10);
      assert.notEqual((await s.digest('dst')).sha256, a.sha256, 'content change changes the digest');
      await assert.rejects(s.copy('missing', 'x'), (e: unknown) => e instanceof FerryError && e.code === 'RESOURCE_DOES_NOT_EXIST');
    });

    withStore('importLocal copies a file or directory from this machine, refusing links and oversize trees', async (s) => {
      const src = await tempDir();
      try {
        await fsp.mkdir(path.join(src, 'm'));
        await fsp.writeFile(path.join(src, 'm', 'model.onnx'), 'onnx-bytes');
        await fsp.writeFile(path.join(src, 'single.onnx'), 'single');
        await s.importLocal(path.join(src, 'm'), 'models/a/1', 1000);
        await s.importLocal(path.join(src, 'single.onnx'), 'models/b/1/model.onnx', 1000);
        assert.equal((await readAll((await s.getFile('models/a/1/model.onnx')).stream)).toString(), 'onnx-bytes');
        assert.equal((await readAll((await s.getFile('models/b/1/model.onnx')).stream)).toString(), 'single');
        await fsp.rm(path.join(src, 'm'), { recursive: true });
        assert.equal(await s.exists('models/a/1/model.onnx'), true, 'the store keeps its own copy');
        await assert.rejects(s.importLocal(path.join(src, 'single.onnx'), 'x', 3), (e: unknown) => e instanceof FerryError && e.code === 'PAYLOAD_TOO_LARGE');
        await fsp.mkdir(path.join(src, 'linked'));
        await fsp.symlink('/etc/passwd', path.join(src, 'linked', 'model.onnx'));
        await assert.rejects(s.importLocal(path.join(src, 'linked'), 'y', 1000), (e: unknown) => e instanceof FerryError && /symbolic link/.test(e.message));
        await assert.rejects(s.importLocal(path.join(src, 'absent'), 'z', 1000), (e: unknown) => e instanceof FerryError && e.status === 400);
        const dir = await s.localDir('models/a/1');
        assert.equal(await fsp.readFile(path.join(dir, 'model.onnx'), 'utf8'), 'onnx-bytes');
      } finally {
        await fsp.rm(src, { recursive: true, force: true });
      }
    });
  });
}
