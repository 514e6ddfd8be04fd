/**
 * Official clients with their default arguments, end to end against a real server and real
 * replica processes. Each request is the one the client puts on the wire, reproduced from the
 * client's source where the client itself cannot run here (the Python SDKs): the test names the
 * client version and the function it mirrors.
 *
 * - Databricks SDK for Python 0.133.0, `databricks/sdk/service/serving.py` (`ServingEndpointsAPI`);
 *   the OpenAPI documents are checked with ajv (a JSON Schema validator) against real bodies.
 * - tritonclient 2.x HTTP (triton-inference-server/client at 58a44ca, `tritonclient/http/_client.py`
 *   `InferenceServerClient`, `_utils.py` `_get_inference_request`, `_infer_input.py`
 *   `InferInput.set_data_from_numpy(binary_data=True)`, `_infer_result.py` `InferResult`): binary
 *   tensors by default, `{"error": ...}` bodies decoded on every non-200 answer.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import Ajv from 'ajv';
import { identityTypesFixture, writeFixtures, type FixturePaths } from '../src/fixtures/index.js';
import type { Tensor } from '../src/tensor/index.js';
import type { FerryServer } from '../src/server/index.js';
import { apiDocument } from '../src/server/openapi.js';
import { FERRY_VERSION } from '../src/version.js';
import { ADMIN_TOKEN, ferryChildren, ROOT, registerVersion, request, startTestServer, tempDir, waitFor, waitSettled, type HttpResult } from './support/index.js';

let dir: string;
let dataDir: string;
let fx: FixturePaths;
let server: FerryServer;

/** The headers `ApiClient.do` sends with a JSON body (`Accept`, `Content-Type`) and its User-Agent. */
const DATABRICKS_HEADERS = { accept: 'application/json', 'user-agent': 'databricks-sdk-py/0.133.0 python/3.12.3 os/linux auth/pat' };

/** A request as the Databricks SDK sends it: `api.do(method, path, body=..., headers=...)`. */
const databricks = (method: string, p: string, json?: unknown): Promise<HttpResult> =>
  request({ url: server.url, method, path: p, headers: DATABRICKS_HEADERS, ...(json === undefined ? {} : { json }) });

before(async () => {
  dir = await tempDir('ferry-clients-');
  dataDir = path.join(dir, 'data');
  fx = await writeFixtures(path.join(dir, 'fixtures'));
  server = await startTestServer(dataDir);
  await registerVersion(server.url, 'linear', fx.linear);
  await registerVersion(server.url, 'linear', fx.linear);
  await registerVersion(server.url, 'types', fx.identityTypes);
  for (const [name, model] of [['lin', 'linear'], ['types', 'types']]) {
    const r = await request({ url: server.url, method: 'POST', path: '/api/2.0/serving-endpoints', json: { name, config: { served_entities: [{ entity_name: model, entity_version: '1' }] } } });
    assert.equal(r.status, 200, r.text);
  }
  for (const name of ['lin', 'types']) assert.equal((await waitSettled(server.url, name)).state.ready, 'READY');
});

after(async () => {
  await server?.close();
  assert.deepEqual(await ferryChildren(dataDir), [], 'no replica outlives the server');
  await fsp.rm(dir, { recursive: true, force: true });
});

test('docs/openapi.json describes every route of the server (regenerate: npm run openapi)', async () => {
  const doc = JSON.parse(await fsp.readFile(path.join(ROOT, 'docs', 'openapi.json'), 'utf8')) as { paths: Record<string, Record<string, { 'x-ferry-access': string; security?: unknown[] }>> };
  assert.deepEqual(doc, apiDocument(server.router.list(), FERRY_VERSION), 'docs/openapi.json is out of date: run `npm run openapi`');
  assert.equal(doc.paths['/v2/models/{name}/infer']?.post?.['x-ferry-access'], 'CAN_QUERY on the serving endpoint');
  assert.deepEqual(doc.paths['/v2']?.get?.security, []);
});

describe('Databricks SDK for Python 0.133.0', () => {
  test('create_and_wait with EndpointCoreConfigInput(name=...): config.name is accepted; update_config with legacy served_models', async () => {
    // w.serving_endpoints.create_and_wait(name="dbx", config=EndpointCoreConfigInput(name="dbx",
    //   served_entities=[ServedEntityInput(entity_name="linear", entity_version="1", workload_size="Small", scale_to_zero_enabled=False)]))
    // as_dict() writes the keys it has, alphabetically within each object.
    const created = await databricks('POST', '/api/2.0/serving-endpoints', {
      config: { name: 'dbx', served_entities: [{ entity_name: 'linear', entity_version: '1', scale_to_zero_enabled: false, workload_size: 'Small' }] },
      name: 'dbx',
    });
    assert.equal(created.status, 200, created.text);
    // The waiter (wait_get_serving_endpoint_not_updating) polls GET until config_update is NOT_UPDATING.
    const ready = await waitSettled(server.url, 'dbx');
    assert.equal(ready.state.config_update, 'NOT_UPDATING');
    assert.equal(ready.state.ready, 'READY');

    // A config naming another endpoint is refused, naming the field.
    const other = await databricks('POST', '/api/2.0/serving-endpoints', {
      config: { name: 'elsewhere', served_entities: [{ entity_name: 'linear', entity_version: '1' }] }, name: 'dbx2',
    });
    assert.equal(other.status, 400, other.text);
    assert.equal(other.json.error_code, 'INVALID_PARAMETER_VALUE');
    assert.match(other.json.message, /"elsewhere" for 'config\.name'.*'dbx2'/);

    // w.serving_endpoints.update_config_and_wait(name="dbx", served_models=[ServedModelInput(model_name="linear",
    //   model_version="2", scale_to_zero_enabled=False, workload_size="Small")],
    //   traffic_config=TrafficConfig(routes=[Route(served_model_name="linear-2", traffic_percentage=100)]))
    const updated = await databricks('PUT', '/api/2.0/serving-endpoints/dbx/config', {
      served_models: [{ model_name: 'linear', model_version: '2', scale_to_zero_enabled: false, workload_size: 'Small' }],
      traffic_config: { routes: [{ served_model_name: 'linear-2', traffic_percentage: 100 }] },
    });
    assert.equal(updated.status, 200, updated.text);
    const after2 = await waitSettled(server.url, 'dbx');
    assert.equal(after2.state.config_update, 'NOT_UPDATING', JSON.stringify(after2.state));
    assert.deepEqual(after2.config.served_entities.map((e: any) => [e.name, e.entity_name, e.entity_version]), [['linear-2', 'linear', '2']]);
    const scored = await databricks('POST', '/serving-endpoints/dbx/invocations', { inputs: [[1, 2, 3, 4]] });
    assert.equal(scored.status, 200, scored.text);
    assert.deepEqual(scored.json.predictions, [[5.625]]);

    // Errors in the legacy list name its own fields.
    const missing = await databricks('PUT', '/api/2.0/serving-endpoints/dbx/config', { served_models: [{ model_name: 'linear', model_version: '9', scale_to_zero_enabled: false }] });
    assert.equal(missing.status, 400, missing.text);
    assert.match(missing.json.message, /config\.served_models\[0\].*model_version "9"/);
    const both = await databricks('PUT', '/api/2.0/serving-endpoints/dbx/config', {
      served_entities: [{ entity_name: 'linear', entity_version: '1' }], served_models: [{ model_name: 'linear', model_version: '1', scale_to_zero_enabled: false }],
    });
    assert.equal(both.status, 400, both.text);
    assert.match(both.json.message, /'config\.served_models'/);
    const neither = await databricks('PUT', '/api/2.0/serving-endpoints/dbx/config', {});
    assert.equal(neither.status, 400, neither.text);
    assert.match(neither.json.message, /'config\.served_entities': expected a list of 1-10 served entities/);
  });

  test('get_open_api: the endpoint\'s query schema from its signature, which real bodies satisfy', async () => {
    // w.serving_endpoints.get_open_api(name="lin"): Accept: text/plain, the body read raw.
    const r = await request({ url: server.url, path: '/api/2.0/serving-endpoints/lin/openapi', headers: { ...DATABRICKS_HEADERS, accept: 'text/plain' } });
    assert.equal(r.status, 200, r.text);
    const doc = JSON.parse(r.text);
    assert.equal(doc.openapi, '3.1.0');
    const invocations = doc.paths['/serving-endpoints/lin/invocations'].post;
    const infer = doc.paths['/v2/models/lin/infer'].post;
    const ajv = new Ajv({ unknownFormats: 'ignore' });
    const scoring = ajv.compile(invocations.requestBody.content['application/json'].schema);
    const v2 = ajv.compile(infer.requestBody.content['application/json'].schema);
    const predictions = ajv.compile(invocations.responses['200'].content['application/json'].schema);
    // Bodies the endpoint accepts satisfy the schema; bodies it refuses do not.
    for (const body of [{ inputs: [[1, 2, 3, 4]] }, { dataframe_split: { columns: ['x'], data: [[[1, 2, 3, 4]]] } }, { instances: [[1, 2, 3, 4], [0, 0, 0, 0]] }]) {
      assert.ok(scoring(body), `${JSON.stringify(body)}: ${ajv.errorsText(scoring.errors)}`);
      const scored = await request({ url: server.url, method: 'POST', path: '/serving-endpoints/lin/invocations', json: body });
      assert.equal(scored.status, 200, scored.text);
      assert.ok(predictions(scored.json), ajv.errorsText(predictions.errors));
    }
    for (const body of [{ inputs: [[1, 2, 3]] }, { inputs: [['a', 2, 3, 4]] }, { inputs: [[1, 2, 3, 4]], extra: 1 }]) {
      assert.equal(scoring(body), false, JSON.stringify(body));
      assert.equal((await request({ url: server.url, method: 'POST', path: '/serving-endpoints/lin/invocations', json: body })).status, 400);
    }
    assert.ok(v2({ inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3, 4] }] }), ajv.errorsText(v2.errors));
    assert.equal(v2({ inputs: [{ name: 'x', shape: [1, 4], datatype: 'INT32', data: [1, 2, 3, 4] }] }), false);
    assert.equal((await request({ url: server.url, path: '/api/2.0/serving-endpoints/nope/openapi' })).status, 404);
  });

  test('build_logs, get_permission_levels and patch (tags)', async () => {
    const e = await waitSettled(server.url, 'dbx');
    // w.serving_endpoints.build_logs(name="dbx", served_model_name="linear-2")
    const logs = await databricks('GET', '/api/2.0/serving-endpoints/dbx/served-models/linear-2/build-logs');
    assert.equal(logs.status, 200, logs.text);
    assert.match(logs.json.logs, /served entity 'linear-2' runs linear version 2 \(flavor onnx/);
    const unknown = await databricks('GET', '/api/2.0/serving-endpoints/dbx/served-models/nope/build-logs');
    assert.equal(unknown.status, 404, unknown.text);
    assert.match(unknown.json.message, /Served entity 'nope'/);

    // w.serving_endpoints.get_permission_levels(serving_endpoint_id=endpoint.id)
    const levels = await databricks('GET', `/api/2.0/permissions/serving-endpoints/${e.id as string}/permissionLevels`);
    assert.equal(levels.status, 200, levels.text);
    assert.deepEqual(levels.json.permission_levels.map((l: any) => l.permission_level), ['CAN_VIEW', 'CAN_QUERY', 'CAN_MANAGE']);
    assert.ok(levels.json.permission_levels.every((l: any) => typeof l.description === 'string' && l.description !== ''));
    const noLevels = await databricks('GET', '/api/2.0/permissions/serving-endpoints/no-such-id/permissionLevels');
    assert.equal(noLevels.status, 404, noLevels.text);

    // w.serving_endpoints.patch(name="dbx", add_tags=[EndpointTag(key="team", value="ml"), EndpointTag(key="tier")])
    const added = await databricks('PATCH', '/api/2.0/serving-endpoints/dbx/tags', { add_tags: [{ key: 'team', value: 'ml' }, { key: 'tier' }] });
    assert.equal(added.status, 200, added.text);
    assert.deepEqual(added.json, { tags: [{ key: 'team', value: 'ml' }, { key: 'tier', value: '' }] });
    // w.serving_endpoints.patch(name="dbx", add_tags=[EndpointTag(key="team", value="search")], delete_tags=["tier"])
    const changed = await databricks('PATCH', '/api/2.0/serving-endpoints/dbx/tags', { add_tags: [{ key: 'team', value: 'search' }], delete_tags: ['tier'] });
    assert.deepEqual(changed.json, { tags: [{ key: 'team', value: 'search' }] });
    assert.deepEqual((await databricks('GET', '/api/2.0/serving-endpoints/dbx')).json.tags, [{ key: 'team', value: 'search' }]);
    const bad = await databricks('PATCH', '/api/2.0/serving-endpoints/dbx/tags', { add_tags: [{ key: '' }] });
    assert.equal(bad.status, 400, bad.text);
    assert.match(bad.json.message, /add_tags\[0\]\.key/);
    const many = await databricks('PATCH', '/api/2.0/serving-endpoints/dbx/tags', { add_tags: Array.from({ length: 20 }, (_, i) => ({ key: `k${i}` })) });
    assert.equal(many.status, 400, many.text);
    assert.match(many.json.message, /at most 20 tags/);
  });
});

/** numpy's `tobytes()` of a tensor (little-endian), or tritonclient's `serialize_byte_tensor` for BYTES. */
function npBytes(t: Tensor): Buffer {
  if (t.dtype === 'string') return Buffer.concat((t.data as string[]).flatMap((v) => { const b = Buffer.from(v, 'utf8'); const n = Buffer.alloc(4); n.writeUInt32LE(b.length); return [n, b]; }));
  if (t.dtype === 'bool') return Buffer.from((t.data as boolean[]).map((b) => (b ? 1 : 0)));
  if (t.dtype === 'float16') {
    const out = Buffer.alloc(t.data.length * 2);
    // The fixture's halves are multiples of 1/8 in [-64, 64): exact; encoded by hand from sign, exponent, mantissa.
    (t.data as Float32Array).forEach((v, i) => out.writeUInt16LE(halfBits(v), i * 2));
    return out;
  }
  const a = t.data as Float32Array;
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

function halfBits(v: number): number {
  if (v === 0) return Object.is(v, -0) ? 0x8000 : 0;
  const sign = v < 0 ? 0x8000 : 0;
  const a = Math.abs(v);
  const e = Math.floor(Math.log2(a));
  return sign | ((e + 15) << 10) | Math.round((a / 2 ** e - 1) * 1024);
}

const V2_TYPES: Record<string, string> = { float16: 'FP16', float32: 'FP32', float64: 'FP64', bool: 'BOOL', int64: 'INT64', string: 'BYTES', uint8: 'UINT8' };

/**
 * `client.infer(model, inputs, outputs=...)` as tritonclient.http sends it: the JSON header
 * (rapidjson, compact), then each binary input's bytes; `Inference-Header-Content-Length` set
 * when there are any. No outputs listed → `parameters.binary_data_output: true`.
 */
function tritonInfer(inputs: Record<string, Tensor>, opts: { binaryInputs?: boolean; outputs?: Array<{ name: string; binary_data: boolean }> } = {}): { body: Buffer; headers: Record<string, string> } {
  const binary = opts.binaryInputs ?? true;
  const raw: Buffer[] = [];
  const tensors = Object.entries(inputs).map(([name, t]) => {
    const head = { name, shape: t.shape, datatype: V2_TYPES[t.dtype] };
    if (!binary) return { ...head, data: Array.from(t.data as ArrayLike<unknown>, (v) => (typeof v === 'bigint' ? Number(v) : v)) };
    const bytes = npBytes(t);
    raw.push(bytes);
    return { ...head, parameters: { binary_data_size: bytes.length } };
  });
  const request: Record<string, unknown> = { inputs: tensors };
  if (opts.outputs !== undefined) request.outputs = opts.outputs.map((o) => ({ name: o.name, parameters: { binary_data: o.binary_data } }));
  else request.parameters = { binary_data_output: true };
  const json = Buffer.from(JSON.stringify(request));
  return { body: Buffer.concat([json, ...raw]), headers: raw.length > 0 ? { 'inference-header-content-length': String(json.length) } : {} };
}

/** InferResult: the JSON header (its length from the response header) and each binary output's bytes. */
function inferResult(r: HttpResult & { raw: Buffer }): { result: any; bytes: Map<string, Buffer> } {
  const length = r.headers['inference-header-content-length'];
  if (length === undefined) return { result: JSON.parse(r.raw.toString('utf8')), bytes: new Map() };
  const result = JSON.parse(r.raw.subarray(0, Number(length)).toString('utf8'));
  const bytes = new Map<string, Buffer>();
  let off = Number(length);
  for (const o of result.outputs) {
    const size = o.parameters?.binary_data_size;
    if (size === undefined) continue;
    bytes.set(o.name, r.raw.subarray(off, off + size));
    off += size;
  }
  assert.equal(off, r.raw.length, 'the binary outputs fill the rest of the body');
  return { result, bytes };
}

/** A raw POST (Buffer body, raw answer bytes kept). */
async function post(p: string, body: Buffer, headers: Record<string, string> = {}, token?: string | null): Promise<HttpResult & { raw: Buffer }> {
  const u = new URL(server.url);
  const res = await fetch(new URL(p, u), { method: 'POST', body, headers: { ...headers, ...(token === null ? {} : { authorization: `Bearer ${token ?? ADMIN_TOKEN}` }) } });
  const raw = Buffer.from(await res.arrayBuffer());
  const text = raw.toString('utf8');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: Object.fromEntries(res.headers), text, json, raw };
}

describe('tritonclient (HTTP) and KServe clients: Open Inference Protocol v2', () => {
  test('get_server_metadata: GET /v2; errors on /v2/* are {"error": "..."}, elsewhere Ferry\'s shape', async () => {
    const meta = await request({ url: server.url, path: '/v2', token: null });
    assert.equal(meta.status, 200, meta.text);
    assert.equal(meta.json.name, 'ferry');
    assert.match(meta.json.version, /^\d+\.\d+\.\d+/);
    assert.deepEqual([...meta.json.extensions].sort(), ['binary_tensor_data', 'model_configuration', 'statistics']);

    // _get_error: json.loads(body)["error"] on any non-200 answer.
    const missing = await request({ url: server.url, path: '/v2/models/nope' });
    assert.equal(missing.status, 404);
    assert.deepEqual(Object.keys(missing.json), ['error']);
    assert.match(missing.json.error, /Serving endpoint 'nope'/);
    const noToken = await request({ url: server.url, path: '/v2/models/lin', token: null });
    assert.equal(noToken.status, 401);
    assert.equal(typeof noToken.json.error, 'string');
    const badType = await request({ url: server.url, method: 'POST', path: '/v2/models/lin/infer', json: { inputs: [{ name: 'x', shape: [1, 4], datatype: 'INT32', data: [1, 2, 3, 4] }] } });
    assert.equal(badType.status, 400);
    assert.deepEqual(Object.keys(badType.json), ['error']);
    assert.match(badType.json.error, /inputs\[0\]\.datatype/);
    const notRoute = await request({ url: server.url, path: '/v2/nothing/here' });
    assert.equal(notRoute.status, 404);
    assert.equal(typeof notRoute.json.error, 'string');
    // Ferry's own API keeps its shape.
    const ferry = await request({ url: server.url, path: '/api/2.0/serving-endpoints/nope' });
    assert.equal(ferry.json.error_code, 'RESOURCE_DOES_NOT_EXIST');
  });

  test('infer with default arguments: binary inputs and outputs, the same numbers as JSON', async () => {
    const x: Tensor = { dtype: 'float32', shape: [2, 4], data: Float32Array.of(1, 2, 3, 4, 0, 0.5, -1, 2) };
    const { body, headers } = tritonInfer({ x });
    const r = await post('/v2/models/lin/infer', body, headers);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['content-type'], 'application/octet-stream');
    const { result, bytes } = inferResult(r);
    assert.deepEqual(result.outputs, [{ name: 'y', datatype: 'FP32', shape: [2, 1], parameters: { binary_data_size: 8 } }]);
    const y = bytes.get('y') as Buffer;
    const binaryY = [y.readFloatLE(0), y.readFloatLE(4)];
    const json = await request({ url: server.url, method: 'POST', path: '/v2/models/lin/infer', json: { inputs: [{ name: 'x', shape: [2, 4], datatype: 'FP32', data: [1, 2, 3, 4, 0, 0.5, -1, 2] }] } });
    assert.equal(json.status, 200, json.text);
    assert.deepEqual(binaryY, json.json.outputs[0].data);
    assert.deepEqual(binaryY, [5.625, -1.875]);
    // The versioned route and a JSON request that asks for binary outputs.
    const versioned = await post('/v2/models/lin/versions/1/infer', body, headers);
    assert.deepEqual(inferResult(versioned).bytes.get('y'), y);
    const jsonIn = tritonInfer({ x }, { binaryInputs: false });
    const mixed = await post('/v2/models/lin/infer', jsonIn.body, jsonIn.headers);
    assert.equal(mixed.status, 200, mixed.text);
    assert.deepEqual(inferResult(mixed).bytes.get('y'), y);
  });

  test('every datatype as binary tensors in and out (identity model), some outputs asked as JSON', async () => {
    const inputs = identityTypesFixture.example(3);
    const outputs = Object.keys(inputs).map((name, i) => ({ name: `${name}_out`, binary_data: i % 2 === 0 }));
    const { body, headers } = tritonInfer(inputs, { outputs });
    const r = await post('/v2/models/types/infer', body, headers);
    assert.equal(r.status, 200, r.text);
    const { result, bytes } = inferResult(r);
    for (const [i, [name, t]] of Object.entries(inputs).entries()) {
      const out = result.outputs.find((o: any) => o.name === `${name}_out`);
      assert.equal(out.datatype, V2_TYPES[t.dtype], name);
      assert.deepEqual(out.shape, t.shape, name);
      if (i % 2 === 0) assert.deepEqual(bytes.get(`${name}_out`), npBytes(t), `${name}: the bytes sent come back`);
      else assert.deepEqual(out.data, Array.from(t.data as ArrayLike<unknown>, (v) => (typeof v === 'bigint' ? Number(v) : v)), `${name} as JSON`);
    }
    // INT64 beyond 2^53 survives binary exactly (JSON cannot carry it).
    const count = inputs.count as Tensor;
    assert.ok(outputs.find((o) => o.name === 'count_out')?.binary_data, 'count_out is binary');
    assert.equal((bytes.get('count_out') as Buffer).readBigInt64LE(0), (count.data as BigInt64Array)[0]);
  });

  test('malformed binary requests are 400 naming the field; random bodies never get a 5xx', async () => {
    const x: Tensor = { dtype: 'float32', shape: [1, 4], data: Float32Array.of(1, 2, 3, 4) };
    const good = tritonInfer({ x });
    const json = good.body.subarray(0, Number(good.headers['inference-header-content-length']));
    const cases: Array<[string, Buffer, Record<string, string>, RegExp]> = [
      ['header past the body', good.body, { 'inference-header-content-length': String(good.body.length + 1) }, /Inference-Header-Content-Length/],
      ['not a number', good.body, { 'inference-header-content-length': 'ten' }, /Inference-Header-Content-Length/],
      ['short tensor', good.body.subarray(0, good.body.length - 4), good.headers, /binary_data_size.*bytes left/],
      ['bytes left over', Buffer.concat([good.body, Buffer.alloc(4)]), good.headers, /4 bytes follow the last one/],
      ['binary_data_size without the header', good.body, {}, /./],
      ['compressed', good.body, { ...good.headers, 'content-encoding': 'gzip' }, /Content-Encoding 'gzip'/],
    ];
    for (const [what, body, headers, message] of cases) {
      const r = await post('/v2/models/lin/infer', body, headers);
      assert.ok(r.status === 400 || r.status === 415, `${what}: ${r.status} ${r.text}`);
      assert.match(r.json.error, message, what);
    }
    const wrongSize = Buffer.from(JSON.stringify({ inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', parameters: { binary_data_size: 12 } }] }));
    const r = await post('/v2/models/lin/infer', Buffer.concat([wrongSize, Buffer.alloc(12)]), { 'inference-header-content-length': String(wrongSize.length) });
    assert.equal(r.status, 400);
    assert.match(r.json.error, /inputs\[0\]\.parameters\.binary_data_size.*16 bytes/);
    const flags = identityTypesFixture.example(2);
    const badBool = tritonInfer({ ...flags, flag: { dtype: 'bool', shape: [2], data: [true, false] } });
    const boolAt = badBool.body.length - npBytes(flags.byte as Tensor).length - npBytes(flags.wide as Tensor).length - npBytes(flags.text as Tensor).length - npBytes(flags.count as Tensor).length - 2;
    const corrupt = Buffer.from(badBool.body);
    corrupt[boolAt] = 7;
    const bool = await post('/v2/models/types/infer', corrupt, badBool.headers);
    assert.equal(bool.status, 400, bool.text);
    assert.match(bool.json.error, /0 or 1/);
    // Fuzz: random header lengths and random bytes after a valid header.
    let seed = 7;
    const rand = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
    for (let i = 0; i < 60; i++) {
      const tail = Buffer.from(Array.from({ length: rand(40) }, () => rand(256)));
      const body = i % 2 === 0 ? Buffer.concat([json, tail]) : Buffer.concat([json.subarray(0, rand(json.length)), tail]);
      const f = await post('/v2/models/lin/infer', body, { 'inference-header-content-length': String(rand(body.length + 2)) });
      assert.ok(f.status < 500, `fuzz ${i}: ${f.status} ${f.text}`);
      assert.equal(typeof f.json?.error === 'string' || f.status === 200, true, `fuzz ${i}: ${f.text}`);
    }
  });

  test('model configuration, repository index and statistics extensions', async () => {
    // get_model_config("lin")
    const config = await request({ url: server.url, path: '/v2/models/lin/config' });
    assert.equal(config.status, 200, config.text);
    assert.deepEqual(config.json, {
      name: 'lin', platform: 'onnxruntime_onnx', max_batch_size: 64,
      input: [{ name: 'x', data_type: 'TYPE_FP32', dims: [4] }], output: [{ name: 'y', data_type: 'TYPE_FP32', dims: [1] }],
      dynamic_batching: { max_queue_delay_microseconds: 0, preferred_batch_size: [] },
    });
    const types = await request({ url: server.url, path: '/v2/models/types/versions/1/config' });
    assert.equal(types.json.input.find((t: any) => t.name === 'text').data_type, 'TYPE_STRING');
    // get_model_repository_index(): POST with an empty body.
    const index = await post('/v2/repository/index', Buffer.alloc(0));
    assert.equal(index.status, 200, index.text);
    assert.deepEqual(index.json.filter((m: any) => m.name === 'lin'), [{ name: 'lin', version: '1', state: 'READY', reason: '' }]);
    // Endpoints come and go through the serving-endpoints API: no load / unload route.
    const unload = await post('/v2/repository/models/lin/unload', Buffer.alloc(0));
    assert.equal(unload.status, 404);
    assert.match(unload.json.error, /No API route/);
    // get_inference_statistics("lin"): counts from the gateway, model calls from the replicas.
    const x: Tensor = { dtype: 'float32', shape: [1, 4], data: Float32Array.of(1, 2, 3, 4) };
    const before = (await request({ url: server.url, path: '/v2/models/lin/stats' })).json.model_stats[0];
    const { body, headers } = tritonInfer({ x });
    for (let i = 0; i < 3; i++) assert.equal((await post('/v2/models/lin/infer', body, headers)).status, 200);
    const stats = await waitFor('replica model calls in the stats', async () => {
      const s = (await request({ url: server.url, path: '/v2/models/lin/stats' })).json.model_stats[0];
      return s.execution_count >= (before?.execution_count ?? 0) + 1 ? s : undefined;
    });
    assert.equal(stats.name, 'lin');
    assert.equal(stats.version, '1');
    assert.equal(stats.inference_stats.success.count, (before?.inference_stats.success.count ?? 0) + 3);
    assert.ok(stats.inference_stats.success.ns > 0 && stats.inference_stats.compute_infer.ns > 0);
    assert.ok(stats.inference_count >= stats.execution_count);
    assert.ok(stats.last_inference > Date.now() - 60_000);
    const all = await request({ url: server.url, path: '/v2/models/stats' });
    assert.ok(all.json.model_stats.some((m: any) => m.name === 'lin'));
    const v9 = await request({ url: server.url, path: '/v2/models/lin/versions/9/stats' });
    assert.deepEqual(v9.json.model_stats, []);
  });
});
