/**
 * The OIP v2 gRPC front end end to end: a real server with `grpcPort`, real replica processes, a
 * grpc-js client on KServe's proto sending what tritonclient.grpc sends (triton-inference-server/
 * client at 58a44ca, `tritonclient/grpc/_utils.py` `_get_inference_request`: every input's numpy
 * bytes in `raw_input_contents`, the bearer token in the call metadata). The gateway path is
 * REST's: the same auth, permissions, rate limits, metrics and errors (REST status → gRPC status).
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { hashToken } from '../src/auth/index.js';
import { identityTypesFixture, writeFixtures, type FixturePaths } from '../src/fixtures/index.js';
import { PROTO_FILE } from '../src/grpc/index.js';
import type { FerryServer } from '../src/server/index.js';
import type { Tensor } from '../src/tensor/index.js';
import { ADMIN_TOKEN, ferryChildren, registerVersion, replicaPids, request, startTestServer, tempDir, waitFor, waitSettled } from './support/index.js';

const QUERIER = 'ferry_test_grpc_querier_0123456789';
const VIEWER = 'ferry_test_grpc_viewer_01234567890';

let dir: string;
let dataDir: string;
let fx: FixturePaths;
let server: FerryServer;
let client: grpc.Client & Record<string, (req: unknown, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res: any) => void) => void>;

const V2_TYPES: Record<string, string> = { float16: 'FP16', float32: 'FP32', float64: 'FP64', bool: 'BOOL', int64: 'INT64', string: 'BYTES', uint8: 'UINT8' };

/** numpy's `tobytes()` (little-endian), or `serialize_byte_tensor` for BYTES; FP16 from its float32 values. */
function npBytes(t: Tensor): Buffer {
  if (t.dtype === 'string') return Buffer.concat((t.data as string[]).flatMap((v) => { const b = Buffer.from(v, 'utf8'); const n = Buffer.alloc(4); n.writeUInt32LE(b.length); return [n, b]; }));
  if (t.dtype === 'bool') return Buffer.from((t.data as boolean[]).map((b) => (b ? 1 : 0)));
  if (t.dtype === 'float16') {
    const out = Buffer.alloc(t.data.length * 2);
    (t.data as Float32Array).forEach((v, i) => {
      const a = Math.abs(v);
      const e = Math.floor(Math.log2(a));
      out.writeUInt16LE(v === 0 ? 0 : (v < 0 ? 0x8000 : 0) | ((e + 15) << 10) | Math.round((a / 2 ** e - 1) * 1024), i * 2);
    });
    return out;
  }
  const a = t.data as Float32Array;
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

const md = (token: string | null, extra: Record<string, string> = {}): grpc.Metadata => {
  const m = new grpc.Metadata();
  if (token !== null) m.set('authorization', `Bearer ${token}`);
  for (const [k, v] of Object.entries(extra)) m.set(k, v);
  return m;
};

function call<T = any>(method: string, req: unknown, token: string | null = ADMIN_TOKEN, extra: Record<string, string> = {}): Promise<T> {
  return new Promise((resolve, reject) => {
    const fn = client[method] as (req: unknown, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res: T) => void) => void;
    fn.call(client, req, md(token, extra), (err, res) => (err ? reject(err) : resolve(res)));
  });
}

/** Rejects with a gRPC error of `code`; returns it. */
async function failsWith(p: Promise<unknown>, code: grpc.status, details?: RegExp): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (err) {
    const e = err as grpc.ServiceError;
    assert.equal(e.code, code, `expected ${grpc.status[code]}, got ${grpc.status[e.code]}: ${e.details}`);
    if (details) assert.match(e.details, details);
    return e;
  }
  assert.fail(`expected ${grpc.status[code]}, got an answer`);
}

/** `client.infer(model, inputs)` of tritonclient.grpc: every input raw. */
function inferRequest(model: string, inputs: Record<string, Tensor>, outputs: string[] = []): unknown {
  return {
    model_name: model, model_version: '',
    inputs: Object.entries(inputs).map(([name, t]) => ({ name, datatype: V2_TYPES[t.dtype], shape: t.shape })),
    outputs: outputs.map((name) => ({ name })),
    raw_input_contents: Object.values(inputs).map(npBytes),
  };
}

const x = (rows: number[][]): Tensor => ({ dtype: 'float32', shape: [rows.length, 4], data: Float32Array.from(rows.flat()) });

before(async () => {
  dir = await tempDir('ferry-grpc-');
  dataDir = path.join(dir, 'data');
  fx = await writeFixtures(path.join(dir, 'fixtures'));
  server = await startTestServer(dataDir, { grpcPort: 0, bufferDepth: 2, bufferTimeout: '300ms' });
  for (const [name, token] of [['querier', QUERIER], ['viewer', VIEWER]] as const) {
    await server.store.createPrincipal({ name, kind: 'user', admin: false, createdMs: 0, createdBy: 'test' });
    await server.store.putToken({ id: name, principal: name, hash: hashToken(token), createdMs: 0, expiresMs: undefined, description: '' });
  }
  await registerVersion(server.url, 'linear', fx.linear);
  await registerVersion(server.url, 'types', fx.identityTypes);
  for (const [name, model] of [['lin', 'linear'], ['types', 'types'], ['limited', 'linear']]) {
    const r = await request({ url: server.url, method: 'POST', path: '/api/2.0/serving-endpoints', json: { name, config: { served_entities: [{ entity_name: model, entity_version: '1' }] } } });
    assert.equal(r.status, 200, r.text);
  }
  for (const name of ['lin', 'types', 'limited']) assert.equal((await waitSettled(server.url, name)).state.ready, 'READY');
  await server.store.setGrants('serving-endpoint', 'lin', [{ grantee: 'querier', level: 'CAN_QUERY' }, { grantee: 'viewer', level: 'CAN_VIEW' }]);
  const definition = protoLoader.loadSync(PROTO_FILE, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  const Service = (grpc.loadPackageDefinition(definition) as any).inference.GRPCInferenceService as typeof grpc.Client;
  assert.ok(server.grpcAddress, 'grpcPort set: the server listens for gRPC');
  client = new Service(server.grpcAddress, grpc.credentials.createInsecure()) as typeof client;
});

after(async () => {
  client?.close();
  await server?.close();
  assert.deepEqual(await ferryChildren(dataDir), [], 'no replica outlives the server');
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('OIP v2 over gRPC', () => {
  test('ServerLive, ServerReady, ServerMetadata, ModelReady, ModelMetadata', async () => {
    assert.deepEqual(await call('ServerLive', {}), { live: true });
    assert.deepEqual(await call('ServerReady', {}), { ready: true });
    const meta = await call('ServerMetadata', {});
    assert.equal(meta.name, 'ferry');
    assert.ok(meta.extensions.includes('binary_tensor_data'));
    assert.deepEqual(await call('ModelReady', { name: 'lin', version: '' }), { ready: true });
    const model = await call('ModelMetadata', { name: 'lin', version: '1' });
    assert.equal(model.name, 'lin');
    assert.deepEqual(model.inputs, [{ name: 'x', datatype: 'FP32', shape: ['-1', '4'] }]);
    await failsWith(call('ModelMetadata', { name: 'nope', version: '' }), grpc.status.NOT_FOUND, /Serving endpoint 'nope'/);
    await failsWith(call('ModelReady', { name: '', version: '' }), grpc.status.INVALID_ARGUMENT, /model_name/);
  });

  test('ModelInfer with raw_input_contents: raw_output_contents equal REST\'s answer; typed contents too', async () => {
    const res = await call('ModelInfer', inferRequest('lin', { x: x([[1, 2, 3, 4], [0, 0.5, -1, 2]]) }), ADMIN_TOKEN, { 'x-request-id': 'grpc-req-1' });
    assert.equal(res.model_name, 'lin');
    assert.equal(res.model_version, '1');
    assert.deepEqual(res.outputs.map((o: any) => [o.name, o.datatype, o.shape]), [['y', 'FP32', ['2', '1']]]);
    const y = res.raw_output_contents[0] as Buffer;
    assert.deepEqual([y.readFloatLE(0), y.readFloatLE(4)], [5.625, -1.875]);
    // Typed contents (no raw_input_contents) and a request id.
    const typed = await call('ModelInfer', {
      model_name: 'lin', model_version: '1', id: 'r-7', inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], contents: { fp32_contents: [1, 2, 3, 4] } }],
    });
    assert.equal(typed.id, 'r-7');
    assert.equal((typed.raw_output_contents[0] as Buffer).readFloatLE(0), 5.625);
    // The same metrics as REST: the gRPC calls are counted on the endpoint.
    const metrics = (await request({ url: server.url, path: '/api/2.0/serving-endpoints/lin/metrics' })).text;
    assert.match(metrics, /^ferry_requests_total\{endpoint="lin",served_entity="linear-1",code="200"\} [1-9]\d*$/m);
  });

  test('every datatype, raw in and raw out (identity model)', async () => {
    const inputs = identityTypesFixture.example(3);
    const res = await call('ModelInfer', inferRequest('types', inputs, Object.keys(inputs).map((n) => `${n}_out`)));
    for (const [i, [name, t]] of Object.entries(inputs).entries()) {
      const out = res.outputs[i];
      assert.equal(out.name, `${name}_out`);
      assert.equal(out.datatype, V2_TYPES[t.dtype]);
      assert.deepEqual(out.shape.map(Number), t.shape);
      assert.deepEqual(res.raw_output_contents[i], npBytes(t), name);
    }
  });

  test('auth, permissions per endpoint, and errors as gRPC status codes', async () => {
    const req = inferRequest('lin', { x: x([[1, 2, 3, 4]]) });
    await failsWith(call('ModelInfer', req, null), grpc.status.UNAUTHENTICATED);
    await failsWith(call('ModelInfer', req, 'ferry_not_a_token'), grpc.status.UNAUTHENTICATED);
    // querier: CAN_QUERY on lin only; viewer: CAN_VIEW on lin (metadata, not inference).
    assert.equal(((await call('ModelInfer', req, QUERIER)).raw_output_contents[0] as Buffer).readFloatLE(0), 5.625);
    await failsWith(call('ModelInfer', inferRequest('types', identityTypesFixture.example(1)), QUERIER), grpc.status.PERMISSION_DENIED);
    await failsWith(call('ModelInfer', req, VIEWER), grpc.status.PERMISSION_DENIED, /CAN_QUERY/);
    assert.equal((await call('ModelMetadata', { name: 'lin', version: '' }, VIEWER)).name, 'lin');
    await failsWith(call('ModelInfer', inferRequest('nope', { x: x([[1, 2, 3, 4]]) })), grpc.status.NOT_FOUND);
    await failsWith(call('ModelInfer', { ...(req as object), inputs: [{ name: 'x', datatype: 'INT32', shape: [1, 4] }] }), grpc.status.INVALID_ARGUMENT, /inputs\[0\]\.datatype/);
    await failsWith(call('ModelInfer', { ...(req as object), raw_input_contents: [Buffer.alloc(12)] }), grpc.status.INVALID_ARGUMENT, /binary_data_size.*16 bytes/);
    await failsWith(call('ModelInfer', { ...(req as object), raw_input_contents: [] }), grpc.status.INVALID_ARGUMENT, /inputs\[0\]\.contents/);

    // Rate limits: one call per minute for the whole endpoint, then RESOURCE_EXHAUSTED.
    const put = await request({ url: server.url, method: 'PUT', path: '/api/2.0/serving-endpoints/limited/ai-gateway', json: { rate_limits: [{ calls: 1, renewal_period: 'minute', key: 'endpoint' }] } });
    assert.equal(put.status, 200, put.text);
    const limited = inferRequest('limited', { x: x([[1, 2, 3, 4]]) });
    await call('ModelInfer', limited);
    const e = await failsWith(call('ModelInfer', limited), grpc.status.RESOURCE_EXHAUSTED);
    assert.ok(Number(e.metadata.get('retry-after')[0]) > 0, 'Retry-After comes back as metadata');

    // No ready replica (killed; the restart backoff is ≥ 1 s): the buffer's deadline passes → UNAVAILABLE.
    const pids = await replicaPids(dataDir, 'lin');
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    await waitFor('lin has no ready replica', async () => ((await request({ url: server.url, path: '/v2/models/lin/ready' })).status === 503 ? true : undefined));
    assert.deepEqual(await call('ModelReady', { name: 'lin', version: '' }), { ready: false });
    await failsWith(call('ModelInfer', req), grpc.status.UNAVAILABLE);
    await waitFor('lin ready again', async () => ((await request({ url: server.url, path: '/v2/models/lin/ready' })).status === 200 ? true : undefined), 30_000);
  });

  test('malformed and fuzzed messages: INVALID_ARGUMENT or another caller error, never INTERNAL; the server keeps serving', async () => {
    const raw = new grpc.Client(server.grpcAddress as string, grpc.credentials.createInsecure());
    const send = (bytes: Buffer): Promise<grpc.ServiceError | undefined> => new Promise((resolve) => {
      raw.makeUnaryRequest('/inference.GRPCInferenceService/ModelInfer', (b: Buffer) => b, (b: Buffer) => b, bytes, md(ADMIN_TOKEN), (err) => resolve(err ?? undefined));
    });
    // An `inputs` entry (field 5) whose declared length runs past the message.
    const bad = await send(Buffer.from([0x2a, 0x03, 0x0a, 0x01]));
    assert.equal(bad?.code, grpc.status.INVALID_ARGUMENT, bad?.details);
    assert.match(bad?.details ?? '', /does not decode/);
    // Random bytes, and a valid request with bytes flipped or cut off: answered (when it still
    // decodes to a valid request) or refused as the caller's error.
    let seed = 11;
    const rand = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
    const definition = protoLoader.loadSync(PROTO_FILE, { keepCase: true, longs: String, defaults: true, oneofs: true });
    const method = (definition['inference.GRPCInferenceService'] as any).ModelInfer;
    const valid: Buffer = method.requestSerialize(inferRequest('lin', { x: x([[1, 2, 3, 4]]) }));
    for (let i = 0; i < 120; i++) {
      let bytes: Buffer;
      if (i % 3 === 0) bytes = Buffer.from(Array.from({ length: rand(64) }, () => rand(256)));
      else if (i % 3 === 1) bytes = valid.subarray(0, rand(valid.length));
      else {
        bytes = Buffer.from(valid);
        for (let k = 0; k < 1 + rand(3); k++) bytes[rand(bytes.length)] = rand(256);
      }
      const err = await send(bytes);
      if (err === undefined) continue;
      assert.notEqual(err.code, grpc.status.INTERNAL, `fuzz ${i}: ${err.details}`);
      assert.notEqual(err.code, grpc.status.UNKNOWN, `fuzz ${i}: ${err.details}`);
    }
    raw.close();
    assert.deepEqual(await call('ServerLive', {}), { live: true });
  });
});
