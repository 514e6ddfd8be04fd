import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import fc from 'fast-check';
import onnxProto from 'onnx-proto';
import { FerryError } from '../src/errors.js';
import { FIXTURES, identityTypesFixture, linearFixture, mlpSmallFixture, writeFixtures } from '../src/fixtures/index.js';
import type { OnnxFixture } from '../src/fixtures/index.js';
import { onnxFlavor } from '../src/flavors/onnx/index.js';
import type { LoadOptions } from '../src/flavors/index.js';
import type { MapSequence, OutputValue, Tensor } from '../src/tensor/index.js';
import { rejectsWith } from './support/index.js';

const { onnx } = onnxProto;
const CPU: Omit<LoadOptions, 'modelFile'> = { workloadType: 'CPU', intraOpThreads: 1 };

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-onnx-'));
  await writeFixtures(dir);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Float comparison relative to the output scale: |a − e| ≤ 1e-5 · max(1, |e|). */
function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  assert.equal(actual.length, expected.length, `${what} length`);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i] ?? NaN;
    const e = expected[i] ?? NaN;
    assert.ok(Math.abs(a - e) <= 1e-5 * Math.max(1, Math.abs(e)), `${what}[${i}]: ${a} vs ${e}`);
  }
}

/** Exact for every output except floats of the MLP and tree probabilities (summed in another order). */
function assertMatchesReference(fixture: OnnxFixture, actual: Record<string, OutputValue>, expected: Record<string, OutputValue>): void {
  assert.deepEqual(Object.keys(actual), Object.keys(expected));
  for (const [name, want] of Object.entries(expected)) {
    const got = actual[name];
    assert.ok(got, `output ${name}`);
    if (want.dtype === 'map') {
      assert.equal(got.dtype, 'map');
      const rows = got.data;
      assert.equal(rows.length, want.data.length);
      want.data.forEach((row, r) => {
        assert.deepEqual(Object.keys(rows[r] ?? {}), Object.keys(row), `${name}[${r}] keys`);
        assertClose(Object.values(rows[r] ?? {}), Object.values(row), `${fixture.file} ${name}[${r}]`);
      });
    } else if (fixture === mlpSmallFixture) {
      assert.deepEqual((got as Tensor).shape, (want as Tensor).shape);
      assertClose((got as Tensor).data as Float32Array, (want as Tensor).data as Float32Array, `${fixture.file} ${name}`);
    } else {
      assert.deepEqual(got, want, `${fixture.file} ${name}`);
    }
  }
}

test('inspect returns each fixture signature exactly', async () => {
  for (const fixture of Object.values(FIXTURES)) {
    assert.deepEqual(await onnxFlavor.inspect(dir, fixture.file), fixture.signature, fixture.file);
  }
  assert.deepEqual(await onnxFlavor.inspect(dir, 'linear.onnx'), {
    inputs: [{ name: 'x', dtype: 'float32', shape: [-1, 4] }],
    outputs: [{ name: 'y', dtype: 'float32', shape: [-1, 1] }],
  });
  assert.deepEqual(await onnxFlavor.inspect(dir, 'iris-classifier.onnx'), {
    inputs: [{ name: 'x', dtype: 'float32', shape: [-1, 4] }],
    outputs: [{ name: 'label', dtype: 'string', shape: [-1] }, { name: 'probabilities', dtype: 'map', shape: undefined }],
  });
  assert.deepEqual(await onnxFlavor.inspect(join(dir, 'mlflow-linear'), 'model.onnx'), linearFixture.signature);
});

/** A one-node model built inline, for the graph shapes the fixtures do not cover. */
function model(graph: onnxProto.onnx.IGraphProto): Uint8Array {
  return onnx.ModelProto.encode({ irVersion: 8, opsetImport: [{ domain: '', version: 15 }], graph }).finish();
}
const FLOAT = onnx.TensorProto.DataType.FLOAT;
const tensorInfo = (name: string, dim?: onnxProto.onnx.TensorShapeProto.IDimension[]): onnxProto.onnx.IValueInfoProto => ({
  name, type: { tensorType: { elemType: FLOAT, shape: dim === undefined ? null : { dim } } },
});

test('inspect skips initializers listed as inputs, maps unknown dims to -1 and a missing shape to undefined', async () => {
  await writeFile(join(dir, 'edge.onnx'), model({
    name: 'edge',
    input: [tensorInfo('x', [{ dimParam: 'batch' }, {}]), tensorInfo('w', [{ dimValue: 1 }])],
    initializer: [{ name: 'w', dims: [1], dataType: FLOAT, floatData: [2] }],
    output: [tensorInfo('y')],
    node: [{ opType: 'Mul', input: ['x', 'w'], output: ['y'] }],
  }));
  assert.deepEqual(await onnxFlavor.inspect(dir, 'edge.onnx'), {
    inputs: [{ name: 'x', dtype: 'float32', shape: [-1, -1] }],
    outputs: [{ name: 'y', dtype: 'float32', shape: undefined }],
  });
  const loaded = await onnxFlavor.load(dir, { ...CPU, modelFile: 'edge.onnx' });
  try {
    const out = await loaded.predict({ x: { dtype: 'float32', shape: [1, 3], data: Float32Array.of(1, 2, 3) } });
    assert.deepEqual(out, { y: { dtype: 'float32', shape: [1, 3], data: Float32Array.of(2, 4, 6) } });
  } finally {
    await loaded.close();
  }
});

test('inspect rejects non-tensor inputs, unsupported element types and graphs without outputs', async () => {
  const cases: Array<[string, onnxProto.onnx.IGraphProto, RegExp]> = [
    ['seq-input.onnx', {
      input: [{ name: 's', type: { sequenceType: { elemType: { tensorType: { elemType: FLOAT } } } } }],
      output: [tensorInfo('y')], node: [],
    }, /input 's' is a sequence/],
    ['complex.onnx', {
      input: [{ name: 'c', type: { tensorType: { elemType: onnx.TensorProto.DataType.COMPLEX64 } } }],
      output: [tensorInfo('y')], node: [],
    }, /unsupported element type COMPLEX64/],
    ['no-outputs.onnx', { input: [tensorInfo('x')], output: [], node: [] }, /declares no outputs/],
  ];
  for (const [file, graph, message] of cases) {
    await writeFile(join(dir, file), model(graph));
    await rejectsWith(onnxFlavor.inspect(dir, file), 'INVALID_PARAMETER_VALUE', message);
  }
});

test('inspect on missing, empty, text, truncated and escaping files throws INVALID_PARAMETER_VALUE naming the file', async () => {
  await writeFile(join(dir, 'empty.onnx'), '');
  await writeFile(join(dir, 'notes.txt'), 'This is not a model.\nJust some text, with a few lines.\n');
  const mlp = await readFile(join(dir, 'mlp.onnx'));
  await writeFile(join(dir, 'truncated.onnx'), mlp.subarray(0, Math.floor(mlp.length / 2)));
  await mkdir(join(dir, 'a-directory.onnx'), { recursive: true });
  const cases: Array<[string, RegExp]> = [
    ['missing.onnx', /'missing\.onnx'.*file not found/],
    ['empty.onnx', /'empty\.onnx'.*empty/],
    ['notes.txt', /'notes\.txt'/],
    ['truncated.onnx', /'truncated\.onnx'.*not an ONNX protobuf/],
    ['a-directory.onnx', /'a-directory\.onnx'.*cannot read/],
    ['../outside.onnx', /inside the artifact directory/],
    ['/etc/hostname', /inside the artifact directory/],
  ];
  for (const [file, message] of cases) await rejectsWith(onnxFlavor.inspect(dir, file), 'INVALID_PARAMETER_VALUE', message);
  await rejectsWith(onnxFlavor.load(dir, { ...CPU, modelFile: 'truncated.onnx' }), 'INVALID_PARAMETER_VALUE');
});

test('inspect on random bytes either returns a signature or throws INVALID_PARAMETER_VALUE, never anything else', { timeout: 60_000 }, async () => {
  const garbageDir = join(dir, 'garbage');
  await mkdir(garbageDir, { recursive: true });
  const linear = await readFile(join(dir, 'linear.onnx'));
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.uint8Array({ minLength: 1, maxLength: 4096 }),
        // A real model with a few bytes flipped goes deeper into the decoder than pure noise.
        fc.array(fc.tuple(fc.nat(linear.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 })
          .map((flips) => { const b = Uint8Array.from(linear); for (const [i, v] of flips) b[i] = v; return b; }),
      ),
      async (bytes) => {
        await writeFile(join(garbageDir, 'm.onnx'), bytes);
        try {
          const signature = await onnxFlavor.inspect(garbageDir, 'm.onnx');
          assert.ok(Array.isArray(signature.inputs) && signature.outputs.length > 0);
        } catch (err) {
          assert.ok(err instanceof FerryError && err.code === 'INVALID_PARAMETER_VALUE', `unexpected ${String(err)}`);
        }
      },
    ),
    { numRuns: 300, seed: 42 },
  );
});

test('predict equals the JS reference on every fixture, at batch sizes 1 and 37', async () => {
  for (const fixture of Object.values(FIXTURES)) {
    const loaded = await onnxFlavor.load(dir, { ...CPU, modelFile: fixture.file });
    try {
      assert.deepEqual(loaded.signature, fixture.signature);
      for (const rows of [1, 37]) {
        const inputs = fixture.example(rows);
        assertMatchesReference(fixture, await loaded.predict(inputs), fixture.reference(inputs));
      }
    } finally {
      await loaded.close();
    }
  }
});

test('ZipMap outputs come back under their original name, keyed by class label', async () => {
  const loaded = await onnxFlavor.load(dir, { ...CPU, modelFile: 'iris-classifier.onnx' });
  try {
    const x: Tensor = { dtype: 'float32', shape: [1, 4], data: Float32Array.of(5.1, 3.5, 1.4, 0.2) };
    const out = await loaded.predict({ x });
    assert.deepEqual(out.label, { dtype: 'string', shape: [1], data: ['setosa'] });
    const probabilities = out.probabilities as MapSequence;
    assert.equal(probabilities.dtype, 'map');
    assertClose(Object.values(probabilities.data[0] ?? {}), [(1 + 0.95 + 0.9) / 3, (0.05 + 0.1) / 3, 0], 'setosa row');
  } finally {
    await loaded.close();
  }
});

test('float16 inputs are rounded to the nearest half and come back as float32 values', async () => {
  const loaded = await onnxFlavor.load(dir, { ...CPU, modelFile: identityTypesFixture.file });
  try {
    const inputs = identityTypesFixture.example(4);
    // 0.1 → 0.0999755859375 (nearest half); 65520 → Infinity (past the largest half, 65504);
    // halfway cases tie to even: 1 + 2^-11 → 1, 1 + 3·2^-11 → 1 + 2^-9, 2^-25 → 0 and
    // 1.5·2^-24 → 2^-23 (subnormals); -2.5 is exact.
    const half = [0.1, 65520, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 2 ** -25, 1.5 * 2 ** -24, -2.5];
    const rounded = [0.0999755859375, Infinity, 1, 1 + 2 ** -9, 0, 2 ** -23, -2.5];
    inputs.half = { dtype: 'float16', shape: [7], data: Float32Array.from(half) };
    inputs.flag = { dtype: 'bool', shape: [5], data: [true, false, true, true, false] };
    const out = await loaded.predict(inputs);
    assert.deepEqual(out.half_out, { dtype: 'float16', shape: [7], data: Float32Array.from(rounded) });
    assert.deepEqual(out.flag_out, inputs.flag);
    assert.deepEqual(out.count_out, inputs.count);
  } finally {
    await loaded.close();
  }
});

test('predict with a wrong dtype, shape or missing input rejects with MODEL_ERROR; predict after close too', async () => {
  const loaded = await onnxFlavor.load(dir, { ...CPU, modelFile: 'linear.onnx' });
  const x = (t: Partial<Tensor>): Record<string, Tensor> => ({ x: { dtype: 'float32', shape: [1, 4], data: Float32Array.of(1, 2, 3, 4), ...t } });
  await rejectsWith(loaded.predict(x({ dtype: 'int32', data: Int32Array.of(1, 2, 3, 4) })), 'MODEL_ERROR', /Unexpected input data type/);
  await rejectsWith(loaded.predict(x({ data: Int32Array.of(1, 2, 3, 4) })), 'MODEL_ERROR');
  await rejectsWith(loaded.predict(x({ shape: [1, 3], data: Float32Array.of(1, 2, 3) })), 'MODEL_ERROR', /dimensions/);
  await rejectsWith(loaded.predict(x({ shape: [2, 4] })), 'MODEL_ERROR');
  await rejectsWith(loaded.predict({}), 'MODEL_ERROR', /missing input 'x'/);
  assert.deepEqual(await loaded.predict(x({}), { ignored: 1 }), { y: { dtype: 'float32', shape: [1, 1], data: Float32Array.of(5.625) } });
  await loaded.close();
  await rejectsWith(loaded.predict(x({})), 'MODEL_ERROR');
});

/** True when onnxruntime-node was installed with its CUDA provider (then the GPU path may work). */
function hasCudaProvider(): boolean {
  const pkg = dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
  return existsSync(join(pkg, 'bin', 'napi-v6', process.platform, process.arch, 'libonnxruntime_providers_cuda.so'));
}

test('a GPU workload without the CUDA provider fails with how to fix it', { skip: hasCudaProvider() && 'CUDA provider installed' }, async () => {
  await rejectsWith(
    onnxFlavor.load(dir, { modelFile: 'linear.onnx', workloadType: 'GPU_SMALL', intraOpThreads: 1 }),
    'INVALID_PARAMETER_VALUE',
    /workload_type GPU_SMALL needs the CUDA execution provider.*ONNXRUNTIME_NODE_INSTALL=cuda12.*workload_type CPU/,
  );
});
