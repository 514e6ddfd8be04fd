/**
 * Reading an .onnx file as a ModelProto (pure JS, onnx-proto) and deriving Ferry's Signature from
 * its graph. Every failure is a FerryError(INVALID_PARAMETER_VALUE) naming the file.
 *
 * Two readers: `readModel` decodes the whole file (replicas, which run the model); `inspectOnnx`
 * (registration) walks the protobuf wire format and decodes only the graph's interface (inputs,
 * outputs, initializer names), counting nodes without decoding them. A file of 6 million empty
 * NodeProtos (12 MB) made the full decode allocate ~1 GB; the walk holds one 1 MiB chunk and
 * refuses counts past `ONNX_LIMITS` before allocating anything for them.
 */
import { readFile } from 'node:fs/promises';
import { isAbsolute, relative, resolve } from 'node:path';
import onnxProto from 'onnx-proto';
import { FerryError } from '../../errors.js';
import type { DType, Signature, TensorSpec } from '../../tensor/index.js';
import { FileCursor, OutOfData } from '../file-cursor.js';
import type { Flavor } from '../types.js';

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

/**
 * Reads and decodes `modelFile` inside `dir`. `modelFile` must stay inside `dir` (it comes from
 * user-supplied metadata such as MLmodel's `data`).
 */
export async function readModel(dir: string, modelFile: string): Promise<{ path: string; model: ModelProto }> {
  const path = modelPath(dir, modelFile);
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw invalidModel(modelFile, code === 'ENOENT' ? 'file not found' : `cannot read the file (${code ?? String(err)})`);
  }
  return { path, model: decodeModel(bytes, modelFile) };
}

/** `modelFile` resolved inside `dir`; refused when it points outside. */
function modelPath(dir: string, modelFile: string): string {
  const path = resolve(dir, modelFile);
  const rel = relative(resolve(dir), path);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) throw invalidModel(modelFile, 'the model file must be a file inside the artifact directory');
  return path;
}

/**
 * Count bounds of `inspectOnnx`, far above real models (a 7B-parameter transformer export has
 * ~10^4 nodes and ~10^3 initializers; its inputs and outputs are a handful).
 */
export const ONNX_LIMITS = {
  /** Nodes of the main graph. */
  maxNodes: 1_000_000,
  /** Initializers plus sparse initializers of the main graph. */
  maxInitializers: 1_000_000,
  /** Graph inputs plus outputs. */
  maxGraphIo: 10_000,
  /** Fields of the main graph of any kind (nodes, value_info, ...): bounds the walk's time. */
  maxGraphFields: 4_000_000,
  /** One graph input's or output's encoded ValueInfoProto, and one initializer name. */
  maxValueInfoBytes: 1024 * 1024,
} as const;

/** Protobuf wire types. */
const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;

/** Field numbers of onnx.proto used by the walk. */
const MODEL_IR_VERSION = 1;
const MODEL_GRAPH = 7;
const GRAPH_NODE = 1;
const GRAPH_INITIALIZER = 5;
const GRAPH_INPUT = 11;
const GRAPH_OUTPUT = 12;
const GRAPH_SPARSE_INITIALIZER = 15;
const TENSOR_NAME = 8;
const SPARSE_VALUES = 1;

/** One field header: its number, its wire type and, for LEN fields, the payload's byte length. */
function fieldHeader(c: FileCursor): { field: number; wire: number; len: number } {
  const key = c.varint();
  const wire = key % 8;
  const field = Math.floor(key / 8);
  if (field === 0) throw new RangeError(`field number 0 at offset ${c.pos}`);
  if (wire === LEN) return { field, wire, len: c.varint() };
  if (wire !== VARINT && wire !== I64 && wire !== I32) throw new RangeError(`wire type ${wire} at offset ${c.pos}`);
  return { field, wire, len: 0 };
}

/** Moves past a field's payload. */
function skipField(c: FileCursor, h: { wire: number; len: number }): void {
  if (h.wire === VARINT) c.varint();
  else c.skip(h.wire === I64 ? 8 : h.wire === I32 ? 4 : h.len);
}

/** Calls `each` for every field of the message that ends at `end`; `each` must consume the payload. */
function walk(c: FileCursor, end: number, each: (h: { field: number; wire: number; len: number }) => void): void {
  while (c.pos < end) {
    const h = fieldHeader(c);
    if (h.wire === LEN && c.pos + h.len > end) throw new RangeError(`field ${h.field} at offset ${c.pos} runs past its message`);
    each(h);
    if (c.pos > end) throw new RangeError(`field ${h.field} runs past its message at offset ${c.pos}`);
  }
}

/** The `name` (field 8) of the TensorProto whose payload is next, skipping its data. */
function tensorName(c: FileCursor, end: number, file: string): string {
  let name = '';
  walk(c, end, (h) => {
    if (h.field === TENSOR_NAME && h.wire === LEN) {
      if (h.len > ONNX_LIMITS.maxValueInfoBytes) throw invalidModel(file, `an initializer name is ${h.len} bytes long`);
      name = c.bytes(h.len).toString('utf8');
    } else skipField(c, h);
  });
  return name;
}

/**
 * The Signature of the .onnx file `modelFile` inside `dir`, from a bounded walk of its wire
 * format (see the top of this file). Reads synchronously: it runs in the inspector process.
 */
export function inspectOnnx(dir: string, modelFile: string): Promise<Signature> {
  return onnxSignature(modelFile, (walk) => FileCursor.read(modelPath(dir, modelFile), walk));
}

/** `inspectOnnx` of a file held in memory (bulk registration's models). */
export function inspectOnnxBytes(bytes: Buffer, modelFile: string): Promise<Signature> {
  return onnxSignature(modelFile, (walk) => FileCursor.over(bytes, walk));
}

function onnxSignature(modelFile: string, open: (walk: (c: FileCursor) => Signature) => Signature): Promise<Signature> {
  try {
    return Promise.resolve(open((c) => signatureOf(walkModel(c, modelFile), modelFile)));
  } catch (err) {
    if (err instanceof FerryError) return Promise.reject(err);
    const code = (err as NodeJS.ErrnoException).code;
    const problem = code !== undefined ? (code === 'ENOENT' ? 'file not found' : `cannot read the file (${code})`)
      : `not an ONNX protobuf (${err instanceof OutOfData ? 'the file ends inside a field (truncated?)' : (err as Error).message})`;
    return Promise.reject(invalidModel(modelFile, problem));
  }
}

/** The ModelProto's ir_version and graph interface (no nodes), with ONNX_LIMITS enforced. */
function walkModel(c: FileCursor, file: string): ModelProto {
  if (c.size === 0) throw invalidModel(file, 'the file is empty');
  let irVersion = 0;
  let graphs = 0;
  const input: onnxProto.onnx.ValueInfoProto[] = [];
  const output: onnxProto.onnx.ValueInfoProto[] = [];
  const initializer: onnxProto.onnx.TensorProto[] = [];
  const sparseInitializer: onnxProto.onnx.SparseTensorProto[] = [];
  let nodes = 0;
  let fields = 0;
  const valueInfo = (len: number): onnxProto.onnx.ValueInfoProto => {
    if (input.length + output.length >= ONNX_LIMITS.maxGraphIo) throw invalidModel(file, `the graph has more than ${ONNX_LIMITS.maxGraphIo} inputs and outputs`);
    if (len > ONNX_LIMITS.maxValueInfoBytes) throw invalidModel(file, `a graph input or output takes ${len} bytes (at most ${ONNX_LIMITS.maxValueInfoBytes})`);
    return onnx.ValueInfoProto.decode(c.bytes(len));
  };
  const countInitializer = (): void => {
    if (initializer.length + sparseInitializer.length >= ONNX_LIMITS.maxInitializers) throw invalidModel(file, `the graph has more than ${ONNX_LIMITS.maxInitializers} initializers`);
  };
  walk(c, c.size, (h) => {
    if (h.field === MODEL_IR_VERSION && h.wire === VARINT) {
      irVersion = c.varint();
    } else if (h.field === MODEL_GRAPH && h.wire === LEN) {
      graphs++;
      walk(c, c.pos + h.len, (g) => {
        if (++fields > ONNX_LIMITS.maxGraphFields) throw invalidModel(file, `the graph has more than ${ONNX_LIMITS.maxGraphFields} fields`);
        if (g.wire !== LEN) return skipField(c, g);
        switch (g.field) {
          case GRAPH_NODE:
            if (++nodes > ONNX_LIMITS.maxNodes) throw invalidModel(file, `the graph has more than ${ONNX_LIMITS.maxNodes} nodes`);
            return c.skip(g.len);
          case GRAPH_INPUT: return void input.push(valueInfo(g.len));
          case GRAPH_OUTPUT: return void output.push(valueInfo(g.len));
          case GRAPH_INITIALIZER:
            countInitializer();
            return void initializer.push(onnx.TensorProto.create({ name: tensorName(c, c.pos + g.len, file) }));
          case GRAPH_SPARSE_INITIALIZER: {
            countInitializer();
            let name = '';
            walk(c, c.pos + g.len, (s) => {
              if (s.field === SPARSE_VALUES && s.wire === LEN) name = tensorName(c, c.pos + s.len, file);
              else skipField(c, s);
            });
            return void sparseInitializer.push(onnx.SparseTensorProto.create({ values: onnx.TensorProto.create({ name }) }));
          }
          default: return c.skip(g.len);
        }
      });
    } else {
      skipField(c, h);
    }
  });
  if (irVersion <= 0) throw invalidModel(file, 'no ir_version, so not an ONNX ModelProto');
  if (graphs === 0) throw invalidModel(file, 'the model has no graph');
  return onnx.ModelProto.create({ irVersion, graph: onnx.GraphProto.create({ input, output, initializer, sparseInitializer }) });
}

/** The onnx flavor's registration side (its `load` is in index.ts, with onnxruntime). */
export const onnxInspection: Pick<Flavor, 'name' | 'defaultModelFile' | 'inspect'> = {
  name: 'onnx',
  defaultModelFile: 'model.onnx',
  inspect: inspectOnnx,
};

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
