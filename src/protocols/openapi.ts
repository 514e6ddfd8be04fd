/**
 * An endpoint's query schema as an OpenAPI 3.1 document, built from the signatures of the model
 * versions it serves (Databricks' `GET /api/2.0/serving-endpoints/{name}/openapi`): the MLflow
 * scoring route (`inputs`, `dataframe_split`, `dataframe_records`, `instances`), the OIP v2
 * inference route, and the answers of both, with one schema per input and output from its dtype
 * and shape. Several served entities with different signatures give one alternative (`oneOf`)
 * per signature. Example: linear, x float32 [-1, 4] → y float32 [-1, 1]: `inputs` is
 * `{type: array, items: {type: array, items: {type: number}, minItems: 4, maxItems: 4}}`.
 */
import type { DType, RowSequence, Signature, TensorSpec } from '../tensor/index.js';
import { dtypeToV2 } from './v2.js';

type Schema = Record<string, unknown>;

/** JSON schema of one element of a dtype. */
function elementSchema(dtype: DType | RowSequence['dtype']): Schema {
  switch (dtype) {
    case 'bool': return { type: 'boolean' };
    case 'string': return { type: 'string' };
    case 'map': return { type: 'object', additionalProperties: { type: 'number' } };
    case 'json': return {};
    case 'float16': case 'float32': case 'float64': return { type: 'number', format: dtype === 'float64' ? 'double' : 'float' };
    default: return { type: 'integer', format: dtype };
  }
}

/** Nested arrays for the dimensions after the first (one row), fixed sizes as min/maxItems. */
function rowSchema(t: { dtype: DType | RowSequence['dtype']; shape: number[] | undefined }): Schema {
  let s = elementSchema(t.dtype);
  const dims = t.shape?.slice(1) ?? [];
  for (let i = dims.length - 1; i >= 0; i--) {
    const d = dims[i] as number;
    s = { type: 'array', items: s, ...(d >= 0 ? { minItems: d, maxItems: d } : {}) };
  }
  return s;
}

/** A tensor as a list of rows (`shape` undefined: any JSON per row). */
function rowsSchema(t: { dtype: DType | RowSequence['dtype']; shape: number[] | undefined }): Schema {
  return { type: 'array', items: rowSchema(t) };
}

function describe(t: { name: string; dtype: DType | RowSequence['dtype']; shape: number[] | undefined }): string {
  return `${t.name}: ${t.dtype}${t.shape === undefined ? '' : ` [${t.shape.join(', ')}]`}`;
}

function mlflowRequest(sig: Signature): Schema {
  const single = sig.inputs.length === 1 ? sig.inputs[0] as TensorSpec : undefined;
  const byName = { type: 'object', properties: Object.fromEntries(sig.inputs.map((i) => [i.name, rowsSchema(i)])), required: sig.inputs.map((i) => i.name), additionalProperties: false };
  const record = { type: 'object', properties: Object.fromEntries(sig.inputs.map((i) => [i.name, rowSchema(i)])), required: sig.inputs.map((i) => i.name), additionalProperties: false };
  const formats: Schema[] = [
    { type: 'object', properties: { inputs: single === undefined ? byName : rowsSchema(single), params: { type: 'object' } }, required: ['inputs'], additionalProperties: false },
    {
      type: 'object', required: ['dataframe_split'], additionalProperties: false,
      properties: { dataframe_split: { type: 'object', properties: { columns: { type: 'array', items: { enum: sig.inputs.map((i) => i.name) } }, data: { type: 'array', items: { type: 'array' } } }, required: ['data'] }, params: { type: 'object' } },
    },
    { type: 'object', properties: { dataframe_records: { type: 'array', items: record }, params: { type: 'object' } }, required: ['dataframe_records'], additionalProperties: false },
    { type: 'object', properties: { instances: single === undefined ? { type: 'array', items: record } : rowsSchema(single), params: { type: 'object' } }, required: ['instances'], additionalProperties: false },
  ];
  return { oneOf: formats, description: `Inputs: ${sig.inputs.map(describe).join('; ')}` };
}

function mlflowResponse(sig: Signature): Schema {
  const single = sig.outputs.length === 1 ? sig.outputs[0] : undefined;
  const predictions = single === undefined
    ? { type: 'object', properties: Object.fromEntries(sig.outputs.map((o) => [o.name, rowsSchema(o)])) }
    : rowsSchema(single);
  return { type: 'object', properties: { predictions }, required: ['predictions'], description: `Outputs: ${sig.outputs.map(describe).join('; ')}` };
}

function v2Tensor(t: { name: string; dtype: DType | RowSequence['dtype']; shape: number[] | undefined }, withData: boolean): Schema {
  return {
    type: 'object',
    properties: {
      name: { const: t.name }, datatype: { const: dtypeToV2(t.dtype) },
      shape: { type: 'array', items: { type: 'integer', minimum: 0 }, ...(t.shape === undefined ? {} : { minItems: t.shape.length, maxItems: t.shape.length }) },
      ...(withData ? { data: { type: 'array', items: elementSchema(t.dtype === 'map' || t.dtype === 'json' ? 'string' : t.dtype) }, parameters: { type: 'object' } } : {}),
    },
    required: ['name', 'datatype', 'shape'],
  };
}

function v2Request(sig: Signature): Schema {
  return {
    type: 'object',
    properties: {
      id: { type: 'string' }, parameters: { type: 'object' },
      inputs: { type: 'array', items: { oneOf: sig.inputs.map((i) => v2Tensor(i, true)) }, minItems: sig.inputs.length, maxItems: sig.inputs.length },
      outputs: { type: 'array', items: { type: 'object', properties: { name: { enum: sig.outputs.map((o) => o.name) }, parameters: { type: 'object' } }, required: ['name'] } },
    },
    required: ['inputs'],
  };
}

function v2Response(sig: Signature): Schema {
  return {
    type: 'object',
    properties: {
      model_name: { type: 'string' }, model_version: { type: 'string' }, id: { type: 'string' },
      outputs: { type: 'array', items: { oneOf: sig.outputs.map((o) => v2Tensor(o, true)) } },
    },
    required: ['model_name', 'outputs'],
  };
}

const ERROR_SCHEMA: Schema = { type: 'object', properties: { error_code: { type: 'string' }, message: { type: 'string' } }, required: ['error_code', 'message'] };
const V2_ERROR_SCHEMA: Schema = { type: 'object', properties: { error: { type: 'string' } }, required: ['error'] };

const either = (schemas: Schema[]): Schema => (schemas.length === 1 ? schemas[0] as Schema : { oneOf: schemas });

const ERRORS: ReadonlyArray<[status: string, description: string]> = [
  ['400', 'invalid input (the message names the field)'], ['401', 'no valid token'], ['403', 'no CAN_QUERY on the endpoint'], ['404', 'no such endpoint'],
  ['429', 'rate limit or full buffer (Retry-After)'], ['503', 'no replica ready in time (Retry-After)'], ['504', 'the model took longer than the timeout'],
];

function errorResponses(schema: Schema): Record<string, unknown> {
  return Object.fromEntries(ERRORS.map(([status, description]) => [status, { description, content: { 'application/json': { schema } } }]));
}

/**
 * The OpenAPI document of endpoint `name`: one signature per distinct signature among its served
 * entities (`entities` names the entities each one belongs to).
 */
export function endpointOpenApi(name: string, signatures: ReadonlyArray<{ entities: string[]; signature: Signature }>): Record<string, unknown> {
  const sigs = signatures.map((s) => s.signature);
  const security = [{ bearerAuth: [] }];
  return {
    openapi: '3.1.0',
    info: { title: name, version: '1', description: `Query schema of serving endpoint '${name}' (served entities: ${signatures.flatMap((s) => s.entities).join(', ')}).` },
    components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer' } } },
    security,
    paths: {
      [`/serving-endpoints/${name}/invocations`]: {
        post: {
          summary: 'Score with MLflow scoring JSON',
          requestBody: { required: true, content: { 'application/json': { schema: either(sigs.map(mlflowRequest)) } } },
          responses: { 200: { description: 'predictions', content: { 'application/json': { schema: either(sigs.map(mlflowResponse)) } } }, ...errorResponses(ERROR_SCHEMA) },
        },
      },
      [`/v2/models/${name}/infer`]: {
        post: {
          summary: 'Infer with the Open Inference Protocol v2 (JSON; the binary tensor extension is also accepted)',
          requestBody: { required: true, content: { 'application/json': { schema: either(sigs.map(v2Request)) } } },
          responses: { 200: { description: 'outputs', content: { 'application/json': { schema: either(sigs.map(v2Response)) } } }, ...errorResponses(V2_ERROR_SCHEMA) },
        },
      },
    },
  };
}
