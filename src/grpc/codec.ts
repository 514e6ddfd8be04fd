/**
 * KServe's OIP v2 gRPC messages (proto/grpc_predict_v2.proto, loaded with `keepCase`, 64-bit
 * integers as decimal strings, defaults filled) ↔ the OIP v2 REST bodies the gateway routes.
 *
 * A `ModelInferRequest` becomes a REST inference body with the binary tensor extension: each
 * input of `raw_input_contents` goes as binary data (same byte layout in both protocols: little-
 * endian values, BYTES as u32-length-prefixed elements), an input given in typed `contents` goes
 * as JSON `data`; every output is asked as binary data, so the answer's tensors become
 * `raw_output_contents` without being parsed.
 */
import { FerryError, invalidParameter } from '../errors.js';

/** `InferParameter`: one of its fields is set (`parameter_choice` names it). */
export interface InferParameter {
  bool_param?: boolean;
  int64_param?: string;
  string_param?: string;
  parameter_choice?: 'bool_param' | 'int64_param' | 'string_param';
}

export interface InferTensorContents {
  bool_contents: boolean[];
  int_contents: number[];
  int64_contents: string[];
  uint_contents: number[];
  uint64_contents: string[];
  fp32_contents: number[];
  fp64_contents: number[];
  bytes_contents: Buffer[];
}

export interface InferInputTensor {
  name: string;
  datatype: string;
  shape: string[];
  parameters: Record<string, InferParameter>;
  contents: InferTensorContents | null;
}

export interface ModelInferRequest {
  model_name: string;
  model_version: string;
  id: string;
  parameters: Record<string, InferParameter>;
  inputs: InferInputTensor[];
  outputs: Array<{ name: string; parameters: Record<string, InferParameter> }>;
  raw_input_contents: Buffer[];
}

export interface ModelInferResponse {
  model_name: string;
  model_version: string;
  id: string;
  parameters: Record<string, InferParameter>;
  outputs: Array<{ name: string; datatype: string; shape: number[]; parameters: Record<string, InferParameter> }>;
  raw_output_contents: Buffer[];
}

/** The REST path of a model, with its version when one is named: `/v2/models/m[/versions/2]`. */
export function modelPath(name: string, version: string): string {
  if (name === '') throw invalidParameter('model_name', name, 'the name of a serving endpoint');
  return `/v2/models/${encodeURIComponent(name)}${version === '' ? '' : `/versions/${encodeURIComponent(version)}`}`;
}

/** An `InferParameter` map as plain JSON values (int64 as a number). */
export function parameterValues(params: Record<string, InferParameter>, field: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, p] of Object.entries(params)) {
    switch (p.parameter_choice) {
      case 'bool_param': out[key] = p.bool_param; break;
      case 'int64_param': out[key] = Number(p.int64_param); break;
      case 'string_param': out[key] = p.string_param; break;
      default: throw invalidParameter(`${field}["${key}"]`, p, 'a parameter with bool_param, int64_param or string_param set');
    }
  }
  return out;
}

/** JSON values as an `InferParameter` map (other values as their JSON text). */
export function inferParameters(values: Record<string, unknown> | undefined): Record<string, InferParameter> {
  const out: Record<string, InferParameter> = {};
  for (const [key, v] of Object.entries(values ?? {})) {
    if (typeof v === 'boolean') out[key] = { bool_param: v };
    else if (typeof v === 'number' && Number.isInteger(v)) out[key] = { int64_param: String(v) };
    else out[key] = { string_param: typeof v === 'string' ? v : JSON.stringify(v) };
  }
  return out;
}

/** The JSON `data` of an input given in typed contents, for its datatype. */
function contentsData(t: InferInputTensor, field: string): unknown[] {
  const c = t.contents;
  if (c === null) throw invalidParameter(`${field}.contents`, null, 'the tensor\'s values (or raw_input_contents for every input)');
  switch (t.datatype) {
    case 'BOOL': return c.bool_contents;
    case 'INT8': case 'INT16': case 'INT32': return c.int_contents;
    case 'UINT8': case 'UINT16': case 'UINT32': return c.uint_contents;
    // Decimal strings; the JSON path refuses values past 2^53 (send raw_input_contents for those).
    case 'INT64': return c.int64_contents.map(Number);
    case 'UINT64': return c.uint64_contents.map(Number);
    case 'FP32': return c.fp32_contents;
    case 'FP64': return c.fp64_contents;
    case 'BYTES': return c.bytes_contents.map((b) => b.toString('utf8'));
    default: throw invalidParameter(`${field}.datatype`, t.datatype, 'a datatype with typed contents (FP16 and BF16 travel only in raw_input_contents)');
  }
}

/**
 * The REST inference body of a `ModelInferRequest`: the JSON header and, when any input is raw,
 * the raw bytes after it (`headerBytes` is then the header's length, else undefined).
 * @throws FerryError INVALID_PARAMETER_VALUE naming the message field.
 */
export function inferBody(req: ModelInferRequest): { body: Buffer; headerBytes: number | undefined } {
  const raw = req.raw_input_contents;
  if (raw.length > 0 && raw.length !== req.inputs.length) {
    throw invalidParameter('raw_input_contents', `${raw.length} entries`, `one entry per input (${req.inputs.length}), or none`);
  }
  const inputs = req.inputs.map((t, i) => {
    const field = `inputs[${i}]`;
    const parameters = parameterValues(t.parameters, `${field}.parameters`);
    const head = { name: t.name, datatype: t.datatype, shape: t.shape.map(Number) };
    if (raw.length === 0) return { ...head, parameters, data: contentsData(t, field) };
    return { ...head, parameters: { ...parameters, binary_data_size: (raw[i] as Buffer).length } };
  });
  const header: Record<string, unknown> = {
    inputs,
    // Every output as binary data: it becomes raw_output_contents as it comes.
    parameters: { ...parameterValues(req.parameters, 'parameters'), binary_data_output: true },
  };
  if (req.id !== '') header.id = req.id;
  if (req.outputs.length > 0) {
    header.outputs = req.outputs.map((o, i) => ({ name: o.name, parameters: { ...parameterValues(o.parameters, `outputs[${i}].parameters`), binary_data: true } }));
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  if (raw.length === 0) return { body: json, headerBytes: undefined };
  return { body: Buffer.concat([json, ...raw]), headerBytes: json.length };
}

interface RestOutput {
  name: string;
  datatype: string;
  shape: number[];
  parameters?: Record<string, unknown>;
}

/**
 * A `ModelInferResponse` from the REST answer to `inferBody`'s request: its header (the first
 * `headerBytes` bytes) and each output's binary bytes, which become `raw_output_contents` (views).
 */
export function inferResponse(body: Buffer, headerBytes: number): ModelInferResponse {
  const header = JSON.parse(body.subarray(0, headerBytes).toString('utf8')) as { model_name: string; model_version?: string; id?: string; parameters?: Record<string, unknown>; outputs: RestOutput[] };
  const rawOutputs: Buffer[] = [];
  let off = headerBytes;
  const outputs = header.outputs.map((o) => {
    const { binary_data_size: size, ...rest } = o.parameters ?? {};
    if (typeof size !== 'number' || off + size > body.length) throw new FerryError('BAD_GATEWAY', `The inference answer has no binary data for output '${o.name}'.`);
    rawOutputs.push(body.subarray(off, off + size));
    off += size;
    return { name: o.name, datatype: o.datatype, shape: o.shape, parameters: inferParameters(rest) };
  });
  return {
    model_name: header.model_name, model_version: header.model_version ?? '', id: header.id ?? '',
    parameters: inferParameters(header.parameters), outputs, raw_output_contents: rawOutputs,
  };
}
