/**
 * Open Inference Protocol v2 (KServe / Triton REST): inference request and response, model
 * metadata, and the dtype ↔ datatype mapping. Tensor data as JSON, or raw bytes after the JSON
 * header (the binary tensor extension, ./v2-binary.ts), input by input and output by output.
 */
import { invalidParameter } from '../errors.js';
import { elementCount, isRowSequence, type DType, type OutputValue, type RowSequence, type Signature, type Tensor } from '../tensor/index.js';
import { checkAllInputs, checkKeys, checkShape, inferDims, inputSpec, isObject, MAX_RANK, readTensor, wholeValue } from './decode.js';
import { flatArray, type JsonScalar } from './encode.js';
import { binaryAnswer, binaryTensor, BinaryCursor, tensorBytes } from './v2-binary.js';

const DTYPE_TO_V2 = {
  bool: 'BOOL',
  uint8: 'UINT8', uint16: 'UINT16', uint32: 'UINT32', uint64: 'UINT64',
  int8: 'INT8', int16: 'INT16', int32: 'INT32', int64: 'INT64',
  float16: 'FP16', float32: 'FP32', float64: 'FP64',
  string: 'BYTES',
  // A MapSequence or JsonSequence travels as one JSON string per row.
  map: 'BYTES',
  json: 'BYTES',
} as const satisfies Record<DType | RowSequence['dtype'], string>;

/** The v2 tensor datatypes Ferry supports (BF16 has no JavaScript storage and is refused). */
export type V2Datatype = (typeof DTYPE_TO_V2)[keyof typeof DTYPE_TO_V2];

const V2_TO_DTYPE: Record<V2Datatype, DType> = {
  BOOL: 'bool',
  UINT8: 'uint8', UINT16: 'uint16', UINT32: 'uint32', UINT64: 'uint64',
  INT8: 'int8', INT16: 'int16', INT32: 'int32', INT64: 'int64',
  FP16: 'float16', FP32: 'float32', FP64: 'float64',
  BYTES: 'string',
};

/** True for a datatype name this codec supports (`FP32`, `BYTES`, ...). */
export function isV2Datatype(value: unknown): value is V2Datatype {
  return typeof value === 'string' && Object.hasOwn(V2_TO_DTYPE, value);
}

/** The v2 datatype for a dtype: float32 → FP32, string → BYTES; a `map` or `json` output → BYTES (JSON text per row). */
export function dtypeToV2(dtype: DType | RowSequence['dtype']): V2Datatype {
  return DTYPE_TO_V2[dtype];
}

/** The dtype for a v2 datatype: FP32 → float32, BYTES → string. */
export function v2ToDtype(datatype: V2Datatype): DType {
  return V2_TO_DTYPE[datatype];
}

/** A decoded v2 inference request. */
export interface V2Request {
  id: string | undefined;
  /** One validated tensor per signature input. */
  inputs: Record<string, Tensor>;
  /** Names from the request's `outputs` list (all known to the signature), or undefined for all outputs. */
  requestedOutputs: string[] | undefined;
  /** The model's parameters: the request's, less the protocol's own (`binary_data_output`). */
  parameters: Record<string, unknown> | undefined;
  /** Outputs to answer as raw bytes (binary tensor extension): by name, else `binaryDefault`. */
  binaryOutputs: ReadonlyMap<string, boolean>;
  /** The request's `parameters.binary_data_output` (false when absent). */
  binaryDefault: boolean;
}

/** Request parameters the protocol reads itself; they do not reach the model. */
const PROTOCOL_PARAMETERS: readonly string[] = ['binary_data_output'];

const REQUEST_KEYS: readonly string[] = ['id', 'parameters', 'inputs', 'outputs'];
const INPUT_KEYS: readonly string[] = ['name', 'shape', 'datatype', 'parameters', 'data'];
const OUTPUT_KEYS: readonly string[] = ['name', 'parameters'];

function optionalObject(value: unknown, field: string): Record<string, unknown> | undefined {
  if (value !== undefined && !isObject(value)) throw invalidParameter(field, value, 'an object');
  return value;
}

/**
 * Decodes an already JSON-parsed v2 inference request into tensors validated against `signature`.
 * @throws FerryError INVALID_PARAMETER_VALUE (400) naming the offending field, for any bad body.
 */
export function decodeV2Request(body: unknown, signature: Signature, binary?: Buffer): V2Request {
  if (!isObject(body)) throw invalidParameter('request body', body, 'an object {id?, parameters?, inputs, outputs?}');
  checkKeys(body, REQUEST_KEYS, '');
  const { id, inputs } = body;
  if (id !== undefined && typeof id !== 'string') throw invalidParameter('id', id, 'a string');
  const given = optionalObject(body.parameters, 'parameters');
  const binaryDefault = given?.binary_data_output ?? false;
  if (typeof binaryDefault !== 'boolean') throw invalidParameter('parameters.binary_data_output', binaryDefault, 'true or false');
  if (!Array.isArray(inputs)) throw invalidParameter('inputs', inputs, 'a list of input tensors {name, shape, datatype, data}');
  const cursor = binary === undefined ? undefined : new BinaryCursor(binary);
  const tensors: Record<string, Tensor> = {};
  for (let i = 0; i < inputs.length; i++) {
    const [name, tensor] = decodeInput(inputs[i], `inputs[${i}]`, signature, cursor);
    if (Object.hasOwn(tensors, name)) throw invalidParameter(`inputs[${i}].name`, name, 'each input name once');
    tensors[name] = tensor;
  }
  cursor?.checkConsumed();
  checkAllInputs(signature.inputs, tensors, 'inputs', inputs.map((t: unknown) => (isObject(t) ? t.name : t)));
  const outputs = decodeRequestedOutputs(body.outputs, signature);
  return {
    id, inputs: tensors, requestedOutputs: outputs?.names, parameters: modelParameters(given), binaryOutputs: outputs?.binary ?? NO_FLAGS, binaryDefault,
  };
}

const NO_FLAGS: ReadonlyMap<string, boolean> = new Map();

/** The request's parameters without the protocol's own; undefined when none are left. */
function modelParameters(given: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (given === undefined || !PROTOCOL_PARAMETERS.some((k) => Object.hasOwn(given, k))) return given;
  const rest = Object.fromEntries(Object.entries(given).filter(([k]) => !PROTOCOL_PARAMETERS.includes(k)));
  return Object.keys(rest).length === 0 ? undefined : rest;
}

function decodeInput(value: unknown, field: string, signature: Signature, cursor: BinaryCursor | undefined): [string, Tensor] {
  if (!isObject(value)) throw invalidParameter(field, value, 'an input tensor {name, shape, datatype, data}');
  checkKeys(value, INPUT_KEYS, field);
  const { name, datatype, data } = value;
  if (typeof name !== 'string') throw invalidParameter(`${field}.name`, name, 'a string');
  const spec = inputSpec(signature, name, `${field}.name`, name);
  const expectedDatatype = dtypeToV2(spec.dtype);
  if (datatype !== expectedDatatype) {
    throw invalidParameter(`${field}.datatype`, datatype, `${expectedDatatype} (input '${name}' is ${spec.dtype})`);
  }
  const parameters = optionalObject(value.parameters, `${field}.parameters`);
  const shape = decodeShape(value.shape, `${field}.shape`);
  checkShape(spec, shape, `${field}.shape`, value.shape);
  const size = parameters?.binary_data_size;
  if (size !== undefined) {
    const sizeField = `${field}.parameters.binary_data_size`;
    if (cursor === undefined) throw invalidParameter(sizeField, size, 'no binary_data_size without an Inference-Header-Content-Length header (the binary tensor extension)');
    if (!Number.isSafeInteger(size) || (size as number) < 0) throw invalidParameter(sizeField, size, 'a byte count ≥ 0');
    if (data !== undefined) throw invalidParameter(`${field}.data`, '...', 'no data next to binary_data_size (the tensor is in the binary part)');
    return [name, binaryTensor(cursor.take(size as number, sizeField), spec, shape, field)];
  }
  const dataField = `${field}.data`;
  if (!Array.isArray(data)) throw invalidParameter(dataField, data, `an array of ${elementCount(shape)} elements (flat, row-major) or nested as shape [${shape.join(', ')}]`);
  const dims = inferDims(data, dataField);
  if (dims.length === 1) {
    // Flat, row-major: only the element count has to agree with `shape`.
    if (data.length !== elementCount(shape)) {
      throw invalidParameter(dataField, data, `${elementCount(shape)} elements for shape [${shape.join(', ')}] (got ${data.length})`);
    }
  } else if (dims.length !== shape.length || dims.some((d, i) => d !== shape[i])) {
    throw invalidParameter(dataField, data, `nested data of shape [${shape.join(', ')}] (got [${dims.join(', ')}]), or a flat array`);
  }
  return [name, readTensor(wholeValue(data, dataField), dims, spec, shape)];
}

function decodeShape(value: unknown, field: string): number[] {
  if (!Array.isArray(value) || value.length > MAX_RANK || !value.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
    throw invalidParameter(field, value, `a list of at most ${MAX_RANK} non-negative integers`);
  }
  return value as number[];
}

/** The requested outputs' names, and the `parameters.binary_data` flag of those that have one. */
function decodeRequestedOutputs(value: unknown, signature: Signature): { names: string[]; binary: Map<string, boolean> } | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) throw invalidParameter('outputs', value, 'a list of requested outputs {name, parameters?}');
  const known = signature.outputs.map((o) => o.name);
  const names: string[] = [];
  const binary = new Map<string, boolean>();
  for (let i = 0; i < value.length; i++) {
    const field = `outputs[${i}]`;
    const output: unknown = value[i];
    if (!isObject(output)) throw invalidParameter(field, output, 'a requested output {name, parameters?}');
    checkKeys(output, OUTPUT_KEYS, field);
    const parameters = optionalObject(output.parameters, `${field}.parameters`);
    const { name } = output;
    if (typeof name !== 'string' || !known.includes(name)) throw invalidParameter(`${field}.name`, name, `an output name of this model (${known.join(', ')})`);
    if (names.includes(name)) throw invalidParameter(`${field}.name`, name, 'each output name once');
    names.push(name);
    const flag = parameters?.binary_data;
    if (flag !== undefined && typeof flag !== 'boolean') throw invalidParameter(`${field}.parameters.binary_data`, flag, 'true or false');
    if (flag !== undefined) binary.set(name, flag);
  }
  return { names, binary };
}

/** One tensor of a v2 response. */
export interface V2OutputTensor {
  name: string;
  datatype: V2Datatype;
  shape: number[];
  /** Flat, row-major. */
  data: JsonScalar[];
}

/** A v2 inference response body. */
export interface V2Response {
  model_name: string;
  model_version?: string;
  id?: string;
  parameters?: Record<string, unknown>;
  outputs: V2OutputTensor[];
}

/** What a v2 response carries besides the outputs. */
export interface V2ResponseOptions {
  modelName: string;
  modelVersion?: string | undefined;
  /** The request's id, echoed back. */
  id?: string | undefined;
  /** The request's `outputs` names; undefined returns every output. */
  requestedOutputs?: readonly string[] | undefined;
  parameters?: Record<string, unknown> | undefined;
}

/**
 * Encodes model outputs as a v2 inference response, in the requested order (else the outputs'
 * order). A MapSequence or JsonSequence becomes BYTES of shape [N], each element the JSON text of one row's value.
 * @throws FerryError INVALID_PARAMETER_VALUE (400) for a requested output the model did not produce.
 */
export function encodeV2Response(outputs: Record<string, OutputValue>, opts: V2ResponseOptions): V2Response {
  return respond(outputs, opts, (name, value) => jsonOutput(name, value));
}

/** One output as JSON data: a MapSequence or JsonSequence becomes BYTES of [N], each element one row's JSON text. */
function jsonOutput(name: string, value: OutputValue): V2OutputTensor {
  if (isRowSequence(value)) return { name, datatype: 'BYTES', shape: [value.data.length], data: value.data.map((m) => JSON.stringify(m)) };
  return { name, datatype: dtypeToV2(value.dtype), shape: value.shape, data: flatArray(value) };
}

/** The response around the requested outputs (else all, in the outputs' order), each encoded by `encode`. */
function respond<T>(outputs: Record<string, OutputValue>, opts: V2ResponseOptions, encode: (name: string, value: OutputValue) => T): Omit<V2Response, 'outputs'> & { outputs: T[] } {
  const names = opts.requestedOutputs ?? Object.keys(outputs);
  const tensors = names.map((name, i): T => {
    const value = outputs[name];
    if (value === undefined || !Object.hasOwn(outputs, name)) {
      throw invalidParameter(`outputs[${i}].name`, name, `an output name of this model (${Object.keys(outputs).join(', ')})`);
    }
    return encode(name, value);
  });
  const response: Omit<V2Response, 'outputs'> & { outputs: T[] } = { model_name: opts.modelName, outputs: tensors };
  if (opts.modelVersion !== undefined) response.model_version = opts.modelVersion;
  if (opts.id !== undefined) response.id = opts.id;
  if (opts.parameters !== undefined) response.parameters = opts.parameters;
  return response;
}

/**
 * A v2 inference answer: the JSON response, or, when the request asked for any output as binary
 * data (`parameters.binary_data_output`, or an output's `parameters.binary_data`), the binary
 * answer frame (./v2-binary.ts) whose header lists those outputs with `binary_data_size` and no
 * `data`, their bytes following in the header's order.
 */
export function encodeV2Answer(outputs: Record<string, OutputValue>, opts: V2ResponseOptions, req: Pick<V2Request, 'binaryOutputs' | 'binaryDefault'>): V2Response | Buffer {
  const binary = (name: string): boolean => req.binaryOutputs.get(name) ?? req.binaryDefault;
  if (!(opts.requestedOutputs ?? Object.keys(outputs)).some(binary)) return encodeV2Response(outputs, opts);
  const parts: Buffer[] = [];
  const header = respond(outputs, opts, (name, value) => {
    if (!binary(name)) return jsonOutput(name, value);
    const rows = isRowSequence(value);
    const bytes = rows ? tensorBytes('string', value.data) : tensorBytes(value.dtype, value.data);
    parts.push(bytes);
    const shape = rows ? [value.data.length] : value.shape;
    return { name, datatype: rows ? 'BYTES' : dtypeToV2(value.dtype), shape, parameters: { binary_data_size: bytes.length } };
  });
  return binaryAnswer(JSON.stringify(header), parts);
}

/** One tensor of v2 model metadata. */
export interface V2TensorMetadata {
  name: string;
  datatype: V2Datatype;
  /** -1 for a dynamic dimension; [-1] when the model declares no shape (any rank). */
  shape: number[];
}

/** The v2 model metadata response (`GET /v2/models/{name}[/versions/{v}]`). */
export interface V2ModelMetadata {
  name: string;
  versions?: string[];
  platform: string;
  inputs: V2TensorMetadata[];
  outputs: V2TensorMetadata[];
}

/** Builds the v2 model metadata response for a model's signature; `platform` is e.g. "onnxruntime_onnx". */
export function v2ModelMetadata(name: string, version: string | undefined, signature: Signature, platform: string): V2ModelMetadata {
  const describe = (t: { name: string; dtype: DType | RowSequence['dtype']; shape: number[] | undefined }): V2TensorMetadata =>
    ({ name: t.name, datatype: dtypeToV2(t.dtype), shape: t.shape === undefined ? [-1] : [...t.shape] });
  const metadata: V2ModelMetadata = { name, platform, inputs: signature.inputs.map(describe), outputs: signature.outputs.map(describe) };
  if (version !== undefined) metadata.versions = [version];
  return metadata;
}

/** Triton's `data_type` names (model_config.proto) for each v2 datatype. */
const V2_TO_CONFIG_TYPE: Record<V2Datatype, string> = {
  BOOL: 'TYPE_BOOL',
  UINT8: 'TYPE_UINT8', UINT16: 'TYPE_UINT16', UINT32: 'TYPE_UINT32', UINT64: 'TYPE_UINT64',
  INT8: 'TYPE_INT8', INT16: 'TYPE_INT16', INT32: 'TYPE_INT32', INT64: 'TYPE_INT64',
  FP16: 'TYPE_FP16', FP32: 'TYPE_FP32', FP64: 'TYPE_FP64',
  BYTES: 'TYPE_STRING',
};

/** One tensor of a model configuration. */
export interface V2ConfigTensor {
  name: string;
  data_type: string;
  /** Without the batch dimension when `max_batch_size` > 0; -1 for a dynamic dimension. */
  dims: number[];
}

/** The OIP v2 model configuration extension's answer (`GET /v2/models/{name}/config`), in Triton's model_config JSON. */
export interface V2ModelConfig {
  name: string;
  platform: string;
  /** 0: the model takes no batch dimension (or batching is off); N: rows one model call takes. */
  max_batch_size: number;
  input: V2ConfigTensor[];
  output: V2ConfigTensor[];
  dynamic_batching?: { max_queue_delay_microseconds: number; preferred_batch_size: number[] };
}

/**
 * A model's configuration in Triton's shape, from its signature and the replica's batching.
 * With batching on and every tensor batched along its first dimension, `max_batch_size` is the
 * batch limit and `dims` leave that dimension out (as Triton does); otherwise `max_batch_size` is
 * 0 and `dims` are the whole shapes. Example: x float32 [-1, 4], batching up to 64 →
 * `{max_batch_size: 64, input: [{name: "x", data_type: "TYPE_FP32", dims: [4]}], dynamic_batching: {...}}`.
 */
export function v2ModelConfig(
  name: string, signature: Signature, platform: string,
  batching: { maxBatchSize: number; maxQueueDelayUs: number; preferredBatchSizes: readonly number[] } | undefined,
): V2ModelConfig {
  const tensors = [...signature.inputs, ...signature.outputs];
  const batched = batching !== undefined && tensors.every((t) => t.shape === undefined || t.shape[0] === -1);
  const describe = (t: { name: string; dtype: DType | RowSequence['dtype']; shape: number[] | undefined }): V2ConfigTensor => {
    const shape = t.shape === undefined ? [-1] : t.shape;
    return { name: t.name, data_type: V2_TO_CONFIG_TYPE[dtypeToV2(t.dtype)], dims: batched && t.shape !== undefined ? shape.slice(1) : [...shape] };
  };
  const config: V2ModelConfig = {
    name, platform, max_batch_size: batched ? batching.maxBatchSize : 0, input: signature.inputs.map(describe), output: signature.outputs.map(describe),
  };
  if (batched) config.dynamic_batching = { max_queue_delay_microseconds: batching.maxQueueDelayUs, preferred_batch_size: [...batching.preferredBatchSizes] };
  return config;
}
