/**
 * Reading an .onnx file as a ModelProto (pure JS, onnx-proto) and deriving Ferry's Signature from
 * its graph. Every failure is a FerryError(INVALID_PARAMETER_VALUE) naming the file.
 */
import { readFile } from 'node:fs/promises';
import { isAbsolute, relative, resolve } from 'node:path';
import onnxProto from 'onnx-proto';
import { FerryError } from '../../errors.js';
import type { DType, Signature, TensorSpec } from '../../tensor/index.js';

const { onnx } = onnxProto;
export type ModelProto = onnxProto.onnx.ModelProto;
type IValueInfoProto = onnxProto.onnx.IValueInfoProto;
type ITypeProto = onnxProto.onnx.ITypeProto;

/**
 * protobufjs decodes int64 fields as numbers or, because the `long` package is installed, as Long
 * objects; onnx-proto's typings name Long without declaring it, so these take `unknown`.
 */
interface Long {
  toNumber(): number;
  toString(): string;
}
const isLong = (v: unknown): v is Long => typeof v === 'object' && v !== null && typeof (v as Partial<Long>).toNumber === 'function';

/** An int64 field as a number (0 when absent); exact up to 2^53, enough for dims and versions. */
export function int64ToNumber(v: unknown): number {
  if (typeof v === 'number') return v;
  return isLong(v) ? v.toNumber() : 0;
}

/** An int64 field in decimal, exact at any magnitude (class labels). */
export function int64ToString(v: unknown): string {
  if (typeof v === 'number') return String(v);
  return isLong(v) ? v.toString() : '';
}

/** TensorProto.DataType → DType. Missing codes (complex, bfloat16, float8, int4) are unsupported. */
const DTYPE_BY_ELEM_TYPE: Partial<Record<number, DType>> = {
  1: 'float32', 2: 'uint8', 3: 'int8', 4: 'uint16', 5: 'int16', 6: 'int32', 7: 'int64',
  8: 'string', 9: 'bool', 10: 'float16', 11: 'float64', 12: 'uint32', 13: 'uint64',
};

export function invalidModel(file: string, problem: string): FerryError {
  return new FerryError('INVALID_PARAMETER_VALUE', `Invalid ONNX model '${file}': ${problem}.`);
}

/** The signature of `modelFile` inside `dir`, from its graph alone (pure JS: no onnxruntime session). */
export async function readSignature(dir: string, modelFile: string): Promise<Signature> {
  const { model } = await readModel(dir, modelFile);
  return signatureOf(model, modelFile);
}

/**
 * Reads and decodes `modelFile` inside `dir`. `modelFile` must stay inside `dir` (it comes from
 * user-supplied metadata such as MLmodel's `data`).
 */
export async function readModel(dir: string, modelFile: string): Promise<{ path: string; model: ModelProto }> {
  const path = resolve(dir, modelFile);
  const rel = relative(resolve(dir), path);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) throw invalidModel(modelFile, 'the model file must be a file inside the artifact directory');
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw invalidModel(modelFile, code === 'ENOENT' ? 'file not found' : `cannot read the file (${code ?? String(err)})`);
  }
  return { path, model: decodeModel(bytes, modelFile) };
}

/** Decodes and sanity-checks an ONNX ModelProto; errors name `modelFile`. */
export function decodeModel(bytes: Uint8Array, modelFile: string): ModelProto {
  if (bytes.length === 0) throw invalidModel(modelFile, 'the file is empty');
  let model: ModelProto;
  try {
    // Decoding is bounded by the input: every field advances the reader or throws, so garbage
    // cannot make it loop; its errors (RangeError, ProtocolError, stack overflow) are all caught.
    model = onnx.ModelProto.decode(bytes);
  } catch (err) {
    throw invalidModel(modelFile, `not an ONNX protobuf (${err instanceof Error ? err.message : String(err)})`);
  }
  if (int64ToNumber(model.irVersion) <= 0) throw invalidModel(modelFile, 'no ir_version, so not an ONNX ModelProto');
  if (!model.graph) throw invalidModel(modelFile, 'the model has no graph');
  return model;
}

/** The dimensions of a tensor type: -1 for symbolic (dim_param) or unknown dims, `undefined` without a shape. */
function shapeOf(type: onnxProto.onnx.TypeProto.ITensor): number[] | undefined {
  if (!type.shape) return undefined;
  return (type.shape.dim ?? []).map((d) => (d.dimValue !== null && d.dimValue !== undefined ? int64ToNumber(d.dimValue) : -1));
}

function tensorSpec(info: IValueInfoProto, file: string, role: string): TensorSpec {
  const name = info.name ?? '';
  const tensor = info.type?.tensorType;
  if (!tensor) throw invalidModel(file, `${role} '${name}' is a ${typeName(info.type)}, only tensors are supported`);
  const elemType = tensor.elemType ?? 0;
  const dtype = DTYPE_BY_ELEM_TYPE[elemType];
  if (dtype === undefined) {
    const typeLabel = onnx.TensorProto.DataType[elemType] ?? `element type ${elemType}`;
    throw invalidModel(file, `${role} '${name}' has unsupported element type ${typeLabel}`);
  }
  return { name, dtype, shape: shapeOf(tensor) };
}

function typeName(type: ITypeProto | null | undefined): string {
  if (type?.sequenceType) return 'sequence';
  if (type?.mapType) return 'map';
  if (type?.optionalType) return 'optional';
  if (type?.sparseTensorType) return 'sparse tensor';
  return 'value without a type';
}

/** True for sequence(map(...)), what ZipMap produces (one map of class → probability per row). */
function isMapSequence(type: ITypeProto | null | undefined): boolean {
  return Boolean(type?.sequenceType?.elemType?.mapType);
}

/**
 * The model's Signature: graph inputs that are not initializers (older exporters list weights as
 * inputs too), and outputs, where a sequence of maps becomes `{ dtype: 'map' }`.
 */
export function signatureOf(model: ModelProto, file: string): Signature {
  const graph = model.graph;
  if (!graph) throw invalidModel(file, 'the model has no graph');
  const initializers = new Set([
    ...(graph.initializer ?? []).map((t) => t.name),
    ...(graph.sparseInitializer ?? []).map((t) => t.values?.name),
  ]);
  const inputs = (graph.input ?? []).filter((i) => !initializers.has(i.name)).map((i) => tensorSpec(i, file, 'input'));
  const outputs = (graph.output ?? []).map((o) =>
    isMapSequence(o.type) ? { name: o.name ?? '', dtype: 'map' as const, shape: undefined } : tensorSpec(o, file, 'output'),
  );
  if (outputs.length === 0) throw invalidModel(file, 'the graph declares no outputs');
  for (const spec of [...inputs, ...outputs]) {
    if (spec.name === '') throw invalidModel(file, 'a graph input or output has no name');
  }
  return { inputs, outputs };
}
