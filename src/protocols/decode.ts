/**
 * JSON → tensor decoding shared by every protocol: shape inference, the shape check against the
 * signature, and one routine that validates nested arrays and writes their elements straight into
 * preallocated typed storage. Every failure is a 400 that names the offending field.
 */
import { FerryError, invalidParameter } from '../errors.js';
import { allocate, elementCount, formatShape, shapeMatches, type DType, type Signature, type Tensor, type TensorData, type TensorSpec } from '../tensor/index.js';

/**
 * Deepest nesting accepted. Bounds recursion on hostile input (a 10 000-deep `[[[[…]]]]` must be a
 * 400, not a stack overflow); real models stay far below it (numpy's own limit is 32, ONNX ≤ 8).
 */
export const MAX_RANK = 32;

/** A plain JSON object (not null, not an array). */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Throws a 400 naming `field` for the first own key of `value` that is not in `allowed`. */
export function checkKeys(value: Record<string, unknown>, allowed: readonly string[], field: string): void {
  for (const key in value) {
    if (!allowed.includes(key)) {
      throw invalidParameter(field === '' ? key : `${field}.${key}`, value[key], `a known key (allowed: ${allowed.join(', ')})`);
    }
  }
}

/** Renders a concrete shape for messages: [2, 4] → "[2, 4]". */
function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/**
 * The dimensions of a nested array, read along its first elements: `[[1, 2, 3], [4, 5, 6]]` → [2, 3],
 * a scalar → []. Raggedness is found later, by `readElements`.
 */
export function inferDims(value: unknown, field: string): number[] {
  const dims: number[] = [];
  let v = value;
  while (Array.isArray(v)) {
    if (dims.length === MAX_RANK) throw invalidParameter(field, value, `at most ${MAX_RANK} nested array levels`);
    dims.push(v.length);
    if (v.length === 0) break;
    v = v[0];
  }
  return dims;
}

/** Throws a 400 unless `shape` fits the input's declared shape. */
export function checkShape(spec: TensorSpec, shape: readonly number[], field: string, value: unknown): void {
  if (!shapeMatches(spec.shape, shape)) {
    throw invalidParameter(field, value, `shape ${formatShape(spec.shape)} for input '${spec.name}' (got shape ${shapeText(shape)})`);
  }
}

/**
 * A tensor's JSON elements laid out as `count` equally shaped pieces in row-major order: one nested
 * array holding the whole tensor, or one dataframe cell per piece. `where` is only called to build
 * an error message.
 */
export interface Pieces {
  readonly count: number;
  at(index: number): unknown;
  where(index: number): string;
}

/** The whole tensor as one JSON value at `field`. */
export function wholeValue(value: unknown, field: string): Pieces {
  return { count: 1, at: () => value, where: () => field };
}

/** How one JSON element is checked and stored for a dtype. */
interface ElementRule {
  /** `number` stores into a Number typed array, `bigint` into a BigInt one; the others as is. */
  kind: 'number' | 'bigint' | 'boolean' | 'string';
  integral: boolean;
  min: number;
  max: number;
  expected: string;
}

function numberRule(dtype: DType, min: number, max: number, integral: boolean): ElementRule {
  const big = dtype === 'int64' || dtype === 'uint64';
  const expected = integral
    ? `an integer in [${min}, ${max}] (${dtype}${big ? '; JSON numbers beyond 2^53 are not exact' : ''})`
    : `a finite number within ${dtype} range`;
  return { kind: big ? 'bigint' : 'number', integral, min, max, expected };
}

const FLOAT32_MAX = 3.4028234663852886e38;
const FLOAT16_MAX = 65504;

const RULES: Record<DType, ElementRule> = {
  float16: numberRule('float16', -FLOAT16_MAX, FLOAT16_MAX, false),
  float32: numberRule('float32', -FLOAT32_MAX, FLOAT32_MAX, false),
  float64: numberRule('float64', -Number.MAX_VALUE, Number.MAX_VALUE, false),
  int8: numberRule('int8', -128, 127, true),
  int16: numberRule('int16', -32768, 32767, true),
  int32: numberRule('int32', -2147483648, 2147483647, true),
  // A JSON number past 2^53 has already been rounded by the parser: refuse it instead of
  // silently feeding the model a different id.
  int64: numberRule('int64', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, true),
  uint8: numberRule('uint8', 0, 255, true),
  uint16: numberRule('uint16', 0, 65535, true),
  uint32: numberRule('uint32', 0, 4294967295, true),
  uint64: numberRule('uint64', 0, Number.MAX_SAFE_INTEGER, true),
  bool: { kind: 'boolean', integral: false, min: 0, max: 0, expected: 'a boolean (true or false)' },
  string: { kind: 'string', integral: false, min: 0, max: 0, expected: 'a string' },
};

/** Checks one JSON element against `rule` and stores it at `out[i]`; false when it does not fit. */
function writeElement(out: TensorData, i: number, v: unknown, rule: ElementRule): boolean {
  if (rule.kind === 'boolean' || rule.kind === 'string') {
    if (typeof v !== rule.kind) return false;
    (out as unknown[])[i] = v;
    return true;
  }
  // `!(a && b)` rather than `a || b` so that NaN fails too.
  if (typeof v !== 'number' || !(v >= rule.min && v <= rule.max) || (rule.integral && !Number.isInteger(v))) return false;
  if (rule.kind === 'bigint') (out as BigInt64Array)[i] = BigInt(v);
  else (out as Float64Array)[i] = v;
  return true;
}

/**
 * Validates and copies `pieces` (each of shape `dims`) into new storage for `spec.dtype`.
 * Two passes: the first checks the array structure only (every level has the length `dims` says),
 * so that a short first row cannot make us allocate a tensor larger than the request; the second
 * writes the leaves, checking each element's type and range.
 */
class ElementReader {
  private readonly idx: number[];
  private readonly rule: ElementRule;
  private readonly out: TensorData;

  constructor(private readonly pieces: Pieces, private readonly dims: readonly number[], private readonly spec: TensorSpec) {
    this.idx = new Array<number>(dims.length).fill(0);
    this.rule = RULES[spec.dtype];
    if (dims.length > 0) for (let p = 0; p < pieces.count; p++) this.checkStructure(p, pieces.at(p), 0);
    this.out = allocate(spec.dtype, pieces.count * elementCount(dims));
  }

  read(): TensorData {
    let offset = 0;
    for (let p = 0; p < this.pieces.count; p++) offset = this.fill(p, this.pieces.at(p), 0, offset);
    return this.out;
  }

  private checkStructure(piece: number, v: unknown, depth: number): void {
    if (depth === this.dims.length) return;
    const n = this.dims[depth]!;
    if (!Array.isArray(v) || v.length !== n) {
      throw this.fail(piece, depth, v, `an array of ${n} elements, like the first one (no ragged arrays)`);
    }
    if (depth + 1 === this.dims.length) return; // leaves are checked while filling
    for (let i = 0; i < n; i++) {
      this.idx[depth] = i;
      this.checkStructure(piece, v[i], depth + 1);
    }
  }

  /** Writes the leaves of `v` (structure already checked) from `offset`; returns the next offset. */
  private fill(piece: number, v: unknown, depth: number, offset: number): number {
    const { out, rule } = this;
    if (depth === this.dims.length) {
      if (!writeElement(out, offset, v, rule)) throw this.fail(piece, depth, v, rule.expected);
      return offset + 1;
    }
    const arr = v as unknown[];
    if (depth + 1 === this.dims.length) {
      for (let i = 0; i < arr.length; i++) {
        if (!writeElement(out, offset + i, arr[i], rule)) {
          this.idx[depth] = i;
          throw this.fail(piece, depth + 1, arr[i], rule.expected);
        }
      }
      return offset + arr.length;
    }
    for (let i = 0; i < arr.length; i++) {
      this.idx[depth] = i;
      offset = this.fill(piece, arr[i], depth + 1, offset);
    }
    return offset;
  }

  private fail(piece: number, depth: number, value: unknown, expected: string): FerryError {
    let path = this.pieces.where(piece);
    for (let d = 0; d < depth; d++) path += `[${this.idx[d]}]`;
    return invalidParameter(path, value, `${expected} for input '${this.spec.name}'`);
  }
}

/** Validates `pieces` (each shaped `pieceDims`) and returns them as a tensor of `shape`. */
export function readTensor(pieces: Pieces, pieceDims: readonly number[], spec: TensorSpec, shape: number[]): Tensor {
  return { dtype: spec.dtype, shape, data: new ElementReader(pieces, pieceDims, spec).read() };
}

/** One nested JSON array (or scalar) at `field` as the tensor for `spec`, shape inferred from the nesting. */
export function nestedTensor(value: unknown, spec: TensorSpec, field: string): Tensor {
  const dims = inferDims(value, field);
  checkShape(spec, dims, field, value);
  return readTensor(wholeValue(value, field), dims, spec, dims);
}

const specIndexes = new WeakMap<Signature, Map<string, TensorSpec>>();

/** Looks up an input by name, or throws a 400 at `field` listing the model's inputs. */
export function inputSpec(signature: Signature, name: string, field: string, value: unknown): TensorSpec {
  // Indexed once per signature: this runs for every input of every request.
  let byName = specIndexes.get(signature);
  if (byName === undefined) {
    byName = new Map(signature.inputs.map((s) => [s.name, s]));
    specIndexes.set(signature, byName);
  }
  const spec = byName.get(name);
  if (spec === undefined) throw invalidParameter(field, value, `an input name of this model (${signature.inputs.map((s) => s.name).join(', ')})`);
  return spec;
}

/** Throws a 400 at `field` for the first signature input absent from `got`. */
export function checkAllInputs(specs: readonly TensorSpec[], got: Record<string, Tensor>, field: string, value: unknown): void {
  for (const spec of specs) {
    if (!Object.hasOwn(got, spec.name)) {
      throw invalidParameter(field, value, `a value for every model input (${specs.map((s) => s.name).join(', ')}); missing '${spec.name}'`);
    }
  }
}

/**
 * Throws a 400 BAD_REQUEST when a decoded request carries more than `maxRows` rows: the first
 * dimension of its largest input (a scalar input is one row). Called after decoding, whose
 * allocations the JSON value limit already bounds; this bounds what the model is asked to compute
 * and allocate for its outputs. Example: inputs of shape [200000, 4] with maxRows 100000 → 400
 * "Request has 200000 rows, more than 100000 ...".
 */
export function checkRowCount(inputs: Record<string, Tensor>, maxRows: number): void {
  let rows = 0;
  for (const name in inputs) rows = Math.max(rows, inputs[name]!.shape[0] ?? 1);
  if (rows > maxRows) {
    throw new FerryError('BAD_REQUEST', `Request has ${rows} rows, more than ${maxRows} (the server's maxRowsPerRequest); send them in smaller requests.`);
  }
}
