/** Fallback between served entities and shadow (mirrored) traffic, through real replicas. */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { writeFixtures } from '../src/fixtures/index.js';
import { statsKey } from '../src/gateway/index.js';
import type { FerryServer } from '../src/server/index.js';
import { registerVersion, request, startTestServer, tempDir, waitFor, waitSettled, writeEvenRowsModel, type HttpResult } from './support/index.js';

let dir: string;
let server: FerryServer;

const call = (method: string, p: string, json?: unknown): Promise<HttpResult> =>
  request({ url: server.url, method, path: p, ...(json === undefined ? {} : { json }) });

const register = (name: string, source: string): Promise<string> => registerVersion(server.url, name, source);
const settled = (name: string): Promise<any> => waitSettled(server.url, name);

const ROW = { inputs: [[1, 2, 3, 4]] };
/** The even-rows model validated with two rows (passes), then sent one-row requests (fail). */
const EVEN = { entity_name: 'even', entity_version: '1', batching: { enabled: false }, validation_request: { inputs: [[1, 2, 3, 4], [5, 6, 7, 8]] } };

before(async () => {
  dir = await tempDir();
  const fx = await writeFixtures(path.join(dir, 'fixtures'));
  server = await startTestServer(path.join(dir, 'data'));
  await register('linear', fx.linear);
  await register('linear', fx.linear);
  // Fails with a 500 on one-row requests (Reshape to [-1, 8]).
  await writeEvenRowsModel(path.join(dir, 'even'));
  await register('even', path.join(dir, 'even'));
});

after(async () => {
  await server.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

test('fallback: a 5xx from the first entity is answered by the next one in route order, only when enabled', { timeout: 60_000 }, async () => {
  const r = await call('POST', '/api/2.0/serving-endpoints', {
    name: 'fb',
    config: {
      served_entities: [{ name: 'primary', ...EVEN }, { name: 'backup', entity_name: 'linear', entity_version: '1' }],
      traffic_config: { routes: [{ served_entity_name: 'primary', traffic_percentage: 100 }, { served_entity_name: 'backup', traffic_percentage: 0 }] },
    },
  });
  assert.equal(r.status, 200, r.text);
  const e = await settled('fb');
  assert.deepEqual(e.ai_gateway, { fallback_config: { enabled: false } });
  const without = await call('POST', '/serving-endpoints/fb/invocations', ROW);
  assert.equal(without.status, 500, without.text);
  assert.equal(without.headers['served-model-name'], 'primary');

  const put = await call('PUT', '/api/2.0/serving-endpoints/fb/ai-gateway', { fallback_config: { enabled: true } });
  assert.deepEqual(put.json, { fallback_config: { enabled: true } });
  for (let i = 0; i < 10; i++) {
    const a = await call('POST', '/serving-endpoints/fb/invocations', ROW);
    assert.equal(a.status, 200, a.text);
    assert.deepEqual(a.json, { predictions: [[5.625]] });
    assert.equal(a.headers['served-model-name'], 'backup');
  }
  // A 4xx is the caller's problem: never passed on.
  const bad = await call('POST', '/serving-endpoints/fb/invocations', { inputs: [[1, 2]] });
  assert.equal(bad.status, 400);
  assert.equal(bad.headers['served-model-name'], 'primary');
  const invalid = await call('PUT', '/api/2.0/serving-endpoints/fb/ai-gateway', { fallback_config: { enabled: 'yes' } });
  assert.equal(invalid.status, 400);
  assert.match(invalid.json.message, /'fallback_config\.enabled'/);
  await call('DELETE', '/api/2.0/serving-endpoints/fb');
});

test('shadow: a mirrored entity gets copies of requests, callers only ever see the primary', { timeout: 60_000 }, async () => {
  const r = await call('POST', '/api/2.0/serving-endpoints', {
    name: 'sh',
    ai_gateway: { fallback_config: { enabled: false } },
    config: {
      served_entities: [{ name: 'live', entity_name: 'linear', entity_version: '1' }, { name: 'candidate', ...EVEN }],
      traffic_config: {
        routes: [{ served_entity_name: 'live', traffic_percentage: 100 }, { served_entity_name: 'candidate', traffic_percentage: 0 }],
        shadow_routes: [{ served_entity_name: 'candidate', mirror_percentage: 100 }],
      },
    },
  });
  assert.equal(r.status, 200, r.text);
  const e = await settled('sh');
  assert.deepEqual(e.config.traffic_config.shadow_routes, [{ served_entity_name: 'candidate', mirror_percentage: 100 }]);
  for (let i = 0; i < 20; i++) {
    const a = await call('POST', '/serving-endpoints/sh/invocations', ROW);
    assert.equal(a.status, 200, a.text);
    assert.equal(a.headers['served-model-name'], 'live');
  }
  // The candidate fails every copy (one-row requests), which only its stats show.
  const stats = await waitFor('20 shadow answers', () => {
    const s = server.controller.stats.summary([statsKey('sh', 'candidate', '1')], 0);
    return s.requests >= 20 ? s : undefined;
  });
  assert.equal(stats.errors, stats.requests);
  const bad = await call('PUT', '/api/2.0/serving-endpoints/sh/config', {
    served_entities: [{ name: 'live', entity_name: 'linear', entity_version: '1' }],
    traffic_config: { routes: [{ served_entity_name: 'live', traffic_percentage: 100 }], shadow_routes: [{ served_entity_name: 'ghost', mirror_percentage: 10 }] },
  });
  assert.equal(bad.status, 400);
  assert.match(bad.json.message, /shadow_routes\[0\]\.served_entity_name/);
  await call('DELETE', '/api/2.0/serving-endpoints/sh');
});
