/**
 * Official clients with their default arguments, end to end against a real server and real
 * replica processes. Each request is the one the client puts on the wire, reproduced from the
 * client's source where the client itself cannot run here (the Python SDKs): the test names the
 * client version and the function it mirrors.
 *
 * - Databricks SDK for Python 0.133.0, `databricks/sdk/service/serving.py` (`ServingEndpointsAPI`).
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { writeFixtures, type FixturePaths } from '../src/fixtures/index.js';
import type { FerryServer } from '../src/server/index.js';
import { ferryChildren, registerVersion, request, startTestServer, tempDir, waitSettled, type HttpResult } from './support/index.js';

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
});

after(async () => {
  await server?.close();
  assert.deepEqual(await ferryChildren(dataDir), [], 'no replica outlives the server');
  await fsp.rm(dir, { recursive: true, force: true });
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
