/**
 * MLflow scoring JSON, as accepted by `mlflow models serve` and Databricks `/invocations`:
 * `dataframe_split`, `dataframe_records`, `instances` (TF-serving rows) or `inputs` (TF-serving
 * columns), plus optional `params`. Mapping rules, with examples, are in docs/protocols.md.
 */
import { FerryError, invalidParameter } from '../errors.js';
import { isRowSequence, type OutputValue, type Signature, type Tensor, type TensorSpec } from '../tensor/index.js';
import {
  checkAllInputs, checkKeys, checkShape, inferDims, inputSpec, isObject, nestedTensor, readTensor, wholeValue, type Pieces,
} from './decode.js';
import { nestedArray, rowValues } from './encode.js';

/** The four MLflow input formats; the response shape depends on which one the request used. */
export const MLFLOW_FORMATS = ['dataframe_split', 'dataframe_records', 'instances', 'inputs'] as const;
export type MlflowFormat = (typeof MLFLOW_FORMATS)[number];

/** `client_request_id` (Databricks): the caller's id for the request, recorded in the inference table, not given to the model. */
const TOP_LEVEL_KEYS: readonly string[] = [...MLFLOW_FORMATS, 'params', 'client_request_id'];
const SPLIT_KEYS: readonly string[] = ['columns', 'data', 'index'];
const EXPECTED_BODY = `an object with exactly one of ${MLFLOW_FORMATS.join(', ')} (and optionally params)`;

/** A decoded MLflow scoring request. */
export interface MlflowRequest {
  /** One validated tensor per signature input. */
  inputs: Record<string, Tensor>;
  /** The request's `params`, passed through to the model unchanged. */
  params: Record<string, unknown> | undefined;
  /** Which format the request used; pass it to `encodeMlflowResponse`. */
  format: MlflowFormat;
}

/**
 * Decodes an already JSON-parsed MLflow scoring request into tensors validated against `signature`.
 * @throws FerryError INVALID_PARAMETER_VALUE (400) naming the offending field, for any bad body.
 */
export function decodeMlflowRequest(body: unknown, signature: Signature): MlflowRequest {
  if (!isObject(body)) throw invalidParameter('request body', body, EXPECTED_BODY);
  checkKeys(body, TOP_LEVEL_KEYS, '');
  let format: MlflowFormat | undefined;
  for (const f of MLFLOW_FORMATS) {
    if (body[f] === undefined) continue;
    if (format !== undefined) throw invalidParameter('request body', `${format} and ${f}`, EXPECTED_BODY);
    format = f;
  }
  if (format === undefined) throw invalidParameter('request body', body, EXPECTED_BODY);
  if (body.client_request_id !== undefined && typeof body.client_request_id !== 'string') throw invalidParameter('client_request_id', body.client_request_id, 'a string');
  const params = body.params;
  if (params !== undefined && !isObject(params)) throw invalidParameter('params', params, 'an object of parameter values');
  return { inputs: decodeInputs(format, body[format], signature), params, format };
}

function decodeInputs(format: MlflowFormat, value: unknown, signature: Signature): Record<string, Tensor> {
  switch (format) {
    case 'dataframe_split': return frameInputs(splitFrame(value), signature);
    case 'dataframe_records': return frameInputs(recordsFrame(value, format), signature);
    case 'instances':
      // A list of objects is a frame keyed by input name; anything else is rows of the sole input.
      if (Array.isArray(value) && isObject(value[0])) return byNameInputs(recordsFrame(value, format), signature);
      return soleInput(value, signature, format);
    case 'inputs':
      if (isObject(value)) return objectInputs(value, signature);
      return soleInput(value, signature, format);
  }
}

/** `instances: [[...], ...]` or `inputs: [[...], ...]`: the whole value is the model's only input. */
function soleInput(value: unknown, signature: Signature, field: string): Record<string, Tensor> {
  const spec = signature.inputs[0];
  if (spec === undefined || signature.inputs.length > 1) {
    throw invalidParameter(field, value, `an object keyed by input name (this model has ${signature.inputs.length} inputs: ${signature.inputs.map((s) => s.name).join(', ')})`);
  }
  return { [spec.name]: nestedTensor(value, spec, field) };
}

/** `inputs: {name: nested, ...}`: columnar TF-serving format. */
function objectInputs(value: Record<string, unknown>, signature: Signature): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const name in value) {
    const field = `inputs.${name}`;
    out[name] = nestedTensor(value[name], inputSpec(signature, name, field, value[name]), field);
  }
  checkAllInputs(signature.inputs, out, 'inputs', value);
  return out;
}

/**
 * A dataframe as sent: rows of cells, addressed by column. `keyed` rows are objects keyed by column
 * name (`dataframe_records`, `instances`); the others are arrays (`dataframe_split.data`).
 */
interface Frame {
  /** Where the rows are, for messages: `dataframe_split.data`, `dataframe_records`, `instances`. */
  field: string;
  /** Where the column names are, for messages. */
  columnsField: string;
  /** Column names; undefined when `dataframe_split` omits `columns`. */
  columns: string[] | undefined;
  columnCount: number;
  rows: unknown[];
  keyed: boolean;
}

function splitFrame(value: unknown): Frame {
  const field = 'dataframe_split';
  if (!isObject(value)) throw invalidParameter(field, value, 'an object {columns, data, index?}');
  checkKeys(value, SPLIT_KEYS, field);
  const { columns, data, index } = value;
  if (!Array.isArray(data)) throw invalidParameter(`${field}.data`, data, 'a list of rows, each a list of cell values');
  let names: string[] | undefined;
  if (columns !== undefined) {
    if (!Array.isArray(columns) || !columns.every((c) => typeof c === 'string' || typeof c === 'number')) {
      throw invalidParameter(`${field}.columns`, columns, 'a list of column names');
    }
    // pandas writes an unnamed frame's columns as 0, 1, ...
    names = columns.map(String);
  }
  const columnCount = names?.length ?? (Array.isArray(data[0]) ? data[0].length : 0);
  for (let r = 0; r < data.length; r++) {
    const row: unknown = data[r];
    if (!Array.isArray(row) || row.length !== columnCount) {
      throw invalidParameter(`${field}.data[${r}]`, row, `a row of ${columnCount} cell values, one per column`);
    }
  }
  if (index !== undefined && !(Array.isArray(index) && index.length === data.length)) {
    throw invalidParameter(`${field}.index`, index, `a list of ${data.length} row labels, one per row of data`);
  }
  return { field: `${field}.data`, columnsField: `${field}.columns`, columns: names, columnCount, rows: data, keyed: false };
}

/** A list of row objects; the first row's keys are the columns and every row must have exactly those. */
function recordsFrame(value: unknown, field: string): Frame {
  if (!Array.isArray(value)) throw invalidParameter(field, value, 'a list of row objects');
  const first: unknown = value[0];
  if (value.length > 0 && !isObject(first)) throw invalidParameter(`${field}[0]`, first, 'a row object keyed by column name');
  const columns = isObject(first) ? Object.keys(first) : [];
  const known = new Set(columns);
  const fail = (path: string, v: unknown): FerryError =>
    invalidParameter(path, v, `an object with the same keys as ${field}[0] (${columns.join(', ')})`);
  for (let r = 0; r < value.length; r++) {
    const row: unknown = value[r];
    if (!isObject(row)) throw fail(`${field}[${r}]`, row);
    // Equal counts of unique, known keys mean the same key set. Rows almost always list their keys
    // in the first row's order, so the positional compare spares most Set lookups.
    const keys = Object.keys(row);
    for (let k = 0; k < keys.length; k++) {
      const key = keys[k]!;
      if (key !== columns[k] && !known.has(key)) throw fail(`${field}[${r}].${key}`, row[key]);
    }
    if (keys.length !== columns.length) throw fail(`${field}[${r}]`, row);
  }
  return { field, columnsField: `${field}[0]`, columns, columnCount: columns.length, rows: value, keyed: true };
}

/** The cells of some columns of a frame, row by row: one piece per cell. */
function frameCells(frame: Frame, cols: readonly number[]): Pieces {
  const width = cols.length;
  const names = frame.columns ?? [];
  return {
    count: frame.rows.length * width,
    at(i) {
      const r = Math.floor(i / width);
      const c = cols[i - r * width]!;
      const row = frame.rows[r];
      return frame.keyed ? (row as Record<string, unknown>)[names[c]!] : (row as unknown[])[c];
    },
    where(i) {
      const r = Math.floor(i / width);
      const c = cols[i - r * width]!;
      return frame.keyed ? `${frame.field}[${r}].${names[c]!}` : `${frame.field}[${r}][${c}]`;
    },
  };
}

/**
 * Dataframe columns are one-dimensional, so a column of scalars fits both `x: [-1]` and `x: [-1, 1]`:
 * add or drop a trailing 1 to follow the declared rank.
 */
function fitTrailingOne(shape: number[], declared: readonly number[] | undefined): number[] {
  if (declared === undefined) return shape;
  if (declared.length === shape.length + 1 && declared.at(-1) === 1) return [...shape, 1];
  if (declared.length === shape.length - 1 && shape.at(-1) === 1) return shape.slice(0, -1);
  return shape;
}

/**
 * The tensor made of columns `cols` of a frame: shape [rows, ...cell] for one column taken by
 * name, [rows, columns, ...cell] for the whole frame as a matrix.
 */
function columnsTensor(frame: Frame, cols: readonly number[], spec: TensorSpec, matrix: boolean): Tensor {
  // A whole split frame is already one nested array: read it in one piece, not cell by cell.
  const whole = matrix && !frame.keyed;
  const pieces = whole ? wholeValue(frame.rows, frame.field) : frameCells(frame, cols);
  const first: unknown = pieces.count > 0 ? pieces.at(0) : undefined;
  const pieceDims = pieces.count > 0 ? inferDims(first, pieces.where(0)) : [];
  const outer = whole ? [] : matrix ? [frame.rows.length, cols.length] : [frame.rows.length];
  const shape = fitTrailingOne([...outer, ...pieceDims], spec.shape);
  if (matrix || pieces.count === 0) checkShape(spec, shape, frame.field, frame.rows);
  else checkShape(spec, shape, pieces.where(0), first);
  return readTensor(pieces, pieceDims, spec, shape);
}

/**
 * MLflow's ONNX flavor: a model with one input takes the frame's values as a matrix (any column
 * names), unless the frame is exactly one column named after that input; a model with several
 * inputs takes one column per input, by name.
 */
function frameInputs(frame: Frame, signature: Signature): Record<string, Tensor> {
  const spec = signature.inputs[0];
  const namedColumn = frame.columns?.length === 1 && frame.columns[0] === spec?.name;
  if (spec === undefined || signature.inputs.length > 1 || namedColumn) return byNameInputs(frame, signature);
  const all = Array.from({ length: frame.columnCount }, (_, c) => c);
  return { [spec.name]: columnsTensor(frame, all, spec, true) };
}

function byNameInputs(frame: Frame, signature: Signature): Record<string, Tensor> {
  const { columns } = frame;
  if (columns === undefined) {
    throw invalidParameter(frame.columnsField, columns, `the column names, one per model input (${signature.inputs.map((s) => s.name).join(', ')})`);
  }
  const out: Record<string, Tensor> = {};
  for (let c = 0; c < columns.length; c++) {
    const name = columns[c]!;
    const field = frame.keyed ? `${frame.columnsField}.${name}` : `${frame.columnsField}[${c}]`;
    const spec = inputSpec(signature, name, field, name);
    if (Object.hasOwn(out, name)) throw invalidParameter(field, name, 'each column name once');
    out[name] = columnsTensor(frame, [c], spec, false);
  }
  checkAllInputs(signature.inputs, out, frame.columnsField, columns);
  return out;
}

/** One output's rows: the values of a MapSequence or JsonSequence, else the row values of a tensor. */
function rowsOf(name: string, value: OutputValue): { count: number; row: (r: number) => unknown } {
  if (isRowSequence(value)) return { count: value.data.length, row: (r) => value.data[r] };
  const count = value.shape[0];
  if (count === undefined) throw new FerryError('MODEL_ERROR', `Output '${name}' is a scalar; cannot split it into one record per row.`);
  return { count, row: rowValues(value) };
}

/**
 * Encodes model outputs as MLflow's `{"predictions": ...}`.
 * - one output: its rows (nested arrays; a MapSequence or JsonSequence as its list of values);
 * - several outputs, dataframe request: one record per row, keyed by output name;
 * - several outputs, `instances`/`inputs` request: an object keyed by output name.
 * @throws FerryError MODEL_ERROR (500) when records are needed but the outputs' row counts differ.
 */
export function encodeMlflowResponse(outputs: Record<string, OutputValue>, format: MlflowFormat): { predictions: unknown } {
  const names = Object.keys(outputs);
  if (names.length === 1) return { predictions: outputJson(outputs[names[0]!]!) };
  if (format === 'instances' || format === 'inputs') {
    const predictions: Record<string, unknown> = {};
    for (const name of names) predictions[name] = outputJson(outputs[name]!);
    return { predictions };
  }
  const columns = names.map((name) => ({ name, ...rowsOf(name, outputs[name]!) }));
  const count = columns[0]?.count ?? 0;
  const mismatch = columns.find((c) => c.count !== count);
  if (mismatch !== undefined) {
    throw new FerryError('MODEL_ERROR', `Outputs have different row counts (${columns[0]!.name}: ${count}, ${mismatch.name}: ${mismatch.count}); cannot build one record per row.`);
  }
  const records = new Array<Record<string, unknown>>(count);
  for (let r = 0; r < count; r++) {
    const record: Record<string, unknown> = {};
    for (const c of columns) record[c.name] = c.row(r);
    records[r] = record;
  }
  return { predictions: records };
}

function outputJson(value: OutputValue): unknown {
  return isRowSequence(value) ? value.data : nestedArray(value);
}
