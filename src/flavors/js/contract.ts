/**
 * The js flavor's data contract: the manifest (`ferry.json`), and the conversion between Ferry's
 * validated tensors and the plain columns a user's `predict(input, params)` sees and returns.
 *
 * Input: one array per signature input, one element per row: a scalar for shape [-1] (string,
 * number, boolean; int64 as a Number), a nested array for [-1, k, ...].
 *   {"inputs": {"text": ["a", "bb"]}} → predict({ text: ["a", "bb"] }, {})
 * Output: the same columns per signature output, each with exactly one element per input row; a
 * model with one output may return the bare array. A `json` output holds any JSON value per row.
 *   return { length: [1, 2] }   or   return [1, 2]
 */
import { FerryError } from '../../errors.js';
import {
  allocate, DTYPES, elementCount, type DType, type OutputValue, type RowSequenceSpec, type Signature, type Tensor, type TensorData, type TensorSpec,
} from '../../tensor/index.js';
import { checkManifestKeys, insideArtifact, isJsonObject, readManifest } from '../manifest.js';

/** The module `main` defaults to. */
export const DEFAULT_MAIN = 'model.mjs';
/** How long one `predict` call may run before the module is restarted; ferry.json `timeout_ms` overrides it. */
export const DEFAULT_TIMEOUT_MS = 30_000;
const MANIFEST_KEYS = ['signature', 'params', 'timeout_ms'] as const;

/** What ferry.json says about a js model. */
export interface JsManifest {
  signature: Signature;
  /** Handed to the module's `load(context)` as `context.params`. */
  params: Record<string, unknown>;
  timeoutMs: number;
}

function invalid(problem: string): FerryError {
  return new FerryError('INVALID_PARAMETER_VALUE', `Invalid js model: ${problem}.`);
}

/** Reads and checks `dir`'s ferry.json; a js model must declare its signature there. */
export async function readJsManifest(dir: string): Promise<JsManifest> {
  const manifest = await readManifest(dir);
  if (manifest === undefined) throw invalid('ferry.json not found; it declares the module ("main") and its "signature"');
  checkManifestKeys(manifest, 'js', MANIFEST_KEYS);
  const params = manifest.params ?? {};
  if (!isJsonObject(params)) throw invalid(`ferry.json params must be an object, got ${JSON.stringify(params)}`);
  const timeoutMs = manifest.timeout_ms ?? DEFAULT_TIMEOUT_MS;
  if (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 1) throw invalid(`ferry.json timeout_ms must be a positive integer (milliseconds), got ${JSON.stringify(timeoutMs)}`);
  return { signature: parseSignature(manifest.signature), params, timeoutMs };
}

/** The module path named by ferry.json `main` (or the default), checked to stay inside the directory. */
export function mainOf(modelFile: string): string {
  const main = insideArtifact(modelFile, 'ferry.json main');
  if (!/\.(mjs|js)$/.test(main)) throw invalid(`ferry.json main (${JSON.stringify(modelFile)}) must be an ES module file (.mjs, or .js)`);
  return main;
}

/**
 * `{"inputs": [{"name", "dtype", "shape"}], "outputs": [...]}` with Ferry's dtypes; shapes use -1
 * for a dynamic dimension; an output may be `{"name", "dtype": "json"}` (one JSON value per row).
 */
function parseSignature(value: unknown): Signature {
  if (!isJsonObject(value)) throw invalid('ferry.json needs a "signature": {"inputs": [{"name", "dtype", "shape"}], "outputs": [...]}');
  const list = (key: 'inputs' | 'outputs'): unknown[] => {
    const v = value[key];
    if (!Array.isArray(v) || v.length === 0) throw invalid(`ferry.json signature.${key} must be a non-empty list`);
    return v;
  };
  const names = new Set<string>();
  const spec = (v: unknown, field: string, allowJson: boolean): TensorSpec | RowSequenceSpec => {
    if (!isJsonObject(v) || typeof v.name !== 'string' || v.name === '') throw invalid(`${field} must be an object with a non-empty "name"`);
    if (names.has(v.name)) throw invalid(`${field}.name ${JSON.stringify(v.name)} is used twice`);
    names.add(v.name);
    if (allowJson && v.dtype === 'json') {
      if (v.shape !== undefined) throw invalid(`${field} is a json output, which takes no shape (one value per row)`);
      return { name: v.name, dtype: 'json', shape: undefined };
    }
    if (!(DTYPES as readonly unknown[]).includes(v.dtype)) {
      throw invalid(`${field}.dtype is ${JSON.stringify(v.dtype)}; expected one of ${DTYPES.join(', ')}${allowJson ? ', json' : ''}`);
    }
    const shape = v.shape;
    if (!Array.isArray(shape) || shape.length === 0 || !shape.every((d) => Number.isInteger(d) && (d === -1 || (d as number) > 0))) {
      throw invalid(`${field}.shape must be a list of dimensions (-1 for a dynamic one), rows first, e.g. [-1] or [-1, 4]`);
    }
    return { name: v.name, dtype: v.dtype as DType, shape: shape as number[] };
  };
  const inputs = list('inputs').map((v, i) => spec(v, `signature.inputs[${i}]`, false) as TensorSpec);
  names.clear();
  const outputs = list('outputs').map((v, i) => spec(v, `signature.outputs[${i}]`, true));
  return { inputs, outputs };
}

/** One row of `t` as plain JS values: a scalar for [n], nested arrays for [n, ...]. */
function rowOf(t: Tensor, r: number, rowSize: number): unknown {
  const at = (i: number): unknown => {
    const v = t.data[i];
    return typeof v === 'bigint' ? Number(v) : v;
  };
  const nest = (depth: number, offset: number, stride: number): unknown => {
    if (depth === t.shape.length) return at(offset);
    const n = t.shape[depth] ?? 0;
    const inner = stride / Math.max(n, 1);
    return Array.from({ length: n }, (_, i) => nest(depth + 1, offset + i * inner, inner));
  };
  return nest(1, r * rowSize, rowSize);
}

/** The inputs as the module sees them: one array of rows per input name. */
export function toColumns(inputs: Record<string, Tensor>): Record<string, unknown[]> {
  const columns: Record<string, unknown[]> = {};
  for (const [name, t] of Object.entries(inputs)) {
    const rows = t.shape[0] ?? 1;
    const rowSize = elementCount(t.shape.slice(1));
    columns[name] = Array.from({ length: rows }, (_, r) => rowOf(t, r, rowSize));
  }
  return columns;
}

/** Integer ranges per dtype; int64/uint64 limited to what a Number holds exactly. */
const INT_RANGE: Partial<Record<DType, [number, number]>> = {
  int8: [-128, 127], int16: [-32768, 32767], int32: [-2147483648, 2147483647], int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  uint8: [0, 255], uint16: [0, 65535], uint32: [0, 4294967295], uint64: [0, Number.MAX_SAFE_INTEGER],
};

function modelError(problem: string): FerryError {
  return new FerryError('MODEL_ERROR', `Model error: predict returned ${problem}.`);
}

/** One output column as a tensor of `spec`: rows × the trailing dims (declared, or read from the first row). */
function columnTensor(spec: TensorSpec, column: unknown[]): Tensor {
  const rows = column.length;
  const trailing = (spec.shape ?? [-1]).slice(1);
  const dims = trailing.map((d, i) => {
    if (d > 0) return d;
    let v: unknown = column[0];
    for (let k = 0; k < i; k++) v = Array.isArray(v) ? v[0] : undefined;
    return Array.isArray(v) ? v.length : 0;
  });
  const data: TensorData = allocate(spec.dtype, rows * elementCount(dims));
  const range = INT_RANGE[spec.dtype];
  let offset = 0;
  const put = (v: unknown, where: string): void => {
    let ok: boolean;
    if (spec.dtype === 'string') ok = typeof v === 'string';
    else if (spec.dtype === 'bool') ok = typeof v === 'boolean';
    else ok = typeof v === 'number' && Number.isFinite(v) && (range === undefined || (Number.isInteger(v) && v >= range[0] && v <= range[1]));
    if (!ok) throw modelError(`${JSON.stringify(v) ?? String(v)} at ${where}, not a ${spec.dtype} value`);
    if (spec.dtype === 'int64' || spec.dtype === 'uint64') (data as BigInt64Array)[offset++] = BigInt(v as number);
    else (data as unknown[])[offset++] = v;
  };
  const walk = (v: unknown, depth: number, where: string): void => {
    if (depth === dims.length) return put(v, where);
    const n = dims[depth] ?? 0;
    if (!Array.isArray(v) || v.length !== n) throw modelError(`a value at ${where} that is not a list of ${n} elements (output '${spec.name}' has shape [${(spec.shape ?? []).join(', ')}])`);
    v.forEach((x, i) => walk(x, depth + 1, `${where}[${i}]`));
  };
  column.forEach((v, r) => walk(v, 0, `${spec.name}[${r}]`));
  return { dtype: spec.dtype, shape: [rows, ...dims], data };
}

/**
 * The module's return value as the signature's outputs, each with exactly `rows` rows; anything
 * else is a MODEL_ERROR saying what is wrong.
 */
export function fromColumns(result: unknown, signature: Signature, rows: number): Record<string, OutputValue> {
  const [only] = signature.outputs;
  let columns: Record<string, unknown>;
  if (Array.isArray(result) && signature.outputs.length === 1 && only !== undefined) {
    columns = { [only.name]: result };
  } else if (isJsonObject(result)) {
    columns = result;
  } else {
    const names = signature.outputs.map((o) => `'${o.name}'`).join(', ');
    throw modelError(`${describe(result)}; expected an object with ${names}${signature.outputs.length === 1 ? " (or that one output's list of rows)" : ''}`);
  }
  const outputs: Record<string, OutputValue> = {};
  for (const name of Object.keys(columns)) {
    if (!signature.outputs.some((o) => o.name === name)) throw modelError(`an output '${name}' that ferry.json's signature does not declare`);
  }
  for (const spec of signature.outputs) {
    const column = columns[spec.name];
    if (!Array.isArray(column) || column.length !== rows) {
      throw modelError(`${Array.isArray(column) ? `${column.length} rows` : describe(column)} for output '${spec.name}', expected a list of ${rows} rows (one per input row)`);
    }
    if (spec.dtype === 'json') {
      let data: unknown;
      try {
        data = JSON.parse(JSON.stringify(column)) as unknown;
      } catch (err) {
        throw modelError(`a value for output '${spec.name}' that is not JSON (${(err as Error).message})`);
      }
      outputs[spec.name] = { dtype: 'json', data: data as unknown[] };
    } else if (spec.dtype === 'map') {
      throw modelError(`a map output '${spec.name}', which a js model cannot declare`);
    } else {
      outputs[spec.name] = columnTensor(spec as TensorSpec, column);
    }
  }
  return outputs;
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing (undefined)';
  if (value === null) return 'null';
  return Array.isArray(value) ? 'a list' : `a ${typeof value}`;
}
