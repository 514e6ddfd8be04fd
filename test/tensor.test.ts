/** concatRows / sliceRows: every dtype, MapSequence, fresh storage, and the errors a caller bug gets. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { concatRows, DTYPES, sliceRows, type DType, type MapSequence, type Tensor, type TensorData } from '../src/tensor/index.js';

/** Element i of a tensor of `dtype`, distinct per i (so a misplaced row shows). */
function element(dtype: DType, i: number): unknown {
  switch (dtype) {
    case 'int64': return BigInt(i) * 3n - 2n ** 62n;
    case 'uint64': return 2n ** 63n + BigInt(i);
    case 'bool': return i % 3 === 0;
    case 'string': return `s${i} ✓`;
    case 'int8': return (i % 200) - 100;
    case 'uint8': return i % 250;
    case 'float16': return i / 4;
    default: return i * 1.5;
  }
}

function makeData(dtype: DType, values: unknown[]): TensorData {
  switch (dtype) {
    case 'float16':
    case 'float32': return Float32Array.from(values as number[]);
    case 'float64': return Float64Array.from(values as number[]);
    case 'int8': return Int8Array.from(values as number[]);
    case 'int16': return Int16Array.from(values as number[]);
    case 'int32': return Int32Array.from(values as number[]);
    case 'int64': return BigInt64Array.from(values as bigint[]);
    case 'uint8': return Uint8Array.from(values as number[]);
    case 'uint16': return Uint16Array.from(values as number[]);
    case 'uint32': return Uint32Array.from(values as number[]);
    case 'uint64': return BigUint64Array.from(values as bigint[]);
    case 'bool': return values as boolean[];
    case 'string': return values as string[];
  }
}

/** A [rows, 2, 3] tensor whose elements start at element index `first`. */
function tensor(dtype: DType, rows: number, first: number): Tensor {
  const values = Array.from({ length: rows * 6 }, (_, i) => element(dtype, first + i));
  return { dtype, shape: [rows, 2, 3], data: makeData(dtype, values) };
}

describe('concatRows', () => {
  for (const dtype of DTYPES) {
    test(`${dtype}: stacks rows in order, keeps the storage type, then slices back exactly`, () => {
      const parts = [tensor(dtype, 2, 0), tensor(dtype, 0, 12), tensor(dtype, 3, 12), tensor(dtype, 1, 30)];
      const all = concatRows(parts);
      assert.deepEqual(all, tensor(dtype, 6, 0));
      assert.equal(all.data.constructor, parts[0]!.data.constructor);
      assert.deepEqual(sliceRows(all, 0, 2), parts[0]);
      assert.deepEqual(sliceRows(all, 2, 2), { ...parts[1], shape: [0, 2, 3] });
      assert.deepEqual(sliceRows(all, 2, 5), parts[2]);
      assert.deepEqual(sliceRows(all, 5, 6), parts[3]);
    });
  }

  test('the result never shares storage with its arguments, even for one tensor', () => {
    const a = tensor('float32', 2, 0);
    const one = concatRows([a]);
    assert.deepEqual(one, a);
    assert.notEqual(one.data, a.data);
    (one.data as Float32Array)[0] = 99;
    assert.equal((a.data as Float32Array)[0], 0);
    const strings = tensor('string', 1, 0);
    assert.notEqual(concatRows([strings]).data, strings.data);
  });

  test('1-D tensors ([N]) concatenate', () => {
    const r = concatRows([
      { dtype: 'int64', shape: [2], data: BigInt64Array.from([1n, 2n]) },
      { dtype: 'int64', shape: [1], data: BigInt64Array.from([2n ** 60n]) },
    ]);
    assert.deepEqual(r, { dtype: 'int64', shape: [3], data: BigInt64Array.from([1n, 2n, 2n ** 60n]) });
  });

  test('refuses an empty list, scalars, mixed dtypes and mismatched trailing dims', () => {
    assert.throws(() => concatRows([]), /at least one/);
    assert.throws(() => concatRows([{ dtype: 'float32', shape: [], data: new Float32Array(1) }]), /scalar/);
    assert.throws(() => concatRows([tensor('float32', 1, 0), tensor('float64', 1, 0)]), /dtype float64 differs from float32/);
    assert.throws(
      () => concatRows([tensor('float32', 1, 0), { dtype: 'float32', shape: [1, 3, 2], data: new Float32Array(6) }]),
      /shape \[1, 3, 2\] differs from \[1, 2, 3\] after dim 0/,
    );
    assert.throws(
      () => concatRows([tensor('float32', 1, 0), { dtype: 'float32', shape: [1, 6], data: new Float32Array(6) }]),
      /differs/,
    );
  });
});

describe('sliceRows', () => {
  test('a MapSequence keeps its maps of the range', () => {
    const maps: MapSequence = { dtype: 'map', data: [{ a: 1, b: 0 }, { a: 0.25, b: 0.75 }, { a: 0.5, b: 0.5 }] };
    assert.deepEqual(sliceRows(maps, 1, 3), { dtype: 'map', data: [{ a: 0.25, b: 0.75 }, { a: 0.5, b: 0.5 }] });
    assert.deepEqual(sliceRows(maps, 1, 1), { dtype: 'map', data: [] });
    assert.equal(sliceRows(maps, 0, 3), maps);
  });

  test('a slice is a copy; the whole range is the value itself', () => {
    const t = tensor('int32', 3, 0);
    const s = sliceRows(t, 1, 2) as Tensor;
    assert.deepEqual(s, { dtype: 'int32', shape: [1, 2, 3], data: Int32Array.from([6, 7, 8, 9, 10, 11].map((i) => element('int32', i) as number)) });
    assert.notEqual((s.data as Int32Array).buffer, (t.data as Int32Array).buffer);
    assert.equal(sliceRows(t, 0, 3), t);
  });

  test('refuses ranges outside the rows and scalars', () => {
    const t = tensor('float32', 3, 0);
    assert.throws(() => sliceRows(t, 2, 1), /outside 0\.\.3/);
    assert.throws(() => sliceRows(t, 0, 4), /outside/);
    assert.throws(() => sliceRows(t, -1, 1), /outside/);
    assert.throws(() => sliceRows(t, 0.5, 1), /outside/);
    assert.throws(() => sliceRows({ dtype: 'float32', shape: [], data: new Float32Array(1) }, 0, 0), /scalar/);
  });
});
