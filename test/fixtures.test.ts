import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import {
  FIXTURES, IRIS_EXAMPLE_ROWS, IRIS_TREES, LINEAR_BIAS, LINEAR_WEIGHTS, MLFLOW_LINEAR, irisClassifierFixture,
  linearFixture, mlpFixture, mlpSmallFixture, treeClassifierFixture, twoInputFixture, writeFixtures, writeMlp,
} from '../src/fixtures/index.js';
import type { TreeNode } from '../src/fixtures/index.js';
import type { MapSequence, Tensor } from '../src/tensor/index.js';

const { onnx } = onnxProto;

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-fixtures-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const f32 = (rows: number[][]): Tensor => ({ dtype: 'float32', shape: [rows.length, rows[0]?.length ?? 0], data: Float32Array.from(rows.flat()) });

test('writeFixtures writes every fixture as a decodable ONNX model, byte-identical on every run', async () => {
  await withTempDir(async (dir) => {
    const paths = await writeFixtures(join(dir, 'a'));
    const again = await writeFixtures(join(dir, 'b'));
    for (const [name, fixture] of Object.entries(FIXTURES)) {
      const path = paths[name as keyof typeof FIXTURES];
      assert.equal(path, join(dir, 'a', fixture.file));
      const bytes = await readFile(path);
      assert.deepEqual(bytes, await readFile(again[name as keyof typeof FIXTURES]), `${name} is deterministic`);
      const model = onnx.ModelProto.decode(bytes);
      assert.ok(model.graph, `${name} has a graph`);
      assert.deepEqual(model.graph.input?.map((i) => i.name), fixture.signature.inputs.map((i) => i.name));
      assert.deepEqual(model.graph.output?.map((o) => o.name), fixture.signature.outputs.map((o) => o.name));
    }
  });
});

test('the tree classifiers are TreeEnsembleClassifier → ZipMap with both opset domains, as skl2onnx writes them', async () => {
  for (const fixture of [treeClassifierFixture, irisClassifierFixture]) {
    const model = onnx.ModelProto.decode(fixture.build());
    assert.deepEqual(model.opsetImport.map((o) => o.domain).sort(), ['', 'ai.onnx.ml']);
    assert.deepEqual(model.graph?.node?.map((n) => `${n.domain}:${n.opType}`), ['ai.onnx.ml:TreeEnsembleClassifier', 'ai.onnx.ml:ZipMap']);
    assert.ok(model.graph?.output?.[1]?.type?.sequenceType?.elemType?.mapType, 'probabilities is a sequence of maps');
  }
});

test('linear reference: worked example and weights', () => {
  const { y } = linearFixture.reference({ x: f32([[1, 2, 3, 4], [0, 0, 0, 0]]) }) as { y: Tensor };
  assert.deepEqual(LINEAR_WEIGHTS, [0.5, -1, 2, 0.25]);
  assert.deepEqual(y, { dtype: 'float32', shape: [2, 1], data: Float32Array.of(5.625, LINEAR_BIAS) });
  const example = linearFixture.example(50).x!;
  assert.deepEqual(example.shape, [50, 4]);
  assert.ok(Array.from(example.data as Float32Array).every((v) => Number.isInteger(v * 4) && v >= -4 && v < 4));
});

test('two-input reference adds and multiplies element-wise', () => {
  const out = twoInputFixture.reference({ a: f32([[1, 2], [3, -4]]), b: f32([[0.5, 0.5], [2, 2]]) });
  assert.deepEqual(out, {
    sum: f32([[1.5, 2.5], [5, -2]]),
    product: f32([[0.5, 1], [6, -8]]),
  });
});

test('mlp reference has the declared output shape and varied, finite values of order 1', () => {
  const rows = 16;
  const { y } = mlpSmallFixture.reference(mlpSmallFixture.example(rows)) as { y: Tensor };
  assert.deepEqual(y.shape, [rows, 8]);
  const values = Array.from(y.data as Float32Array);
  assert.ok(values.every((v) => Number.isFinite(v) && Math.abs(v) < 10));
  assert.ok(new Set(values).size === values.length, 'no collapsed outputs');
  assert.throws(() => mlpFixture([4]), /at least two/);
  assert.throws(() => mlpFixture([4, 0, 2]), /positive integer/);
});

test('writeMlp writes the requested layer widths as Gemm initializers', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'tiny.onnx');
    await writeMlp(path, [3, 5, 2]);
    const graph = onnx.ModelProto.decode(await readFile(path)).graph;
    assert.deepEqual(graph?.initializer?.map((t) => `${t.name}:${t.dims?.join('x')}`), ['w0:3x5', 'b0:5', 'w1:5x2', 'b1:2']);
    assert.deepEqual(graph?.node?.map((n) => n.opType), ['Gemm', 'Relu', 'Gemm']);
  });
});

test('tree reference: one readable row per iris class, probabilities sum to 1, int and string labels agree', () => {
  const x = f32(IRIS_EXAMPLE_ROWS.map((r) => [...r]));
  const iris = irisClassifierFixture.reference({ x });
  const ints = treeClassifierFixture.reference({ x });
  assert.deepEqual((iris.label as Tensor).data, ['setosa', 'versicolor', 'virginica']);
  assert.deepEqual((ints.label as Tensor).data, BigInt64Array.of(0n, 1n, 2n));
  const probabilities = (iris.probabilities as MapSequence).data;
  assert.deepEqual(Object.keys(probabilities[0] ?? {}), ['setosa', 'versicolor', 'virginica']);
  assert.deepEqual(Object.keys((ints.probabilities as MapSequence).data[0] ?? {}), ['0', '1', '2']);
  for (const row of probabilities) {
    const total = Object.values(row).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(total - 1) < 1e-6, `probabilities sum to ${total}`);
  }
});

test('no combination of tree leaves ties: the best class leads by at least 0.05 / 3', () => {
  const leaves = (n: TreeNode): Array<readonly number[]> => ('leaf' in n ? [n.leaf] : [...leaves(n.left), ...leaves(n.right)]);
  const perTree = IRIS_TREES.map(leaves);
  let combos: number[][] = [[0, 0, 0]];
  for (const options of perTree) combos = combos.flatMap((sum) => options.map((leaf) => sum.map((s, c) => s + (leaf[c] ?? 0))));
  assert.equal(combos.length, 3 * 3 * 4);
  for (const sum of combos) {
    const sorted = [...sum].sort((a, b) => b - a);
    assert.ok((sorted[0] ?? 0) - (sorted[1] ?? 0) >= 0.05 - 1e-9, `scores ${sum.join(', ')} nearly tie`);
  }
});

test('mlflow-linear is an MLflow model directory: MLmodel, model.onnx and an input example', async () => {
  await withTempDir(async (dir) => {
    const { mlflowLinear } = await writeFixtures(dir);
    assert.equal(mlflowLinear, join(dir, 'mlflow-linear'));
    assert.deepEqual(await readFile(join(mlflowLinear, 'model.onnx')), Buffer.from(linearFixture.build()));
    const mlmodel = await readFile(join(mlflowLinear, 'MLmodel'), 'utf8');
    for (const line of ['  onnx:', '    data: model.onnx', '    loader_module: mlflow.onnx', '  artifact_path: input_example.json', '  type: ndarray', '  format: tf-serving']) {
      assert.ok(mlmodel.split('\n').includes(line), `MLmodel has '${line}'`);
    }
    const signature = (key: string): unknown => {
      const match = new RegExp(`^  ${key}: '(.*)'$`, 'm').exec(mlmodel);
      assert.ok(match?.[1], `signature.${key}`);
      return JSON.parse(match[1]);
    };
    assert.deepEqual(signature('inputs'), [{ type: 'tensor', 'tensor-spec': { dtype: 'float32', shape: [-1, 4] }, name: 'x' }]);
    assert.deepEqual(signature('outputs'), [{ type: 'tensor', 'tensor-spec': { dtype: 'float32', shape: [-1, 1] }, name: 'y' }]);
    const example = JSON.parse(await readFile(join(mlflowLinear, 'input_example.json'), 'utf8')) as { inputs: { x: number[][] } };
    assert.deepEqual(example, { inputs: MLFLOW_LINEAR.inputExample });
    const { y } = linearFixture.reference({ x: f32(example.inputs.x) }) as { y: Tensor };
    assert.deepEqual(Array.from(y.data as Float32Array), [5.625, -1.125]);
  });
});
