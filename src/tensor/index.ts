/**
 * Tensors and signatures: the internal currency between protocols (wire formats) and flavors
 * (model runtimes). Protocol codecs turn request bodies into `Tensor`s validated against a
 * `Signature`; flavors take and return `Tensor`s. Shapes use -1 for a dynamic dimension.
 */

export const DTYPES = [
  'float16', 'float32', 'float64',
  'int8', 'int16', 'int32', 'int64',
  'uint8', 'uint16', 'uint32', 'uint64',
  'bool', 'string',
] as const;
export type DType = (typeof DTYPES)[number];

export function isDType(value: unknown): value is DType {
  return typeof value === 'string' && (DTYPES as readonly string[]).includes(value);
}

/** Element storage per dtype. int64/uint64 use BigInt arrays; float16 is carried as float32 values. */
export type TensorData =
  | Float32Array | Float64Array
  | Int8Array | Int16Array | Int32Array | BigInt64Array
  | Uint8Array | Uint16Array | Uint32Array | BigUint64Array
  | boolean[] | string[];

export interface Tensor {
  dtype: DType;
  /** Concrete dimensions (no -1). */
  shape: number[];
  /** Row-major elements; length is the product of `shape`. */
  data: TensorData;
}

export interface TensorSpec {
  name: string;
  dtype: DType;
  /** Dimensions with -1 for dynamic ones; `undefined` when the model does not declare a shape. */
  shape: number[] | undefined;
}

/** A model output that is not a tensor: a sequence of maps (e.g. ONNX ZipMap class probabilities). */
export interface MapSequence {
  dtype: 'map';
  /** One map per row, keyed by class label. */
  data: Array<Record<string, number>>;
}

/**
 * A model output that is not a tensor: one JSON value per row, e.g. a token classifier's list of
 * entities for each text, or whatever records a JS model returns.
 */
export interface JsonSequence {
  dtype: 'json';
  /** One JSON-serializable value per row. */
  data: unknown[];
}

/** An output made of one value per row rather than a tensor. */
export type RowSequence = MapSequence | JsonSequence;

export type OutputValue = Tensor | RowSequence;

/** True for an output that is one value per row (a MapSequence or a JsonSequence). */
export function isRowSequence(value: OutputValue): value is RowSequence {
  return value.dtype === 'map' || value.dtype === 'json';
}

/** How a signature declares a RowSequence output: no shape, one value per input row. */
export interface RowSequenceSpec {
  name: string;
  dtype: RowSequence['dtype'];
  shape: undefined;
}

export interface Signature {
  inputs: TensorSpec[];
  outputs: Array<TensorSpec | RowSequenceSpec>;
}

/** Number of elements a concrete shape holds. */
export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Allocates zeroed storage for `length` elements of `dtype`. */
export function allocate(dtype: DType, length: number): TensorData {
  switch (dtype) {
    case 'float16':
    case 'float32': return new Float32Array(length);
    case 'float64': return new Float64Array(length);
    case 'int8': return new Int8Array(length);
    case 'int16': return new Int16Array(length);
    case 'int32': return new Int32Array(length);
    case 'int64': return new BigInt64Array(length);
    case 'uint8': return new Uint8Array(length);
    case 'uint16': return new Uint16Array(length);
    case 'uint32': return new Uint32Array(length);
    case 'uint64': return new BigUint64Array(length);
    case 'bool': return new Array<boolean>(length).fill(false);
    case 'string': return new Array<string>(length).fill('');
  }
}

/** True when a shape declared with -1 wildcards accepts the concrete `shape`. */
export function shapeMatches(declared: readonly number[] | undefined, shape: readonly number[]): boolean {
  if (declared === undefined) return true;
  if (declared.length !== shape.length) return false;
  return declared.every((d, i) => d < 0 || d === shape[i]);
}

/** Renders a declared shape for messages: [-1, 4] → "[-1, 4]". */
export function formatShape(shape: readonly number[] | undefined): string {
  return shape === undefined ? 'any shape' : `[${shape.join(', ')}]`;
}

/** Rows in a tensor along dim 0: [5, 3] → 5. Throws for a scalar (shape []), which has no rows. */
function rowsOf(t: Tensor): number {
  const rows = t.shape[0];
  if (rows === undefined) throw new Error('a scalar tensor (shape []) has no rows');
  return rows;
}

/** Elements in one row (the product of the trailing dims): [5, 3, 2] → 6. */
function rowLength(t: Tensor): number {
  return elementCount(t.shape.slice(1));
}

/**
 * Stacks tensors along dim 0: [2, 4] + [3, 4] → [5, 4], rows in argument order. Every tensor must
 * have the same dtype and the same trailing dims (the dims after the first); a tensor with 0 rows
 * contributes nothing. The result always owns fresh storage (never shares a buffer with an
 * argument), so the arguments stay usable after the result's buffer is transferred to another
 * thread. Throws an Error (a caller bug, not user input) for an empty list, a scalar, or a mismatch.
 */
export function concatRows(tensors: readonly Tensor[]): Tensor {
  const first = tensors[0];
  if (first === undefined) throw new Error('concatRows needs at least one tensor');
  rowsOf(first);
  const trailing = first.shape.slice(1);
  let rows = 0;
  for (const t of tensors) {
    if (t.dtype !== first.dtype) throw new Error(`concatRows: dtype ${t.dtype} differs from ${first.dtype}`);
    if (t.shape.length !== first.shape.length || t.shape.some((d, i) => i > 0 && d !== first.shape[i])) {
      throw new Error(`concatRows: shape ${formatShape(t.shape)} differs from ${formatShape(first.shape)} after dim 0`);
    }
    rows += rowsOf(t);
  }
  const shape = [rows, ...trailing];
  if (Array.isArray(first.data)) {
    // bool and string tensors: plain arrays.
    const data = (tensors as Tensor[]).flatMap((t) => t.data as unknown[]);
    return { dtype: first.dtype, shape, data: data as boolean[] | string[] };
  }
  const out = allocate(first.dtype, rows * elementCount(trailing)) as TypedTensorData;
  let offset = 0;
  for (const t of tensors) {
    // Same dtype → same typed-array class (allocate() and every producer agree), so set() copies.
    out.set(t.data as never, offset);
    offset += t.data.length;
  }
  return { dtype: first.dtype, shape, data: out };
}

type TypedTensorData = Exclude<TensorData, boolean[] | string[]>;

/**
 * Rows [start, end) of an output along dim 0: a tensor [5, 3] sliced (1, 3) is [2, 3] holding
 * rows 1 and 2; a MapSequence or JsonSequence keeps values 1 and 2. The slice is a copy (it shares no storage with
 * `value`), except that the whole range returns `value` itself. Throws an Error for a scalar or a
 * range outside 0 ≤ start ≤ end ≤ rows.
 */
export function sliceRows(value: OutputValue, start: number, end: number): OutputValue {
  const rows = isRowSequence(value) ? value.data.length : rowsOf(value);
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || start > end || end > rows) {
    throw new Error(`sliceRows: range [${start}, ${end}) is outside 0..${rows}`);
  }
  if (start === 0 && end === rows) return value;
  if (value.dtype === 'map') return { dtype: 'map', data: value.data.slice(start, end) };
  if (value.dtype === 'json') return { dtype: 'json', data: value.data.slice(start, end) };
  const width = rowLength(value);
  return {
    dtype: value.dtype,
    shape: [end - start, ...value.shape.slice(1)],
    data: value.data.slice(start * width, end * width) as TensorData,
  };
}

/** IEEE half (float16) bits ↔ float values: Ferry carries float16 tensors as float32 values (see `TensorData`). */
const halfScratch = new DataView(new ArrayBuffer(4));

/** Rounds a float32 value to the nearest IEEE half (ties to even) and returns its 16 bits. */
export function float32ToHalfBits(value: number): number {
  halfScratch.setFloat32(0, value);
  const x = halfScratch.getUint32(0);
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0); // Inf, NaN
  const e = exp - 127 + 15; // rebias 8-bit → 5-bit exponent
  if (e >= 0x1f) return sign | 0x7c00; // overflow → Inf
  if (e <= 0) {
    if (e < -10) return sign; // underflows to ±0
    const m = mant | 0x800000; // implicit leading 1
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rounded = (m + half - 1 + ((m >>> shift) & 1)) >>> shift;
    return sign | rounded;
  }
  // Round the 23-bit mantissa to 10 bits, ties to even; a carry bumps the exponent correctly.
  const bits = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  return sign | (bits + (rest > 0x1000 || (rest === 0x1000 && (bits & 1) === 1) ? 1 : 0));
}

/** The float value of IEEE half `bits`. */
export function halfBitsToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24; // subnormal
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}
