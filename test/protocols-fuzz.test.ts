// Property tests: no JSON value makes a decoder throw anything but a 400 FerryError, every
// accepted request yields tensors that satisfy the signature, and encode(decode(x)) round-trips.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FerryError } from '../src/errors.js';
import { decodeMlflowRequest, decodeV2Request, encodeMlflowResponse, encodeV2Response } from '../src/protocols/index.js';
import { elementCount, shapeMatches, type Signature, type Tensor } from '../src/tensor/index.js';

const SIGNATURES: Signature[] = [
  { inputs: [{ name: 'x', dtype: 'float32', shape: [-1, 4] }], outputs: [{ name: 'y', dtype: 'float32', shape: [-1] }] },
  { inputs: [{ name: 'a', dtype: 'float64', shape: [-1, 1] }, { name: 'b', dtype: 'int32', shape: [-1, 2] }], outputs: [] },
  { inputs: [{ name: 'id', dtype: 'int64', shape: [-1] }], outputs: [] },
  { inputs: [{ name: 'text', dtype: 'string', shape: undefined }], outputs: [] },
  { inputs: [{ name: 'flag', dtype: 'bool', shape: [-1] }, { name: 'u', dtype: 'uint8', shape: [2] }], outputs: [] },
];
const [LINEAR, TWO, INT64, STRING, BOOL] = SIGNATURES as [Signature, Signature, Signature, Signature, Signature];

type Decoder = (body: unknown, signature: Signature) => Record<string, Tensor>;
const DECODERS: Decoder[] = [(b, s) => decodeMlflowRequest(b, s).inputs, (b, s) => decodeV2Request(b, s).inputs];

/** Decodes `body`; any throw must be a 400 FerryError, any result must satisfy the signature. */
function decodeChecked(decoder: Decoder, body: unknown, signature: Signature): void {
  let inputs: Record<string, Tensor>;
  try {
    inputs = decoder(body, signature);
  } catch (err) {
    if (!(err instanceof FerryError) || err.status !== 400) throw new Error(`unexpected throw for ${JSON.stringify(body)}`, { cause: err });
    return;
  }
  assert.deepEqual(Object.keys(inputs).sort(), signature.inputs.map((s) => s.name).sort());
  for (const spec of signature.inputs) {
    const t = inputs[spec.name]!;
    assert.equal(t.dtype, spec.dtype);
    assert.ok(shapeMatches(spec.shape, t.shape), `shape ${JSON.stringify(t.shape)} for ${JSON.stringify(spec.shape)}`);
    assert.equal(t.data.length, elementCount(t.shape));
  }
}

const json = fc.jsonValue({ maxDepth: 5 });
const pick = <T>(items: readonly T[]): fc.Arbitrary<T> => fc.constantFrom(...items);

test('arbitrary JSON bodies: a result or a 400', () => {
  fc.assert(fc.property(json, pick(SIGNATURES), pick(DECODERS), (body, signature, decoder) => {
    decodeChecked(decoder, body, signature);
  }), { numRuns: 800 });
});

test('arbitrary JSON in every slot of a request: a result or a 400', () => {
  const names = pick(['x', 'a', 'b', 'id', 'text', 'flag', 'u', 'zz']);
  const grid = fc.array(fc.array(fc.oneof(fc.integer({ min: -3, max: 300 }), fc.double(), fc.boolean(), fc.string({ maxLength: 2 })), { maxLength: 5 }), { maxLength: 4 });
  const slot = fc.oneof(json, grid);
  const mlflow = fc.oneof(
    fc.record({ inputs: fc.oneof(slot, fc.dictionary(names, slot, { maxKeys: 3 })) }),
    fc.record({ instances: fc.oneof(slot, fc.array(fc.dictionary(names, slot, { maxKeys: 3 }), { maxLength: 3 })) }),
    fc.record({ dataframe_split: fc.record({ columns: fc.array(names, { maxLength: 4 }), data: slot }, { requiredKeys: ['data'] }) }),
    fc.record({ dataframe_records: fc.array(fc.dictionary(names, fc.oneof(slot, fc.double())), { maxLength: 3 }) }),
  );
  const v2Input = fc.record({
    name: names,
    shape: fc.oneof(fc.array(fc.integer({ min: -1, max: 4 }), { maxLength: 3 }), json),
    datatype: pick(['FP32', 'FP64', 'INT32', 'INT64', 'UINT8', 'BOOL', 'BYTES', 'BF16']),
    data: slot,
  });
  const v2 = fc.record({ inputs: fc.array(v2Input, { maxLength: 3 }), outputs: fc.array(fc.record({ name: names }), { maxLength: 2 }) }, { requiredKeys: ['inputs'] });
  fc.assert(fc.property(mlflow, v2, pick(SIGNATURES), (m, v, signature) => {
    decodeChecked(DECODERS[0]!, m, signature);
    decodeChecked(DECODERS[1]!, v, signature);
  }), { numRuns: 800 });
});

type Path = Array<string | number>;

function allPaths(value: unknown, prefix: Path = [], out: Path[] = []): Path[] {
  out.push(prefix);
  if (Array.isArray(value)) value.forEach((v, i) => allPaths(v, [...prefix, i], out));
  else if (typeof value === 'object' && value !== null) for (const [k, v] of Object.entries(value)) allPaths(v, [...prefix, k], out);
  return out;
}

/** `body` with one node replaced, deleted, wrapped in an array or swapped for its first child. */
function mutate(body: unknown, pathIndex: number, op: 'replace' | 'delete' | 'wrap' | 'unwrap', replacement: unknown): unknown {
  const copy: unknown = structuredClone(body);
  const paths = allPaths(copy);
  const path = paths[pathIndex % paths.length]!;
  if (path.length === 0) return replacement;
  let parent = copy as Record<string | number, unknown>;
  for (const key of path.slice(0, -1)) parent = parent[key] as Record<string | number, unknown>;
  const key = path.at(-1)!;
  const node = parent[key];
  if (op === 'replace') parent[key] = replacement;
  else if (op === 'wrap') parent[key] = [node];
  else if (op === 'unwrap') parent[key] = Array.isArray(node) ? node[0] : replacement;
  else if (Array.isArray(parent)) parent.splice(key as number, 1);
  else delete parent[key];
  return copy;
}

const VALID: Array<[Signature, number, unknown]> = [
  [LINEAR, 0, { inputs: [[1, 2, 3, 4], [5, 6, 7, 8]] }],
  [LINEAR, 0, { dataframe_split: { columns: ['a', 'b', 'c', 'd'], index: [0], data: [[1, 2, 3, 4]] }, params: { k: 1 } }],
  [LINEAR, 0, { dataframe_records: [{ a: 1, b: 2, c: 3, d: 4 }, { a: 1, b: 2, c: 3, d: 4 }] }],
  [TWO, 0, { instances: [{ a: 1.5, b: [1, 2] }, { a: 2.5, b: [3, 4] }] }],
  [TWO, 0, { dataframe_split: { columns: ['a', 'b'], data: [[1, [1, 2]], [2, [3, 4]]] } }],
  [TWO, 0, { inputs: { a: [[1], [2]], b: [[1, 2], [3, 4]] } }],
  [INT64, 0, { instances: [1, 2, 3] }],
  [STRING, 0, { inputs: { text: [['a', 'b'], ['c', 'd']] } }],
  [BOOL, 0, { dataframe_records: [{ flag: true, u: [1, 2] }] }],
  [LINEAR, 1, { id: 'r', inputs: [{ name: 'x', shape: [2, 4], datatype: 'FP32', data: [1, 2, 3, 4, 5, 6, 7, 8] }] }],
  [TWO, 1, { inputs: [{ name: 'a', shape: [1, 1], datatype: 'FP64', data: [[1]] }, { name: 'b', shape: [1, 2], datatype: 'INT32', data: [[1, 2]] }], outputs: [] }],
  [BOOL, 1, { inputs: [{ name: 'flag', shape: [1], datatype: 'BOOL', data: [true] }, { name: 'u', shape: [2], datatype: 'UINT8', data: [0, 255] }] }],
];

test('mutated valid requests: a result or a 400', () => {
  for (const [signature, decoder, body] of VALID) decodeChecked(DECODERS[decoder]!, body, signature); // the seeds are valid
  fc.assert(fc.property(pick(VALID), fc.nat(), pick(['replace', 'delete', 'wrap', 'unwrap'] as const), json, ([signature, decoder, body], at, op, replacement) => {
    decodeChecked(DECODERS[decoder]!, mutate(body, at, op, replacement), signature);
  }), { numRuns: 1000 });
});

test('round trip: float64 rows through every format and back', () => {
  const signature: Signature = { inputs: [{ name: 'x', dtype: 'float64', shape: [-1, 3] }], outputs: [] };
  const rows = fc.array(fc.array(fc.double({ noNaN: true, noDefaultInfinity: true }), { minLength: 3, maxLength: 3 }), { minLength: 1, maxLength: 5 });
  fc.assert(fc.property(rows, (x) => {
    const bodies = [{ inputs: x }, { instances: x }, { inputs: { x } }, { dataframe_split: { columns: ['p', 'q', 'r'], data: x } }];
    for (const body of bodies) {
      const { inputs, format } = decodeMlflowRequest(body, signature);
      assert.deepEqual(encodeMlflowResponse({ y: inputs.x! }, format).predictions, x);
    }
    const flat = x.flat();
    const v2 = decodeV2Request({ inputs: [{ name: 'x', shape: [x.length, 3], datatype: 'FP64', data: flat }] }, signature);
    assert.deepEqual(encodeV2Response(v2.inputs, { modelName: 'm' }).outputs[0]!.data, flat);
  }), { numRuns: 200 });
});

test('round trip: int64 values come back as the same JSON numbers', () => {
  fc.assert(fc.property(fc.array(fc.maxSafeInteger(), { maxLength: 8 }), (ids) => {
    const { inputs } = decodeV2Request({ inputs: [{ name: 'id', shape: [ids.length], datatype: 'INT64', data: ids }] }, INT64);
    const text = JSON.stringify(encodeMlflowResponse(inputs, 'instances'));
    assert.deepEqual(JSON.parse(text), { predictions: ids.map((v) => (Object.is(v, -0) ? 0 : v)) });
  }), { numRuns: 200 });
});
