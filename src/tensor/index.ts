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

export type OutputValue = Tensor | MapSequence;

export interface Signature {
  inputs: TensorSpec[];
  outputs: Array<TensorSpec | { name: string; dtype: 'map'; shape: undefined }>;
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
