/**
 * Names reused by someone else, as an attacker would try it on a real server: an endpoint deleted
 * and created again by another user with the same served entity name must show nothing of the
 * first one (replica logs with a secret a model error echoed, /metrics, the series); a principal
 * deleted and created again starts with an empty upload area; a permission route called with
 * another user's endpoint id does not reveal its name.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { FerryServer } from '../src/server/index.js';
import { ADMIN_TOKEN, request, startTestServer, tempDir, waitSettled, type HttpResult } from './support/index.js';

const SECRET = 'SSN 078-05-1120 card 4111111111111111';
/** A js model that logs its input and refuses inputs holding "SSN", echoing them in its error. */
const MODEL_MJS = `export async function load() {}
export function predict(input) {
  const y = [];
  for (const text of input.text) {
    console.error('scoring: ' + text);
    if (text.includes('SSN')) throw new Error('cannot score ' + text);
    y.push(text.length);
  }
  return { y };
}
`;

let dir: string;
let server: FerryServer;
const tokens: Record<string, string> = {};

const as = (who: string, method: string, p: string, json?: unknown): Promise<HttpResult> =>
  request({ url: server.url, method, path: p, token: who === 'admin' ? ADMIN_TOKEN : tokens[who] ?? '', ...(json === undefined ? {} : { json }) });

async function writeModel(name: string): Promise<string> {
  const modelDir = path.join(dir, name);
  await fsp.mkdir(modelDir, { recursive: true });
  await fsp.writeFile(path.join(modelDir, 'model.mjs'), MODEL_MJS);
  await fsp.writeFile(path.join(modelDir, 'ferry.json'), JSON.stringify({
    flavor: 'js', main: 'model.mjs',
    signature: { inputs: [{ name: 'text', dtype: 'string', shape: [-1] }], outputs: [{ name: 'y', dtype: 'float32', shape: [-1] }] },
  }));
  return modelDir;
}

/** A user with a token, owning (CAN_MANAGE) a registered model `model` of the logging module. */
async function userWithModel(user: string, model: string): Promise<void> {
  assert.equal((await as('admin', 'POST', '/api/2.0/principals', { name: user, type: 'USER' })).status, 200);
  const t = await as('admin', 'POST', '/api/2.0/token-management/on-behalf-of/tokens', { principal: user, comment: 'test' });
  tokens[user] = t.json.token_value as string;
  assert.equal((await as('admin', 'POST', '/api/2.0/mlflow/registered-models/create', { name: model })).status, 200);
  const v = await as('admin', 'POST', '/api/2.0/mlflow/model-versions/create', { name: model, source: await writeModel(model) });
  assert.equal(v.json?.model_version?.status, 'READY', v.text);
  assert.equal((await as('admin', 'PUT', `/api/2.0/permissions/registered-models/${model}`, { access_control_list: [{ user_name: user, permission_level: 'CAN_MANAGE' }] })).status, 200);
}

async function createEndpoint(user: string, model: string): Promise<any> {
  const r = await as(user, 'POST', '/api/2.0/serving-endpoints', {
    name: 'shared-name', config: { served_entities: [{ name: 'scorer', entity_name: model, entity_version: '1', workload_size: 'Small', scale_to_zero_enabled: false }] },
  });
  assert.equal(r.status, 200, r.text);
  const settled = await waitSettled(server.url, 'shared-name', 60_000);
  assert.equal(settled.state.ready, 'READY', JSON.stringify(settled.state));
  return settled;
}

before(async () => {
  dir = await tempDir();
  server = await startTestServer(path.join(dir, 'data'), { warmPoolSize: 0 });
  await userWithModel('alice', 'alice-model');
  await userWithModel('bob', 'bob-model');
});

after(async () => {
  await server?.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

test('an endpoint re-created under the same names by another user shows none of the first one\'s logs, metrics or series', { timeout: 180_000 }, async () => {
  const first = await createEndpoint('alice', 'alice-model');
  const refused = await as('alice', 'POST', '/serving-endpoints/shared-name/invocations', { inputs: { text: [SECRET] } });
  assert.equal(refused.status, 500, refused.text);
  assert.equal((await as('alice', 'POST', '/serving-endpoints/shared-name/invocations', { inputs: { text: ['fine'] } })).status, 200);
  // What Alice could see: her secret in the logs, her calls in /metrics and the series.
  assert.match((await as('alice', 'GET', '/api/2.0/serving-endpoints/shared-name/served-models/scorer/logs')).json.logs, /078-05-1120/);
  assert.match((await as('alice', 'GET', '/metrics')).text, /ferry_requests_total\{endpoint="shared-name",served_entity="scorer",code="500"\} 1/);
  const aliceSeries = (await as('alice', 'GET', '/api/2.0/serving-endpoints/shared-name/metrics/series?window=5m')).json;
  assert.ok(aliceSeries.points.some((p: any) => p.qps > 0), JSON.stringify(aliceSeries.points.slice(-3)));
  assert.equal((await as('alice', 'DELETE', '/api/2.0/serving-endpoints/shared-name')).status, 200);

  const second = await createEndpoint('bob', 'bob-model');
  assert.notEqual(second.id, first.id);
  const logs = (await as('bob', 'GET', '/api/2.0/serving-endpoints/shared-name/served-models/scorer/logs')).json.logs as string;
  assert.doesNotMatch(logs, /078-05-1120|4111111111111111|SSN/);
  const metrics = (await as('bob', 'GET', '/metrics')).text;
  assert.doesNotMatch(metrics, /ferry_requests_total\{endpoint="shared-name"[^}]*\} [1-9]/, 'Alice\'s calls counted for Bob');
  assert.doesNotMatch(metrics, /ferry_request_duration_seconds_count\{endpoint="shared-name"[^}]*\} [1-9]/);
  const series = (await as('bob', 'GET', '/api/2.0/serving-endpoints/shared-name/metrics/series?window=5m')).json;
  assert.ok(series.points.every((p: any) => p.qps === 0 && p.error_rate === null), JSON.stringify(series.points.filter((p: any) => p.qps > 0)));
  assert.ok(Object.values(series.served_entities as Record<string, any[]>).flat().every((p) => p.qps === 0));
  // Bob's own calls are his.
  assert.equal((await as('bob', 'POST', '/serving-endpoints/shared-name/invocations', { inputs: { text: ['hello'] } })).status, 200);
  assert.match((await as('bob', 'GET', '/metrics')).text, /ferry_requests_total\{endpoint="shared-name",served_entity="scorer",code="200"\} 1\n/);
  assert.equal((await as('bob', 'DELETE', '/api/2.0/serving-endpoints/shared-name')).status, 200);
});

test('a permission route called with another user\'s endpoint id is refused without naming the endpoint', { timeout: 120_000 }, async () => {
  const created = await as('alice', 'POST', '/api/2.0/serving-endpoints', {
    name: 'alice-secret-project', config: { served_entities: [{ entity_name: 'alice-model', entity_version: '1', workload_size: 'Small', scale_to_zero_enabled: true }] },
  });
  assert.equal(created.status, 200, created.text);
  const id = created.json.id as string;
  const probe = await as('bob', 'GET', `/api/2.0/permissions/serving-endpoints/${id}`);
  assert.equal(probe.status, 403);
  assert.doesNotMatch(probe.text, /alice-secret-project/);
  assert.match(probe.json.message, new RegExp(`serving endpoint '${id}'`));
  // Its owner (and an admin) may use the id.
  assert.equal((await as('alice', 'GET', `/api/2.0/permissions/serving-endpoints/${id}`)).json.object_id, `/serving-endpoints/${id}`);
  assert.equal((await as('alice', 'DELETE', '/api/2.0/serving-endpoints/alice-secret-project')).status, 200);
});

test('a principal deleted and created again under the same name starts with an empty upload area', async () => {
  assert.equal((await as('admin', 'POST', '/api/2.0/principals', { name: 'carol', type: 'USER' })).status, 200);
  tokens.carol = (await as('admin', 'POST', '/api/2.0/token-management/on-behalf-of/tokens', { principal: 'carol', comment: 'old' })).json.token_value;
  const put = await request({ url: server.url, method: 'PUT', path: '/api/2.0/mlflow-artifacts/artifacts/private/notes.txt', token: tokens.carol ?? '', body: 'carol\'s data' });
  assert.equal(put.status, 200, put.text);
  assert.equal((await as('admin', 'DELETE', '/api/2.0/principals/carol')).status, 200);

  assert.equal((await as('admin', 'POST', '/api/2.0/principals', { name: 'carol', type: 'USER' })).status, 200);
  tokens.carol = (await as('admin', 'POST', '/api/2.0/token-management/on-behalf-of/tokens', { principal: 'carol', comment: 'new' })).json.token_value;
  assert.deepEqual((await as('carol', 'GET', '/api/2.0/mlflow-artifacts/artifacts')).json.files, []);
  assert.equal((await as('carol', 'GET', '/api/2.0/mlflow-artifacts/artifacts/private/notes.txt')).status, 404);
});
