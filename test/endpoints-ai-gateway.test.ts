/**
 * `ai_gateway` rate limits and input limits through a real server and replicas: applied at once on
 * a live endpoint, shown in the endpoint, and kept across a restart. Per-user buckets need a second
 * principal, which only the admin token exists for yet: test/rate-limit.test.ts covers them.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { writeFixtures } from '../src/fixtures/index.js';
import type { FerryServer } from '../src/server/index.js';
import { registerVersion, request, startTestServer, tempDir, waitFor, waitSettled, type HttpResult } from './support/index.js';

let dir: string;
let server: FerryServer;

const call = (method: string, p: string, json?: unknown): Promise<HttpResult> =>
  request({ url: server.url, method, path: p, ...(json === undefined ? {} : { json }) });
const gateway = (name: string, body: unknown): Promise<HttpResult> => call('PUT', `/api/2.0/serving-endpoints/${name}/ai-gateway`, body);
const invoke = (name: string, body: unknown = ROW): Promise<HttpResult> => call('POST', `/serving-endpoints/${name}/invocations`, body);
/** Sends `n` invocations at once. */
const burst = async (name: string, n: number): Promise<HttpResult[]> => Promise.all(Array.from({ length: n }, () => invoke(name)));
const count = (results: HttpResult[], status: number): number => results.filter((r) => r.status === status).length;

const ROW = { inputs: [[1, 2, 3, 4]] };
const ENDPOINT_LIMIT = { calls: 5, renewal_period: 'minute', key: 'endpoint' };

const createReady = async (name: string, aiGateway?: unknown): Promise<HttpResult> => {
  const r = await call('POST', '/api/2.0/serving-endpoints', {
    name,
    config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] },
    ...(aiGateway === undefined ? {} : { ai_gateway: aiGateway }),
  });
  if (r.status === 200) {
    await waitSettled(server.url, name);
    await waitFor(`${name} ready`, async () => ((await call('GET', `/api/2.0/serving-endpoints/${name}`)).json.state.ready === 'READY' ? true : undefined));
  }
  return r;
};

before(async () => {
  dir = await tempDir();
  const fx = await writeFixtures(path.join(dir, 'fixtures'));
  server = await startTestServer(path.join(dir, 'data'));
  await registerVersion(server.url, 'linear', fx.linear);
});

after(async () => {
  await server.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

test('rate_limits: a live endpoint is limited at once, shows the limit, and is unlimited again after an empty list', { timeout: 60_000 }, async () => {
  assert.equal((await createReady('rl')).status, 200);
  assert.equal(count(await burst('rl', 8), 200), 8, 'no limit yet');

  const put = await gateway('rl', { rate_limits: [ENDPOINT_LIMIT] });
  assert.equal(put.status, 200, put.text);
  assert.deepEqual(put.json, { rate_limits: [ENDPOINT_LIMIT], fallback_config: { enabled: false } });
  assert.deepEqual((await call('GET', '/api/2.0/serving-endpoints/rl')).json.ai_gateway, put.json);

  // 5 per minute refills one call per 12 s: the burst takes far less, so exactly 3 are refused.
  const results = await burst('rl', 8);
  assert.equal(count(results, 200), 5, results.map((r) => r.status).join(','));
  const refused = results.filter((r) => r.status === 429);
  assert.equal(refused.length, 3);
  for (const r of refused) {
    assert.equal(r.json.error_code, 'REQUEST_LIMIT_EXCEEDED');
    assert.match(r.json.message, /^Rate limit of 5 calls per minute per endpoint exceeded for serving endpoint 'rl'; retry in \d+ s\.$/);
    const retryAfter = Number(r.headers['retry-after']);
    assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 12, `Retry-After ${r.headers['retry-after']}`);
  }
  // Every inference route shares the endpoint's bucket; metadata and readiness are not counted.
  assert.equal((await call('POST', '/v2/models/rl/infer', {})).status, 429);
  assert.equal((await call('POST', '/v2/models/rl/versions/1/infer', {})).status, 429);
  assert.equal((await call('GET', '/v2/models/rl')).status, 200);
  assert.equal((await call('GET', '/v2/models/rl/ready')).status, 200);

  const cleared = await gateway('rl', { rate_limits: [] });
  assert.deepEqual(cleared.json, { fallback_config: { enabled: false } });
  assert.equal(count(await burst('rl', 10), 200), 10, 'unlimited again');

  const bad = await gateway('rl', { rate_limits: [{ calls: 0, renewal_period: 'minute' }] });
  assert.equal(bad.status, 400);
  assert.equal(bad.json.message, `Invalid value 0 for 'rate_limits[0].calls': expected a positive integer.`);
  await call('DELETE', '/api/2.0/serving-endpoints/rl');
});

test('rate_limits tokens: answers without LLM usage are charged nothing; a calls limit on the same key still counts', { timeout: 60_000 }, async () => {
  assert.equal((await createReady('tok')).status, 200);
  const limits = [{ tokens: 1, renewal_period: 'minute', key: 'endpoint' }, { ...ENDPOINT_LIMIT, calls: 3 }];
  const put = await gateway('tok', { rate_limits: limits });
  assert.equal(put.status, 200, put.text);
  assert.deepEqual(put.json, { rate_limits: limits, fallback_config: { enabled: false } });
  assert.deepEqual((await call('GET', '/api/2.0/serving-endpoints/tok')).json.ai_gateway, put.json);
  // A one-token budget would refuse the second call if a linear model's answer counted at all.
  const results: HttpResult[] = [];
  for (let i = 0; i < 4; i++) results.push(await invoke('tok'));
  assert.deepEqual(results.map((r) => r.status), [200, 200, 200, 429], results.map((r) => r.text).join('\n'));
  assert.match(results[3]?.json.message ?? '', /^Rate limit of 3 calls per minute per endpoint/);

  const both = await gateway('tok', { rate_limits: [{ calls: 3, tokens: 5, renewal_period: 'minute' }] });
  assert.equal(both.status, 400);
  assert.match(both.json.message, /^Invalid value 5 for 'rate_limits\[0\]\.tokens': expected no "tokens" next to "calls"/);
  await call('DELETE', '/api/2.0/serving-endpoints/tok');
});

test('input_limits.max_body_bytes: bodies over the endpoint limit are 413, up to the server maxBodySize', { timeout: 60_000 }, async () => {
  const over = await createReady('big', { input_limits: { max_body_bytes: 17 * 1024 * 1024 } });
  assert.equal(over.status, 400);
  assert.equal(over.json.message,
    `Invalid value 17825792 for 'ai_gateway.input_limits.max_body_bytes': expected at most the server's maxBodySize of 16777216 bytes (raise maxBodySize in the server config to allow more).`);

  assert.equal((await createReady('lim', { input_limits: { max_body_bytes: 200 } })).status, 200);
  const large = { inputs: Array.from({ length: 20 }, () => [1, 2, 3, 4]) };
  assert.ok(JSON.stringify(large).length > 200 && JSON.stringify(ROW).length < 200);
  assert.equal((await invoke('lim', ROW)).status, 200);
  const refused = await invoke('lim', large);
  assert.equal(refused.status, 413, refused.text);
  assert.deepEqual(refused.json, {
    error_code: 'PAYLOAD_TOO_LARGE',
    message: "Request body exceeds the limit of 200 bytes of serving endpoint 'lim' (ai_gateway.input_limits.max_body_bytes).",
  });
  // The same body passes once the endpoint limit is lifted (the server's is 16 MiB).
  assert.deepEqual((await gateway('lim', { fallback_config: { enabled: false } })).json, { fallback_config: { enabled: false } });
  assert.equal((await invoke('lim', large)).status, 200);
  await call('DELETE', '/api/2.0/serving-endpoints/lim');
});

test('a restart keeps the rate limits and input limits', { timeout: 90_000 }, async () => {
  const ai = { rate_limits: [{ ...ENDPOINT_LIMIT, calls: 2 }], fallback_config: { enabled: true }, input_limits: { max_body_bytes: 300 } };
  assert.equal((await createReady('keep', ai)).status, 200);
  assert.deepEqual((await call('GET', '/api/2.0/serving-endpoints/keep')).json.ai_gateway, ai);

  await server.close();
  server = await startTestServer(path.join(dir, 'data'));
  await waitFor('keep ready after restart', async () => ((await call('GET', '/api/2.0/serving-endpoints/keep')).json.state?.ready === 'READY' ? true : undefined), 30_000);
  assert.deepEqual((await call('GET', '/api/2.0/serving-endpoints/keep')).json.ai_gateway, ai);
  // A refused body still counts as a call (limits are checked before the body is read).
  const large = await invoke('keep', { inputs: Array.from({ length: 30 }, () => [1, 2, 3, 4]) });
  assert.equal(large.status, 413, large.text);
  const results = await burst('keep', 3);
  assert.equal(count(results, 200), 1, results.map((r) => r.status).join(','));
  assert.equal(count(results, 429), 2);
  await call('DELETE', '/api/2.0/serving-endpoints/keep');
});
