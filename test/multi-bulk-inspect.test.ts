/**
 * Bulk registration's batched inspection and its pack, with real inspector processes, a real
 * SQLite store and a real local artifact store: a hostile artifact inside a batch fails alone
 * (the batch is retried one artifact per frame after the process dies); a call writes one file
 * (its pack) holding the models that passed, and a failed transaction leaves no row and no pack.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { openArtifactStore, type ArtifactStore } from '../src/artifacts/index.js';
import { familyFixture } from '../src/fixtures/index.js';
import { Inspector, Registry } from '../src/registry/index.js';
import { openStore, type MetadataStore } from '../src/store/index.js';
import { ggufStringArray } from './support/hostile.js';
import { tempDir } from './support/index.js';

let dir: string;

before(async () => {
  dir = await tempDir('ferry-bulk-inspect-');
});

after(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

test('a memory bomb inside a batch of 70 fails alone: the others of its frame are retried one per frame and pass', { timeout: 120_000 }, async () => {
  const root = path.join(dir, 'batch');
  const dirs: string[] = [];
  for (let i = 0; i < 70; i++) {
    const d = path.join(root, `m-${i}`);
    await fsp.mkdir(d, { recursive: true });
    // The bomb (160 MiB of GGUF strings, over a 128 MiB limit) sits in the first frame of 64.
    await fsp.writeFile(i === 5 ? path.join(d, 'model.gguf') : path.join(d, 'model.onnx'), i === 5 ? ggufStringArray(40, 4 * 2 ** 20) : familyFixture(i).build());
    dirs.push(d);
  }
  const inspector = new Inspector({ memoryLimitBytes: 128 * 2 ** 20, timeoutMs: 60_000, readRoots: [root], processes: 1 });
  try {
    const results = await inspector.inspectMany(dirs);
    assert.equal(results.length, 70);
    results.forEach((r, i) => {
      if (i === 5) {
        assert.ok(!r.ok, 'the bomb fails');
        assert.match(r.error.message, /exceeded its memory limit \(128 MiB\)/);
      } else {
        assert.ok(r.ok, `artifact ${i}: ${r.ok ? '' : r.error.message}`);
        assert.equal(r.inspection.flavor, 'onnx');
      }
    });
    // The replacement process serves the next call.
    assert.equal((await inspector.inspect(dirs[0] as string)).flavor, 'onnx');
  } finally {
    await inspector.close();
  }
});

/** A registry over a fresh SQLite store (`wrap`ped, to make it fail) and local artifact store under `name`. */
async function registry(name: string, wrap = (s: MetadataStore): MetadataStore => s): Promise<{ reg: Registry; store: MetadataStore; artifacts: ArtifactStore; root: string; close: () => Promise<void> }> {
  const root = path.join(dir, name, 'artifacts');
  const store = await openStore({ kind: 'sqlite', path: path.join(dir, name, 'ferry.db') });
  const artifacts = await openArtifactStore({ kind: 'local', root });
  const inspector = new Inspector({ memoryLimitBytes: 256 * 2 ** 20, timeoutMs: 30_000, readRoots: [root] });
  const reg = new Registry(wrap(store), artifacts, { maxUploadBytes: 2 ** 20, now: () => Date.now(), inspector });
  return { reg, store, artifacts, root, close: async () => { await inspector.close(); await store.close(); } };
}

const models = (prefix: string, n: number) => Array.from({ length: n }, (_v, i) => ({ name: `${prefix}-${i}`, file: 'model.onnx', content: familyFixture(i).build() }));

/** Every file in the store but its temporary directory. */
async function storeFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  const visit = async (d: string): Promise<void> => {
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      if (d === root && e.name === '.tmp') continue;
      if (e.isDirectory()) await visit(path.join(d, e.name));
      else out.push(path.relative(root, path.join(d, e.name)));
    }
  };
  await visit(root);
  return out;
}

test('a bulk call writes one file, its pack: the models that pass inspection, back to back; one that fails is reported and not written', { timeout: 60_000 }, async () => {
  const r = await registry('one-pack');
  try {
    const all = [
      ...models('d', 40), { name: 'd-bad', file: 'model.onnx', content: Buffer.from('not an onnx file') }, { name: 'd-gguf', file: 'model.gguf', content: Buffer.from('GGUF') },
      // A member's key segment is `<offset>-<length>-<file>`: a name that leaves it no room is refused, not stored unreadable.
      { name: 'd-long', file: `${'a'.repeat(219)}.onnx`, content: familyFixture(0).build() },
    ];
    const results = await r.reg.createVersionsBulk(all, 'admin');
    assert.deepEqual(results.slice(0, 40).map((x) => x.status), Array(40).fill('READY'));
    assert.deepEqual(results.slice(40).map((x) => x.status), ['FAILED_REGISTRATION', 'FAILED_REGISTRATION', 'FAILED_REGISTRATION']);
    assert.match(results[42]?.status === 'FAILED_REGISTRATION' ? results[42].message : '', /models\[42\]\.file.*at most 223 bytes/);
    assert.match(results[41]?.status === 'FAILED_REGISTRATION' ? results[41].message : '', /Bulk registration takes one ONNX \(\.onnx\) or XGBoost .* 'model\.gguf' is neither/);
    const files = await storeFiles(r.root);
    assert.equal(files.length, 1, files.join(', '));
    assert.match(files[0] ?? '', /^packs\/[0-9a-f-]{36}$/);
    const pack = await fsp.readFile(path.join(r.root, files[0] ?? ''));
    assert.deepEqual(pack, Buffer.concat(models('d', 40).map((m) => m.content)));
    for (let i = 0; i < 40; i += 13) {
      const v = await r.reg.getVersion(`d-${i}`, 1);
      assert.equal(v.artifact?.flavor, 'onnx');
      assert.equal((await r.artifacts.digest(v.artifact?.path ?? '')).sha256, v.artifact?.sha256);
    }
    // All of a call failing writes nothing.
    const none = await r.reg.createVersionsBulk([{ name: 'e-0', file: 'model.onnx', content: Buffer.from('junk') }], 'admin');
    assert.equal(none[0]?.status, 'FAILED_REGISTRATION');
    assert.equal((await storeFiles(r.root)).length, 1);
  } finally {
    await r.close();
  }
});

test('a failed store transaction fails the call: no version row, and its pack is deleted', { timeout: 60_000 }, async () => {
  const failing = (s: MetadataStore): MetadataStore => Object.assign(Object.create(s) as MetadataStore, { createReadyModelVersions: () => Promise.reject(new Error('disk full')) });
  const r = await registry('tx-fails', failing);
  try {
    await assert.rejects(r.reg.createVersionsBulk(models('e', 10), 'admin'), /disk full/);
    for (let i = 0; i < 10; i++) assert.equal(await r.store.getModelVersion(`e-${i}`, 1), undefined);
    assert.deepEqual(await storeFiles(r.root), [], 'no pack is left');
  } finally {
    await r.close();
  }
});
