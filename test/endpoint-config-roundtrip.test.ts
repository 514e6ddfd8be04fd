/**
 * An endpoint view's `config` sent back unchanged with `PUT .../config` is the same config: the
 * read-only fields the view mixes into it (`state`, the live autoscaling counters,
 * `config_version`) are accepted and ignored, nothing restarts, and the next view shows the same
 * spec. Unknown fields are still refused, named. Real HTTP, real replica processes.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { CreateEndpointRequest, EndpointConfigInput, EndpointConfigView, ServingEndpoint } from '../src/api/index.js';
import { writeFixtures } from '../src/fixtures/index.js';
import type { FerryServer } from '../src/server/index.js';
import { registerVersion, replicaPids, request, startTestServer, tempDir, waitSettled, type HttpResult } from './support/index.js';

let dir: string;
let dataDir: string;
let server: FerryServer;

const call = (method: string, p: string, json?: unknown): Promise<HttpResult> => request({ url: server.url, method, path: p, ...(json === undefined ? {} : { json }) });
const setAlias = async (alias: string, version: string): Promise<void> => {
  const r = await call('POST', '/api/2.0/mlflow/registered-models/alias', { name: 'linear', alias, version });
  assert.equal(r.status, 200, r.text);
};

/** What a config says, without the status the view adds (so two views of one spec compare equal). */
function specOf(c: EndpointConfigView): unknown {
  return {
    ...c,
    config_version: undefined,
    served_entities: c.served_entities.map(({ state: _state, autoscaling, ...e }) => ({
      ...e,
      autoscaling: autoscaling === undefined ? undefined : {
        target_concurrency: autoscaling.target_concurrency, stable_window_ms: autoscaling.stable_window_ms, panic_window_ms: autoscaling.panic_window_ms,
        panic_threshold: autoscaling.panic_threshold, scale_down_delay_ms: autoscaling.scale_down_delay_ms,
        scale_to_zero_grace_ms: autoscaling.scale_to_zero_grace_ms, max_scale_up_rate: autoscaling.max_scale_up_rate,
      },
    })),
  };
}

before(async () => {
  dir = await tempDir();
  dataDir = path.join(dir, 'data');
  const fx = await writeFixtures(path.join(dir, 'fixtures'));
  server = await startTestServer(dataDir);
  await registerVersion(server.url, 'linear', fx.linear);
  await registerVersion(server.url, 'linear', fx.linear);
  await setAlias('champion', '1');
});

after(async () => {
  await server.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

test('GET an endpoint, PUT its config back unchanged, GET again: the same config, nothing restarted', async () => {
  const create: CreateEndpointRequest = {
    name: 'rt',
    config: {
      served_entities: [
        { entity_name: 'linear', entity_version: 'champion', autoscaling: { target_concurrency: 3 }, batching: { max_batch_size: 16 } },
        { name: 'candidate', entity_name: 'linear', entity_version: 2, workload_size: 'Small', validation_request: { inputs: [[1, 2, 3, 4]] } },
      ],
      traffic_config: {
        routes: [{ served_entity_name: 'linear-1', traffic_percentage: 80 }, { served_entity_name: 'candidate', traffic_percentage: 20 }],
        shadow_routes: [{ served_entity_name: 'candidate', mirror_percentage: 10 }],
      },
      request_timeout_ms: 5000,
      rollout: { canary_steps: [{ traffic_percentage: 50, duration_ms: 0 }] },
    },
  };
  const created = await call('POST', '/api/2.0/serving-endpoints', create);
  assert.equal(created.status, 200, created.text);
  const first = (await waitSettled(server.url, 'rt')) as ServingEndpoint;
  assert.equal(first.state.config_update, 'NOT_UPDATING', first.state.config_update_message);
  assert.ok(first.config);
  assert.equal(first.config.served_entities[0]?.entity_alias, 'champion');
  assert.equal(first.config.served_entities[0]?.autoscaling?.ready_replicas, 1, 'the view carries live counters inside config');
  const pids = (await replicaPids(dataDir, 'rt')).sort();
  assert.equal(pids.length, 2);

  const back: EndpointConfigInput = first.config;
  const put = await call('PUT', '/api/2.0/serving-endpoints/rt/config', back);
  assert.equal(put.status, 200, put.text);
  const second = (await waitSettled(server.url, 'rt')) as ServingEndpoint;
  assert.equal(second.state.config_update, 'NOT_UPDATING', second.state.config_update_message);
  assert.ok(second.config);
  assert.equal(second.config.config_version, 2, 'the ignored config_version did not set the version');
  assert.deepEqual(specOf(second.config), specOf(first.config));
  assert.deepEqual((await replicaPids(dataDir, 'rt')).sort(), pids, 'an unchanged config keeps every replica');

  // The recorded alias must still be true: once it has moved, the old view is refused, named.
  await setAlias('champion', '2');
  const stale = await call('PUT', '/api/2.0/serving-endpoints/rt/config', back);
  assert.equal(stale.status, 400, stale.text);
  assert.equal(stale.json.error_code, 'INVALID_PARAMETER_VALUE');
  assert.match(stale.json.message, /"champion" for 'config\.served_entities\[0\]\.entity_alias'.*points to version 2/);
  await setAlias('champion', '1');
});

test('PUT .../config still refuses unknown fields, naming them; read-only fields are refused where they do not belong', async () => {
  const view = (await waitSettled(server.url, 'rt')) as ServingEndpoint;
  assert.ok(view.config);
  const cases: Array<{ body: unknown; field: RegExp }> = [
    { body: { ...view.config, served_entitys: [] }, field: /^Unknown key 'served_entitys' in 'config'\.$/ },
    { body: { ...view.config, served_entities: [{ ...view.config.served_entities[0], bogus: 1 }] }, field: /^Unknown key 'bogus' in 'config\.served_entities\[0\]'\.$/ },
    { body: { ...view.config, served_entities: [{ ...view.config.served_entities[0], autoscaling: { target_concurrency: 2, desired_replica: 3 } }] }, field: /^Unknown key 'desired_replica' in 'config\.served_entities\[0\]\.autoscaling'\.$/ },
    // `state` is read-only on a served entity, not a field of the config itself.
    { body: { ...view.config, state: {} }, field: /^Unknown key 'state' in 'config'\.$/ },
  ];
  for (const { body, field } of cases) {
    const r = await call('PUT', '/api/2.0/serving-endpoints/rt/config', body);
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error_code, 'INVALID_PARAMETER_VALUE', r.text);
    assert.match(r.json.message, field);
  }
  const after = (await waitSettled(server.url, 'rt')) as ServingEndpoint;
  assert.equal(after.config?.config_version, view.config.config_version, 'a refused PUT changes nothing');
});
