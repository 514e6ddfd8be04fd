import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FerryError } from '../src/errors.js';
import {
  decodeMlflowRequest, decodeV2Request, dtypeToV2, encodeMlflowResponse, encodeV2Response, v2ModelMetadata, v2ToDtype,
  type MlflowFormat,
} from '../src/protocols/index.js';
import { DTYPES, type OutputValue, type Signature, type Tensor } from '../src/tensor/index.js';

const LINEAR: Signature = {
  inputs: [{ name: 'x', dtype: 'float32', shape: [-1, 4] }],
  outputs: [{ name: 'y', dtype: 'float32', shape: [-1, 1] }],
};
const TWO: Signature = {
  inputs: [{ name: 'a', dtype: 'float64', shape: [-1, 1] }, { name: 'b', dtype: 'int32', shape: [-1, 2] }],
  outputs: [{ name: 'label', dtype: 'int64', shape: [-1] }, { name: 'probabilities', dtype: 'map', shape: undefined }],
};
const INT64: Signature = { inputs: [{ name: 'id', dtype: 'int64', shape: [-1] }], outputs: [] };
const STRING: Signature = { inputs: [{ name: 'text', dtype: 'string', shape: [-1] }], outputs: [] };
const BOOL: Signature = { inputs: [{ name: 'flag', dtype: 'bool', shape: [-1] }], outputs: [] };

type Protocol = 'mlflow' | 'v2';
interface Expected { dtype: Tensor['dtype']; shape: number[]; data: unknown[] }

function decode(protocol: Protocol, body: unknown, signature: Signature): Record<string, Tensor> {
  return protocol === 'mlflow' ? decodeMlflowRequest(body, signature).inputs : decodeV2Request(body, signature).inputs;
}

function plain(inputs: Record<string, Tensor>): Record<string, Expected> {
  return Object.fromEntries(Object.entries(inputs).map(([k, t]) => [k, { dtype: t.dtype, shape: t.shape, data: Array.from(t.data as ArrayLike<unknown>) }]));
}

const f32 = (...v: number[]): number[] => Array.from(Float32Array.from(v));
const x2: Record<string, Expected> = { x: { dtype: 'float32', shape: [2, 4], data: f32(1, 2, 3, 4, 0.1, 6, 7, 8) } };
const x1: Record<string, Expected> = { x: { dtype: 'float32', shape: [1, 4], data: f32(1, 2, 3, 4) } };
const ab: Record<string, Expected> = {
  a: { dtype: 'float64', shape: [2, 1], data: [1.5, 2.5] },
  b: { dtype: 'int32', shape: [2, 2], data: [1, 2, 3, 4] },
};
const ids: Record<string, Expected> = { id: { dtype: 'int64', shape: [3], data: [1n, -2n, 9007199254740991n] } };

const VALID: Array<[string, Protocol, Signature, unknown, Record<string, Expected>]> = [
  ['inputs: nested rows', 'mlflow', LINEAR, { inputs: [[1, 2, 3, 4], [0.1, 6, 7, 8]] }, x2],
  ['inputs: keyed by name', 'mlflow', LINEAR, { inputs: { x: [[1, 2, 3, 4], [0.1, 6, 7, 8]] } }, x2],
  ['instances: rows', 'mlflow', LINEAR, { instances: [[1, 2, 3, 4], [0.1, 6, 7, 8]] }, x2],
  ['instances: objects keyed by name', 'mlflow', LINEAR, { instances: [{ x: [1, 2, 3, 4] }, { x: [0.1, 6, 7, 8] }] }, x2],
  ['dataframe_split: K named columns', 'mlflow', LINEAR, { dataframe_split: { columns: ['a', 'b', 'c', 'd'], data: [[1, 2, 3, 4], [0.1, 6, 7, 8]] } }, x2],
  ['dataframe_split: pandas int columns and index', 'mlflow', LINEAR, { dataframe_split: { columns: [0, 1, 2, 3], index: [7, 8], data: [[1, 2, 3, 4], [0.1, 6, 7, 8]] } }, x2],
  ['dataframe_split: no columns', 'mlflow', LINEAR, { dataframe_split: { data: [[1, 2, 3, 4], [0.1, 6, 7, 8]] } }, x2],
  ['dataframe_split: one column named after the input', 'mlflow', LINEAR, { dataframe_split: { columns: ['x'], data: [[[1, 2, 3, 4]], [[0.1, 6, 7, 8]]] } }, x2],
  ['dataframe_records: K columns', 'mlflow', LINEAR, { dataframe_records: [{ a: 1, b: 2, c: 3, d: 4 }, { a: 0.1, b: 6, c: 7, d: 8 }] }, x2],
  ['dataframe_records: column named after the input', 'mlflow', LINEAR, { dataframe_records: [{ x: [1, 2, 3, 4] }] }, x1],
  ['v2: flat data', 'v2', LINEAR, { inputs: [{ name: 'x', shape: [2, 4], datatype: 'FP32', data: [1, 2, 3, 4, 0.1, 6, 7, 8] }] }, x2],
  ['v2: nested data', 'v2', LINEAR, { id: 'r1', inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [[1, 2, 3, 4]], parameters: {} }] }, x1],

  ['two inputs: dataframe_split by name (scalar column → [-1, 1])', 'mlflow', TWO, { dataframe_split: { columns: ['b', 'a'], data: [[[1, 2], 1.5], [[3, 4], 2.5]] } }, ab],
  ['two inputs: dataframe_records', 'mlflow', TWO, { dataframe_records: [{ a: 1.5, b: [1, 2] }, { a: 2.5, b: [3, 4] }] }, ab],
  ['two inputs: instances objects', 'mlflow', TWO, { instances: [{ a: 1.5, b: [1, 2] }, { a: 2.5, b: [3, 4] }] }, ab],
  ['two inputs: inputs object', 'mlflow', TWO, { inputs: { a: [[1.5], [2.5]], b: [[1, 2], [3, 4]] } }, ab],
  ['two inputs: v2 flat and nested', 'v2', TWO, { inputs: [{ name: 'b', shape: [2, 2], datatype: 'INT32', data: [[1, 2], [3, 4]] }, { name: 'a', shape: [2, 1], datatype: 'FP64', data: [1.5, 2.5] }] }, ab],

  ['int64: inputs', 'mlflow', INT64, { inputs: [1, -2, 9007199254740991] }, ids],
  ['int64: dataframe_split column by name', 'mlflow', INT64, { dataframe_split: { columns: ['id'], data: [[1], [-2], [9007199254740991]] } }, ids],
  ['int64: dataframe_split other column ([N, 1] → [-1])', 'mlflow', INT64, { dataframe_split: { columns: ['n'], data: [[1], [-2], [9007199254740991]] } }, ids],
  ['int64: v2', 'v2', INT64, { inputs: [{ name: 'id', shape: [3], datatype: 'INT64', data: [1, -2, 9007199254740991] }] }, ids],
  ['string: instances', 'mlflow', STRING, { instances: ['hi', ''] }, { text: { dtype: 'string', shape: [2], data: ['hi', ''] } }],
  ['string: dataframe_records', 'mlflow', STRING, { dataframe_records: [{ text: 'hi' }, { text: '' }] }, { text: { dtype: 'string', shape: [2], data: ['hi', ''] } }],
  ['string: v2 BYTES', 'v2', STRING, { inputs: [{ name: 'text', shape: [2], datatype: 'BYTES', data: ['hi', ''] }] }, { text: { dtype: 'string', shape: [2], data: ['hi', ''] } }],
  ['bool: inputs', 'mlflow', BOOL, { inputs: { flag: [true, false] } }, { flag: { dtype: 'bool', shape: [2], data: [true, false] } }],
  ['bool: v2 BOOL', 'v2', BOOL, { inputs: [{ name: 'flag', shape: [2], datatype: 'BOOL', data: [true, false] }] }, { flag: { dtype: 'bool', shape: [2], data: [true, false] } }],
];

for (const [name, protocol, signature, body, expected] of VALID) {
  test(`decode ${protocol} ${name}`, () => {
    const inputs = decode(protocol, body, signature);
    assert.deepEqual(plain(inputs), expected);
    for (const t of Object.values(inputs)) assert.ok(t.dtype !== 'int64' || t.data instanceof BigInt64Array);
  });
}

test('decode mlflow returns format and params', () => {
  const r = decodeMlflowRequest({ dataframe_records: [{ a: 1, b: 2, c: 3, d: 4 }], params: { temperature: 0.5 } }, LINEAR);
  assert.equal(r.format, 'dataframe_records');
  assert.deepEqual(r.params, { temperature: 0.5 });
  assert.equal(decodeMlflowRequest({ inputs: [[1, 2, 3, 4]] }, LINEAR).params, undefined);
});

test('decode v2 returns id, parameters and requested outputs', () => {
  const r = decodeV2Request({ id: 'r1', parameters: { p: 1 }, inputs: [{ name: 'id', shape: [1], datatype: 'INT64', data: [5] }], outputs: [{ name: 'o' }] }, { ...INT64, outputs: [{ name: 'o', dtype: 'int64', shape: [-1] }] });
  assert.equal(r.id, 'r1');
  assert.deepEqual(r.parameters, { p: 1 });
  assert.deepEqual(r.requestedOutputs, ['o']);
  assert.equal(decodeV2Request({ inputs: [{ name: 'id', shape: [0], datatype: 'INT64', data: [] }] }, INT64).requestedOutputs, undefined);
});

const deep = (depth: number): unknown => (depth === 0 ? 1 : [deep(depth - 1)]);

const INVALID: Array<[string, Protocol, Signature, unknown, RegExp]> = [
  ['body not an object', 'mlflow', LINEAR, [[1, 2, 3, 4]], /'request body'.*exactly one of dataframe_split, dataframe_records, instances, inputs/],
  ['no format', 'mlflow', LINEAR, { params: {} }, /'request body'.*exactly one of/],
  ['two formats', 'mlflow', LINEAR, { inputs: [[1, 2, 3, 4]], instances: [[1, 2, 3, 4]] }, /"instances and inputs" for 'request body'/],
  ['unknown top-level key', 'mlflow', LINEAR, { inputs: [[1, 2, 3, 4]], input: 1 }, /'input'.*allowed: dataframe_split, dataframe_records, instances, inputs, params/],
  ['params not an object', 'mlflow', LINEAR, { inputs: [[1, 2, 3, 4]], params: [1] }, /'params'/],
  ['wrong input name', 'mlflow', LINEAR, { inputs: { z: [[1, 2, 3, 4]] } }, /'inputs\.z'.*input name of this model \(x\)/],
  ['missing input', 'mlflow', TWO, { inputs: { a: [[1]] } }, /'inputs'.*missing 'b'/],
  ['wrong shape', 'mlflow', LINEAR, { inputs: [[1, 2, 3]] }, /'inputs'.*shape \[-1, 4\].*got shape \[1, 3\]/],
  ['wrong rank', 'mlflow', LINEAR, { instances: [1, 2, 3, 4] }, /'instances'.*shape \[-1, 4\]/],
  ['ragged rows', 'mlflow', LINEAR, { inputs: [[1, 2, 3, 4], [1, 2, 3]] }, /'inputs\[1\]'.*array of 4 elements/],
  ['array in place of a number', 'mlflow', LINEAR, { inputs: [[1, 2, 3, [4]]] }, /'inputs\[0\]\[3\]'.*float32/],
  ['string number', 'mlflow', LINEAR, { instances: [[1, 2, 3, '4']] }, /"4" for 'instances\[0\]\[3\]'.*float32 range for input 'x'/],
  ['null', 'mlflow', LINEAR, { inputs: { x: [[1, null, 3, 4]] } }, /null for 'inputs\.x\[0\]\[1\]'/],
  ['NaN string', 'mlflow', LINEAR, { inputs: [[1, 2, 'NaN', 4]] }, /'inputs\[0\]\[2\]'/],
  ['NaN number', 'mlflow', LINEAR, { inputs: [[1, 2, NaN, 4]] }, /'inputs\[0\]\[2\]'/],
  ['float32 overflow', 'mlflow', LINEAR, { inputs: [[1, 2, 3, 1e39]] }, /'inputs\[0\]\[3\]'.*float32/],
  ['nesting too deep', 'mlflow', LINEAR, { inputs: deep(40) }, /'inputs'.*at most 32/],
  ['two formats list rows for two inputs', 'mlflow', TWO, { instances: [[1.5, [1, 2]]] }, /'instances'.*object keyed by input name.*a, b/],
  ['dataframe_split unknown key', 'mlflow', LINEAR, { dataframe_split: { colums: ['a'], data: [] } }, /'dataframe_split\.colums'.*columns, data, index/],
  ['dataframe_split short row', 'mlflow', LINEAR, { dataframe_split: { columns: ['a', 'b', 'c', 'd'], data: [[1, 2, 3, 4], [1, 2, 3]] } }, /'dataframe_split\.data\[1\]'.*4 cell values/],
  ['dataframe_split bad cell', 'mlflow', LINEAR, { dataframe_split: { columns: ['a', 'b', 'c', 'd'], data: [[1, 2, 3, 4], [1, 2, true, 4]] } }, /'dataframe_split\.data\[1\]\[2\]'.*float32/],
  ['dataframe_split wrong column count', 'mlflow', LINEAR, { dataframe_split: { columns: ['a', 'b', 'c'], data: [[1, 2, 3]] } }, /'dataframe_split\.data'.*shape \[-1, 4\].*got shape \[1, 3\]/],
  ['dataframe_split index length', 'mlflow', LINEAR, { dataframe_split: { columns: ['a', 'b', 'c', 'd'], index: [0], data: [[1, 2, 3, 4], [1, 2, 3, 4]] } }, /'dataframe_split\.index'.*2 row labels/],
  ['dataframe_split unknown column', 'mlflow', TWO, { dataframe_split: { columns: ['a', 'c'], data: [[1, [1, 2]]] } }, /'dataframe_split\.columns\[1\]'.*\(a, b\)/],
  ['dataframe_split duplicate column', 'mlflow', TWO, { dataframe_split: { columns: ['a', 'a'], data: [[1, 2]] } }, /'dataframe_split\.columns\[1\]'.*once/],
  ['dataframe_split missing column', 'mlflow', TWO, { dataframe_split: { columns: ['a'], data: [[1]] } }, /'dataframe_split\.columns'.*missing 'b'/],
  ['dataframe_split no columns, two inputs', 'mlflow', TWO, { dataframe_split: { data: [[1, [1, 2]]] } }, /'dataframe_split\.columns'.*column names/],
  ['dataframe_split ragged array cells', 'mlflow', TWO, { dataframe_split: { columns: ['a', 'b'], data: [[1, [1, 2]], [2, [3]]] } }, /'dataframe_split\.data\[1\]\[1\]'.*array of 2/],
  ['dataframe_records not objects', 'mlflow', LINEAR, { dataframe_records: [[1, 2, 3, 4]] }, /'dataframe_records\[0\]'.*row object keyed by column name/],
  ['dataframe_records missing key', 'mlflow', LINEAR, { dataframe_records: [{ a: 1, b: 2, c: 3, d: 4 }, { a: 1, b: 2, c: 3 }] }, /'dataframe_records\[1\]'.*same keys.*a, b, c, d/],
  ['dataframe_records extra key', 'mlflow', LINEAR, { dataframe_records: [{ a: 1, b: 2, c: 3, d: 4 }, { a: 1, b: 2, c: 3, e: 4 }] }, /'dataframe_records\[1\]\.e'/],
  ['dataframe_records bad cell', 'mlflow', TWO, { dataframe_records: [{ a: 1, b: [1, 2] }, { a: 'x', b: [1, 2] }] }, /'dataframe_records\[1\]\.a'.*float64/],
  ['instances unknown key', 'mlflow', TWO, { instances: [{ a: 1, b: [1, 2], c: 3 }] }, /'instances\[0\]\.c'.*input name of this model \(a, b\)/],
  ['non-integral int64', 'mlflow', INT64, { inputs: [1, 1.5] }, /'inputs\[1\]'.*integer.*int64/],
  ['int64 beyond 2\^53', 'mlflow', INT64, { inputs: [2 ** 60] }, /'inputs\[0\]'.*int64/],
  ['int32 out of range', 'mlflow', TWO, { inputs: { a: [[1]], b: [[1, 2 ** 31]] } }, /'inputs\.b\[0\]\[1\]'.*\[-2147483648, 2147483647\]/],
  ['bool given 1', 'mlflow', BOOL, { inputs: [true, 1] }, /'inputs\[1\]'.*boolean/],
  ['string given a number', 'mlflow', STRING, { instances: ['a', 5] }, /'instances\[1\]'.*a string/],

  ['v2 body not an object', 'v2', LINEAR, 'x', /'request body'/],
  ['v2 unknown top-level key', 'v2', LINEAR, { inputs: [], model: 'm' }, /'model'.*allowed: id, parameters, inputs, outputs/],
  ['v2 inputs not a list', 'v2', LINEAR, { inputs: {} }, /'inputs'.*list of input tensors/],
  ['v2 id not a string', 'v2', INT64, { id: 1, inputs: [] }, /'id'.*a string/],
  ['v2 wrong datatype', 'v2', LINEAR, { inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP64', data: [1, 2, 3, 4] }] }, /"FP64" for 'inputs\[0\]\.datatype'.*FP32 \(input 'x' is float32\)/],
  ['v2 unknown datatype', 'v2', LINEAR, { inputs: [{ name: 'x', shape: [1, 4], datatype: 'BF16', data: [1, 2, 3, 4] }] }, /'inputs\[0\]\.datatype'.*FP32/],
  ['v2 element count mismatch', 'v2', LINEAR, { inputs: [{ name: 'x', shape: [2, 4], datatype: 'FP32', data: [1, 2, 3, 4] }] }, /'inputs\[0\]\.data'.*8 elements for shape \[2, 4\] \(got 4\)/],
  ['v2 nested data not matching shape', 'v2', LINEAR, { inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [[1, 2], [3, 4]] }] }, /'inputs\[0\]\.data'.*nested data of shape \[1, 4\] \(got \[2, 2\]\)/],
  ['v2 ragged nested data', 'v2', LINEAR, { inputs: [{ name: 'x', shape: [2, 4], datatype: 'FP32', data: [[1, 2, 3, 4], [1, 2, 3]] }] }, /'inputs\[0\]\.data\[1\]'/],
  ['v2 shape vs signature', 'v2', LINEAR, { inputs: [{ name: 'x', shape: [1, 3], datatype: 'FP32', data: [1, 2, 3] }] }, /'inputs\[0\]\.shape'.*\[-1, 4\]/],
  ['v2 negative shape', 'v2', LINEAR, { inputs: [{ name: 'x', shape: [-1, 4], datatype: 'FP32', data: [1, 2, 3, 4] }] }, /'inputs\[0\]\.shape'.*non-negative integers/],
  ['v2 data not an array', 'v2', INT64, { inputs: [{ name: 'id', shape: [1], datatype: 'INT64', data: 1 }] }, /'inputs\[0\]\.data'.*array of 1 elements/],
  ['v2 bad element', 'v2', LINEAR, { inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [1, 2, null, 4] }] }, /null for 'inputs\[0\]\.data\[2\]'/],
  ['v2 bad nested element', 'v2', LINEAR, { inputs: [{ name: 'x', shape: [2, 4], datatype: 'FP32', data: [[1, 2, 3, 4], ['1', 2, 3, 4]] }] }, /'inputs\[0\]\.data\[1\]\[0\]'/],
  ['v2 non-integral INT64', 'v2', INT64, { inputs: [{ name: 'id', shape: [1], datatype: 'INT64', data: [0.5] }] }, /'inputs\[0\]\.data\[0\]'.*integer/],
  ['v2 unknown input', 'v2', LINEAR, { inputs: [{ name: 'y', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3, 4] }] }, /'inputs\[0\]\.name'.*\(x\)/],
  ['v2 duplicate input', 'v2', INT64, { inputs: [{ name: 'id', shape: [1], datatype: 'INT64', data: [1] }, { name: 'id', shape: [1], datatype: 'INT64', data: [1] }] }, /'inputs\[1\]\.name'.*once/],
  ['v2 missing input', 'v2', TWO, { inputs: [{ name: 'a', shape: [1, 1], datatype: 'FP64', data: [1] }] }, /'inputs'.*missing 'b'/],
  ['v2 unknown key in input', 'v2', INT64, { inputs: [{ name: 'id', shape: [1], datatype: 'INT64', data: [1], contents: {} }] }, /'inputs\[0\]\.contents'/],
  ['v2 unknown requested output', 'v2', INT64, { inputs: [{ name: 'id', shape: [1], datatype: 'INT64', data: [1] }], outputs: [{ name: 'nope' }] }, /'outputs\[0\]\.name'/],
];

for (const [name, protocol, signature, body, message] of INVALID) {
  test(`reject ${protocol} ${name}`, () => {
    assert.throws(() => decode(protocol, body, signature), (err: unknown) => {
      assert.ok(err instanceof FerryError, `not a FerryError: ${String(err)}`);
      assert.equal(err.status, 400);
      assert.equal(err.code, 'INVALID_PARAMETER_VALUE');
      assert.match(err.message, message);
      return true;
    });
  });
}

const y = (...v: number[]): Tensor => ({ dtype: 'float32', shape: [v.length, 1], data: Float32Array.from(v) });
const label: Tensor = { dtype: 'int64', shape: [2], data: BigInt64Array.from([0n, 1n]) };
const probabilities: OutputValue = { dtype: 'map', data: [{ '0': 0.75, '1': 0.25 }, { '0': 0.5, '1': 0.5 }] };
const ALL_FORMATS: MlflowFormat[] = ['dataframe_split', 'dataframe_records', 'instances', 'inputs'];

test('encode mlflow: one output is its rows, whatever the format', () => {
  for (const format of ALL_FORMATS) {
    assert.deepEqual(encodeMlflowResponse({ y: y(1, 2) }, format), { predictions: [[1], [2]] });
    assert.deepEqual(encodeMlflowResponse({ label }, format), { predictions: [0, 1] });
    assert.deepEqual(encodeMlflowResponse({ probabilities }, format), { predictions: probabilities.data });
  }
  const scalar: Tensor = { dtype: 'float64', shape: [], data: Float64Array.of(3) };
  assert.deepEqual(encodeMlflowResponse({ s: scalar }, 'inputs'), { predictions: 3 });
  const cube: Tensor = { dtype: 'int8', shape: [2, 2, 2], data: Int8Array.of(1, 2, 3, 4, 5, 6, 7, 8) };
  assert.deepEqual(encodeMlflowResponse({ c: cube }, 'instances'), { predictions: [[[1, 2], [3, 4]], [[5, 6], [7, 8]]] });
});

test('encode mlflow: several outputs are records for dataframes, columns otherwise', () => {
  const outputs = { label, probabilities, y: y(1, 2) };
  const records = [{ label: 0, probabilities: { '0': 0.75, '1': 0.25 }, y: [1] }, { label: 1, probabilities: { '0': 0.5, '1': 0.5 }, y: [2] }];
  assert.deepEqual(encodeMlflowResponse(outputs, 'dataframe_split'), { predictions: records });
  assert.deepEqual(encodeMlflowResponse(outputs, 'dataframe_records'), { predictions: records });
  const columns = { label: [0, 1], probabilities: probabilities.data, y: [[1], [2]] };
  assert.deepEqual(encodeMlflowResponse(outputs, 'instances'), { predictions: columns });
  assert.deepEqual(encodeMlflowResponse(outputs, 'inputs'), { predictions: columns });
});

test('encode mlflow: records need equal row counts', () => {
  assert.throws(() => encodeMlflowResponse({ label, y: y(1, 2, 3) }, 'dataframe_split'), (err: unknown) =>
    err instanceof FerryError && err.code === 'MODEL_ERROR' && /label: 2, y: 3/.test(err.message));
});

test('encode: int64/uint64 become JSON numbers', () => {
  const big: Tensor = { dtype: 'uint64', shape: [2], data: BigUint64Array.from([7n, 2n ** 53n]) };
  const mlflow = encodeMlflowResponse({ big, label }, 'dataframe_records');
  assert.equal(JSON.stringify(mlflow), '{"predictions":[{"big":7,"label":0},{"big":9007199254740992,"label":1}]}');
  const v2 = encodeV2Response({ big }, { modelName: 'm' });
  assert.equal(JSON.stringify(v2), '{"model_name":"m","outputs":[{"name":"big","datatype":"UINT64","shape":[2],"data":[7,9007199254740992]}]}');
});

test('encode v2: requested outputs in requested order, MapSequence as JSON text', () => {
  const outputs = { label, probabilities, y: y(1, 2) };
  const all = encodeV2Response(outputs, { modelName: 'iris', modelVersion: '3', id: 'r1' });
  assert.deepEqual(all.outputs.map((o) => o.name), ['label', 'probabilities', 'y']);
  assert.equal(all.model_version, '3');
  assert.equal(all.id, 'r1');
  assert.equal(Object.hasOwn(all, 'parameters'), false);
  const some = encodeV2Response(outputs, { modelName: 'iris', requestedOutputs: ['y', 'probabilities'], parameters: { a: 1 } });
  assert.deepEqual(some, {
    model_name: 'iris',
    parameters: { a: 1 },
    outputs: [
      { name: 'y', datatype: 'FP32', shape: [2, 1], data: [1, 2] },
      { name: 'probabilities', datatype: 'BYTES', shape: [2], data: ['{"0":0.75,"1":0.25}', '{"0":0.5,"1":0.5}'] },
    ],
  });
  assert.throws(() => encodeV2Response(outputs, { modelName: 'iris', requestedOutputs: ['y', 'nope'] }), (err: unknown) =>
    err instanceof FerryError && err.status === 400 && /'outputs\[1\]\.name'/.test(err.message));
});

test('v2 metadata and datatype mapping', () => {
  assert.deepEqual(v2ModelMetadata('iris', '3', TWO, 'onnxruntime_onnx'), {
    name: 'iris',
    versions: ['3'],
    platform: 'onnxruntime_onnx',
    inputs: [{ name: 'a', datatype: 'FP64', shape: [-1, 1] }, { name: 'b', datatype: 'INT32', shape: [-1, 2] }],
    outputs: [{ name: 'label', datatype: 'INT64', shape: [-1] }, { name: 'probabilities', datatype: 'BYTES', shape: [-1] }],
  });
  assert.equal(Object.hasOwn(v2ModelMetadata('iris', undefined, LINEAR, 'p'), 'versions'), false);
  for (const dtype of DTYPES) assert.equal(v2ToDtype(dtypeToV2(dtype)), dtype);
  assert.equal(dtypeToV2('float16'), 'FP16');
  assert.equal(dtypeToV2('string'), 'BYTES');
});
