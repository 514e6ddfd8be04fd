/**
 * How a family pod learns where a member is and checks what it fetched: the member-artifact
 * metadata value (src/multi/member.ts), the in-memory tree digest against the on-disk one, and the
 * artifact reader's refusals (changed tree, missing file, tree over the budget).
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { oneFileTreeDigest, openArtifactReader, openArtifactStore } from '../src/artifacts/index.js';
import { digestFiles } from '../src/artifacts/tree.js';
import { FerryError } from '../src/errors.js';
import { xgboostMember, xgboostMemberDoc } from '../bench/xgboost-members.js';
import { compileXgboost, decodeMemberArtifact, encodeMemberArtifact, ModelCache } from '../src/multi/index.js';
import { tempDir } from './support/index.js';

const SHA = 'ab'.repeat(32);

test('a member artifact round-trips through its ASCII metadata value; malformed values are 400s naming the value', () => {
  const a = { key: 'models/ads-17/bulk-1b2c', sha256: SHA, modelFile: 'sub dir/modèle.ubj' };
  const value = encodeMemberArtifact(a);
  assert.match(value, /^[\x21-\x7e ]+$/, 'printable ASCII');
  assert.equal(value, `${SHA} sub%20dir%2Fmod%C3%A8le.ubj models%2Fads-17%2Fbulk-1b2c`);
  assert.deepEqual(decodeMemberArtifact(value), a);
  const bad: Array<[string, RegExp]> = [
    ['', /expected "<sha256> <modelFile> <key>"/],
    [`${SHA} model.onnx`, /expected/],
    [`${SHA.toUpperCase()} model.onnx models%2Fa`, /sha256 is not 64 lower-case hex digits/],
    [`${SHA} model.onnx models%2F..%2Fetc`, /Invalid artifact key.*"\." and "\.\." segments/],
    [`${SHA} %2Fetc%2Fpasswd models%2Fa`, /Invalid artifact model file.*relative/],
    [`${SHA} model.onnx %E0%A4%A`, /malformed percent-encoding/],
  ];
  for (const [v, message] of bad) {
    assert.throws(() => decodeMemberArtifact(v), (err: unknown) => err instanceof FerryError && err.code === 'INVALID_PARAMETER_VALUE' && message.test(err.message), v);
  }
});

test('the in-memory tree digest equals the stored one; the reader refuses a changed tree, a missing file and a tree over its budget', async () => {
  const root = await tempDir();
  try {
    const store = await openArtifactStore({ kind: 'local', root });
    const files = [{ rel: 'model.onnx', bytes: Buffer.from('abc') }, { rel: 'meta/MLmodel', bytes: Buffer.from('flavors: {}\n') }];
    for (const f of files) {
      await fsp.mkdir(path.join(root, 'models/m/1', path.dirname(f.rel)), { recursive: true });
      await fsp.writeFile(path.join(root, 'models/m/1', f.rel), f.bytes);
    }
    const { sha256 } = await store.digest('models/m/1');
    assert.equal(digestFiles(files), sha256);
    assert.equal(digestFiles([...files].reverse()), sha256, 'order-independent');

    const reader = await openArtifactReader({ kind: 'local', root }, root);
    const tooLarge = (total: number): FerryError => new FerryError('INVALID_PARAMETER_VALUE', `too large: ${total}`);
    assert.deepEqual(await reader.readVerifiedFile('models/m/1', sha256, 'model.onnx', 1024, tooLarge), Buffer.from('abc'));
    await assert.rejects(reader.readVerifiedFile('models/m/1', sha256, 'model.onnx', 10, tooLarge), /too large: 15/);
    await assert.rejects(reader.readVerifiedFile('models/m/1', sha256, 'other.onnx', 1024, tooLarge), /has no file 'other\.onnx'/);
    await fsp.writeFile(path.join(root, 'models/m/1/model.onnx'), 'abd');
    await assert.rejects(reader.readVerifiedFile('models/m/1', sha256, 'model.onnx', 1024, tooLarge), (err: unknown) =>
      err instanceof FerryError && err.code === 'MODEL_ERROR' && new RegExp(`does not match its recorded sha256: expected ${sha256}, found [0-9a-f]{64}`).test(err.message));
    await assert.rejects(reader.readVerifiedFile('models/none/1', sha256, 'model.onnx', 1024, tooLarge), (err: unknown) => err instanceof FerryError && err.code === 'MODEL_ERROR' && /models\/none\/1/.test(err.message));
  } finally {
    await fsp.rm(root, { recursive: true, force: true });
  }
});

test('the cache gives a miss\'s hint to the loader; concurrent misses share the first one\'s load', async () => {
  const hints: Array<string | undefined> = [];
  const cache = new ModelCache<string, string>({
    budgetBytes: 1000,
    load: async (key, hint) => {
      hints.push(hint);
      await new Promise((r) => setTimeout(r, 5));
      return { model: `${key}@${hint ?? '-'}`, sizeBytes: 10 };
    },
    close: async () => undefined,
  });
  const got = await Promise.all([cache.use('a', async (m) => m, 'h1'), cache.use('a', async (m) => m, 'h2'), cache.use('b', async (m) => m)]);
  assert.deepEqual(got, ['a@h1', 'a@h1', 'b@-']);
  assert.deepEqual(hints, ['h1', undefined]);
  assert.equal(await cache.use('a', async (m) => m, 'h3'), 'a@h1', 'a hit ignores the hint');
});

test('a one-file tree\'s digest follows from the file\'s sha256 (bulk registration\'s shortcut)', async () => {
  const root = await tempDir();
  try {
    const store = await openArtifactStore({ kind: 'local', root });
    const { sha256: fileSha } = await store.putFile('models/b/bulk-1/model.ubj', (async function* () { yield Buffer.from('abc'); })(), 1024);
    assert.equal(oneFileTreeDigest('model.ubj', fileSha), (await store.digest('models/b/bulk-1')).sha256);
  } finally {
    await fsp.rm(root, { recursive: true, force: true });
  }
});

test('the bench\'s generated XGBoost members: the UBJSON file and the same document as JSON compile to the same model', async () => {
  const row = Float32Array.from([0.5, -1.25, 2, 0.75, -0.3, 0.2, 0.9, -1]);
  const answers = new Set<number>();
  for (const i of [0, 1, 7, 1000]) {
    const asJson = Buffer.from(JSON.stringify(xgboostMemberDoc(i), (_k, v: unknown) => (ArrayBuffer.isView(v) ? Array.from(v as Float32Array) : v)));
    const [ubj, json] = [compileXgboost(xgboostMember(i), 'model.ubj'), compileXgboost(asJson, 'model.json')];
    const input = { input: { dtype: 'float32' as const, shape: [2, 4], data: row } };
    const a = (await ubj.predict(input)).predictions as { data: Float32Array };
    assert.deepEqual(a, (await json.predict(input)).predictions, `member ${i}`);
    answers.add(a.data[0] as number);
  }
  assert.equal(answers.size, 4, 'each member is a different model');
});
