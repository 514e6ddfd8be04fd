import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import {
  familyLinearFixture, familyTreeFixture, irisClassifierFixture, linearFixture, mlpSmallFixture, treeClassifierFixture, type OnnxFixture,
} from '../src/fixtures/index.js';
import { attr, encodeModel, ML_DOMAIN, node, tensorValueInfo } from '../src/fixtures/onnx-builder.js';
import { getFlavor } from '../src/flavors/index.js';
import { compileCompact, loadFamilyModel, ModelCache, SESSION_BYTES_ESTIMATE, type CompactModel, type FamilyModel } from '../src/multi/index.js';

const compact = (f: OnnxFixture): CompactModel => {
  const c = compileCompact(onnxProto.onnx.ModelProto.decode(f.build()), f.file);
  if (typeof c === 'string') throw new Error(`${f.file} has no compact evaluator: ${c}`);
  return c;
};

test('compact evaluators equal the fixtures’ pure-JS references (MatMul+Add, tree classifiers with ZipMap, family linear and tree models)', async () => {
  const fixtures = [linearFixture, treeClassifierFixture, irisClassifierFixture, ...[0, 2, 40].map(familyLinearFixture), ...[1, 3, 41].map(familyTreeFixture)];
  const kinds = new Set<string>();
  for (const f of fixtures) {
    const m = compact(f);
    kinds.add(m.kind);
    assert.deepEqual(m.signature, f.signature, f.file);
    const inputs = f.example(64);
    assert.deepEqual(await m.predict(inputs), f.reference(inputs), f.file);
  }
  assert.deepEqual([...kinds].sort(), ['LinearRegressor', 'MatMul+Add', 'TreeEnsembleClassifier', 'TreeEnsembleRegressor']);
});

test('compact evaluators equal onnxruntime on generated family models; sizes are a few KB', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-compact-'));
  try {
    for (const f of [familyLinearFixture(6), familyTreeFixture(7)]) {
      await writeFile(join(dir, f.file), f.build());
      const session = await (await getFlavor('onnx')).load(dir, { modelFile: f.file, workloadType: 'CPU', intraOpThreads: 1 });
      const m = compact(f);
      const inputs = f.example(32);
      assert.deepEqual(await m.predict(inputs), await session.predict(inputs), f.file);
      await session.close();
      assert.ok(m.sizeBytes > 3000 && m.sizeBytes < 4000, `${f.file}: ${m.sizeBytes} bytes`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the one linear kernel equals onnxruntime for each layout: LinearClassifier (3 classes), LinearRegressor (2 targets), MatMul+Add', async () => {
  const features = 4;
  const coefficients = Array.from({ length: 3 * features }, (_, i) => ((i * 7) % 11) / 8 - 0.5);
  const ml = (name: string, nodes: ReturnType<typeof node>[], outputs: Array<{ name: string; dtype: 'float32' | 'int64'; shape: number[] }>): Uint8Array => encodeModel({
    name, ml: true, nodes,
    inputs: [tensorValueInfo({ name: 'x', dtype: 'float32', shape: [-1, features] })],
    outputs: outputs.map(tensorValueInfo),
  });
  const models: Array<{ file: string; bytes: Uint8Array; kind: string }> = [
    {
      file: 'classifier.onnx', kind: 'LinearClassifier',
      bytes: ml('classifier', [node('LinearClassifier', ['x'], ['label', 'scores'], [
        attr.floats('coefficients', coefficients), attr.floats('intercepts', [0.25, -0.5, 0.125]), attr.ints('classlabels_ints', [3, 5, 7]), attr.string('post_transform', 'NONE'),
      ], ML_DOMAIN)], [{ name: 'label', dtype: 'int64', shape: [-1] }, { name: 'scores', dtype: 'float32', shape: [-1, 3] }]),
    },
    {
      file: 'regressor.onnx', kind: 'LinearRegressor',
      bytes: ml('regressor', [node('LinearRegressor', ['x'], ['y'], [
        attr.floats('coefficients', coefficients.slice(0, 2 * features)), attr.floats('intercepts', [1.5, -2]), attr.int('targets', 2),
      ], ML_DOMAIN)], [{ name: 'y', dtype: 'float32', shape: [-1, 2] }]),
    },
    { file: linearFixture.file, bytes: linearFixture.build(), kind: 'MatMul+Add' },
  ];
  const dir = await mkdtemp(join(tmpdir(), 'ferry-compact-'));
  try {
    for (const { file, bytes, kind } of models) {
      await writeFile(join(dir, file), bytes);
      const session = await (await getFlavor('onnx')).load(dir, { modelFile: file, workloadType: 'CPU', intraOpThreads: 1 });
      const m = compileCompact(onnxProto.onnx.ModelProto.decode(bytes), file);
      if (typeof m === 'string') assert.fail(`${file} has no compact evaluator: ${m}`);
      assert.equal(m.kind, kind);
      // On a 1/4 grid, with weights on a 1/8 grid: every sum is exact, whatever order onnxruntime adds in.
      const x = Float32Array.from({ length: 16 * features }, (_, i) => ((i * 13) % 17) / 4 - 2);
      const inputs = { [m.signature.inputs[0]!.name]: { dtype: 'float32' as const, shape: [16, features], data: x } };
      assert.deepEqual(await m.predict(inputs), await session.predict(inputs), file);
      await session.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a graph the compact path cannot run says why; the loader falls back to a session (charged) or refuses', async () => {
  const why = compileCompact(onnxProto.onnx.ModelProto.decode(mlpSmallFixture.build()), mlpSmallFixture.file);
  assert.equal(typeof why, 'string');
  assert.match(why as string, /nodes|operator/);
  const dir = await mkdtemp(join(tmpdir(), 'ferry-compact-'));
  try {
    await writeFile(join(dir, mlpSmallFixture.file), mlpSmallFixture.build());
    const opts = { modelFile: mlpSmallFixture.file, workloadType: 'CPU' as const, intraOpThreads: 1 };
    const loaded = await loadFamilyModel(await readFile(join(dir, opts.modelFile)), opts, true);
    assert.equal(loaded.model.path, 'session');
    assert.ok(loaded.sizeBytes > SESSION_BYTES_ESTIMATE);
    const inputs = mlpSmallFixture.example(2);
    assert.deepEqual(Object.keys(await loaded.model.model.predict(inputs)), mlpSmallFixture.signature.outputs.map((o) => o.name));
    await loaded.model.model.close();
    await assert.rejects(loadFamilyModel(await readFile(join(dir, opts.modelFile)), opts, false), /needs an onnxruntime session/);
    await writeFile(join(dir, 'l.onnx'), familyLinearFixture(8).build());
    const small = await loadFamilyModel(await readFile(join(dir, 'l.onnx')), { ...opts, modelFile: 'l.onnx' }, false);
    assert.equal(small.model.path, 'compact');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('churn: 600 distinct real models through a 32 KiB cache stay within the budget, and every evicted model is closed', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-churn-'));
  try {
    const n = 600;
    for (let i = 0; i < n; i++) await writeFile(join(dir, `m-${i}.onnx`), (i % 2 === 0 ? familyLinearFixture(i) : familyTreeFixture(i)).build());
    let closed = 0;
    const budgetBytes = 32 * 1024;
    const cache = new ModelCache<FamilyModel>({
      budgetBytes,
      load: async (key) => loadFamilyModel(await readFile(join(dir, `${key}.onnx`)), { modelFile: `${key}.onnx`, workloadType: 'CPU', intraOpThreads: 1 }, false),
      close: async (m) => {
        closed++;
        await m.model.close();
      },
    });
    const inputs = familyLinearFixture(0).example(1);
    let maxBytes = 0;
    // Two passes in parallel lanes of 8: every request a miss once the cache is full.
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < n; i += 8) {
        await Promise.all(Array.from({ length: 8 }, (_, j) => cache.use(`m-${i + j}`, (m) => m.model.predict(inputs))));
        maxBytes = Math.max(maxBytes, cache.stats().bytes);
      }
    }
    const s = cache.stats();
    assert.ok(maxBytes <= budgetBytes, `${maxBytes} bytes cached at most`);
    assert.equal(s.loads, 2 * n);
    assert.equal(closed, s.evictions);
    assert.equal(s.loads - s.evictions, s.models);
    assert.ok(s.models >= 8 && s.models <= Math.floor(budgetBytes / 3000), `${s.models} models cached`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
