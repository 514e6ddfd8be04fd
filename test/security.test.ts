/**
 * Identities, tokens, permissions and the audit log through the real API: a real server, real
 * replicas, real SQLite. The route × role walk is in security-matrix.test.ts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { compileServerConfig } from '../src/config/index.js';
import { writeFixtures, type FixturePaths } from '../src/fixtures/index.js';
import { startServer, type FerryServer } from '../src/server/index.js';
import { ADMIN_TOKEN, FERRY_BIN, request, tempDir, waitSettled, type HttpResult, TEST_GATEWAY_WORKERS } from './support/index.js';

let dir: string;
let fx: FixturePaths;
let server: FerryServer;
const logged: string[] = [];
/** Every token value handed out, to prove none reaches a log. */
const secrets: string[] = [];

before(async () => {
  dir = await tempDir();
  fx = await writeFixtures(path.join(dir, 'fixtures'));
  server = await startServer(compileServerConfig({ port: 0, dataDir: path.join(dir, 'data') , gatewayWorkers: TEST_GATEWAY_WORKERS }), {
    adminToken: ADMIN_TOKEN,
    log: (level, msg, fields) => logged.push(JSON.stringify({ level, msg, ...fields })),
  });
});

after(async () => {
  await server.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

const call = (method: string, p: string, token: string | null, json?: unknown): Promise<HttpResult> =>
  request({ url: server.url, method, path: p, token, ...(json === undefined ? {} : { json }) });

/** Creates a user (or service principal) and returns a fresh token for it. */
async function principalWithToken(name: string, type: 'USER' | 'SERVICE_PRINCIPAL' = 'USER'): Promise<string> {
  const p = await call('POST', '/api/2.0/principals', ADMIN_TOKEN, { name, type });
  assert.equal(p.status, 200, p.text);
  const t = await call('POST', '/api/2.0/token-management/on-behalf-of/tokens', ADMIN_TOKEN, { principal: name, comment: 'test' });
  assert.equal(t.status, 200, t.text);
  secrets.push(t.json.token_value);
  return t.json.token_value as string;
}

function assertDenied(r: HttpResult, status = 403): void {
  assert.equal(r.status, status, r.text);
  assert.equal(r.json?.error_code, status === 401 ? 'UNAUTHENTICATED' : 'PERMISSION_DENIED', r.text);
}

describe('tokens', () => {
  test('lifecycle: issue, use, list without secrets, revoke takes effect on the next request', async () => {
    const alice = await principalWithToken('alice');
    const me = await call('GET', '/api/2.0/me', alice);
    assert.deepEqual({ name: me.json.name, type: me.json.type, admin: me.json.admin }, { name: 'alice', type: 'USER', admin: false });

    const own = await call('POST', '/api/2.0/token/create', alice, { comment: 'laptop', lifetime_seconds: 3600 });
    assert.equal(own.status, 200, own.text);
    secrets.push(own.json.token_value);
    assert.match(own.json.token_value, /^ferry_[A-Za-z0-9_-]{43}$/);
    assert.equal(own.json.token_info.owner, 'alice');
    assert.ok(Math.abs(own.json.token_info.expiry_time - own.json.token_info.creation_time - 3_600_000) < 1000);
    assert.equal((await call('GET', '/api/2.0/me', own.json.token_value)).status, 200);

    const list = await call('GET', '/api/2.0/token/list', alice);
    assert.deepEqual(list.json.token_infos.map((t: { comment: string }) => t.comment).sort(), ['laptop', 'test']);
    assert.ok(!list.text.includes('ferry_'), 'listing shows no secrets');
    const bobToken = await principalWithToken('bob');
    const bobsId = (await call('GET', '/api/2.0/token/list', bobToken)).json.token_infos[0].token_id as string;
    assert.equal((await call('POST', '/api/2.0/token/delete', alice, { token_id: bobsId })).status, 404, 'one cannot revoke another principal\'s token');
    assert.equal((await call('GET', '/api/2.0/me', bobToken)).status, 200);

    // Revocation by the owner, then by an admin: the very next request is refused.
    assert.equal((await call('POST', '/api/2.0/token/delete', alice, { token_id: own.json.token_info.token_id })).status, 200);
    assertDenied(await call('GET', '/api/2.0/me', own.json.token_value), 401);
    assert.equal((await call('DELETE', `/api/2.0/token-management/tokens/${bobsId}`, ADMIN_TOKEN)).status, 200);
    assertDenied(await call('GET', '/api/2.0/me', bobToken), 401);

    // Deleting a principal ends all its tokens at once.
    assert.equal((await call('DELETE', '/api/2.0/principals/alice', ADMIN_TOKEN)).status, 200);
    assertDenied(await call('GET', '/api/2.0/me', alice), 401);
  });

  test('bad requests are 400s naming the field; the bootstrap admin cannot be removed', async () => {
    const bad = [
      [{ lifetime_seconds: 5 }, /lifetime_seconds/],
      [{ lifetime_seconds: 'soon' }, /lifetime_seconds/],
      [{ comment: 'x', extra: 1 }, /extra/],
    ] as const;
    for (const [body, message] of bad) {
      const r = await call('POST', '/api/2.0/token/create', ADMIN_TOKEN, body);
      assert.equal(r.status, 400, r.text);
      assert.match(r.json.message, message);
    }
    const name = await call('POST', '/api/2.0/principals', ADMIN_TOKEN, { name: 'has space' });
    assert.equal(name.status, 400);
    assert.match(name.json.message, /'name'/);
    assert.equal((await call('POST', '/api/2.0/token-management/on-behalf-of/tokens', ADMIN_TOKEN, { principal: 'ghost' })).status, 404);
    assert.equal((await call('DELETE', '/api/2.0/principals/admin', ADMIN_TOKEN)).status, 400);
    assert.equal((await call('PATCH', '/api/2.0/principals/admin', ADMIN_TOKEN, { admin: false })).status, 400);
  });

  test('an expired token is refused', async () => {
    let nowMs = Date.now();
    const d = await tempDir();
    const s = await startServer(compileServerConfig({ port: 0, dataDir: d, warmPoolSize: 0 , gatewayWorkers: TEST_GATEWAY_WORKERS }), { adminToken: ADMIN_TOKEN, now: () => nowMs });
    try {
      const t = await request({ url: s.url, method: 'POST', path: '/api/2.0/token/create', json: { lifetime_seconds: 60 } });
      assert.equal(t.status, 200, t.text);
      const use = (): Promise<HttpResult> => request({ url: s.url, path: '/api/2.0/me', token: t.json.token_value });
      assert.equal((await use()).status, 200);
      nowMs += 59_000;
      assert.equal((await use()).status, 200);
      nowMs += 2_000;
      const expired = await use();
      assertDenied(expired, 401);
      assert.match(expired.json.message, /Invalid or expired token/);
    } finally {
      await s.close();
      await fsp.rm(d, { recursive: true, force: true });
    }
  });
});

describe('permissions on real objects', () => {
  test('owners manage what they create; others see nothing until granted; grants are exact', { timeout: 120_000 }, async () => {
    const carol = await principalWithToken('carol');
    const dave = await principalWithToken('dave');
    const ci = await principalWithToken('ci-bot', 'SERVICE_PRINCIPAL');

    // carol registers a model through the artifact proxy and serves it: no admin involved.
    const bytes = await fsp.readFile(fx.linear);
    const put = await request({ url: server.url, method: 'PUT', path: '/api/2.0/mlflow-artifacts/artifacts/work/model.onnx', token: carol, body: bytes });
    assert.equal(put.status, 200, put.text);
    assert.equal((await call('POST', '/api/2.0/mlflow/registered-models/create', carol, { name: 'carol-model' })).status, 200);
    const v = await call('POST', '/api/2.0/mlflow/model-versions/create', carol, { name: 'carol-model', source: 'mlflow-artifacts:/work/model.onnx' });
    assert.equal(v.json?.model_version?.status, 'READY', v.text);
    // Uploads resolve in the caller's namespace: carol sees the source as she sent it (it reads
    // back through the proxy), others see whose upload it was.
    assert.equal(v.json.model_version.source, 'mlflow-artifacts:/work/model.onnx');
    assert.equal((await call('GET', '/api/2.0/mlflow/model-versions/get?name=carol-model&version=1', ADMIN_TOKEN)).json.model_version.source, 'mlflow-artifacts:/carol/work/model.onnx');
    // dave's namespace is his own: carol's upload is not there, and dave cannot read or register it.
    assert.equal((await request({ url: server.url, path: '/api/2.0/mlflow-artifacts/artifacts/work/model.onnx', token: dave })).status, 404);
    // A server-side path reads the server's disk: admins only.
    assertDenied(await call('POST', '/api/2.0/mlflow/model-versions/create', carol, { name: 'carol-model', source: fx.linear }));

    const created = await call('POST', '/api/2.0/serving-endpoints', carol, { name: 'carol-ep', config: { served_entities: [{ entity_name: 'carol-model', entity_version: '1', scale_to_zero_enabled: false }] } });
    assert.equal(created.status, 200, created.text);
    const settled = await waitSettled(server.url, 'carol-ep', 60_000);
    assert.equal(settled.state.ready, 'READY', JSON.stringify(settled.state));
    const query = { inputs: [[1, 2, 3, 4]] };
    assert.equal((await call('POST', '/serving-endpoints/carol-ep/invocations', carol, query)).status, 200);

    // dave: invisible in lists, denied on the object, cannot serve carol's model elsewhere.
    assert.deepEqual((await call('GET', '/api/2.0/serving-endpoints', dave)).json.endpoints, []);
    assert.deepEqual((await call('GET', '/api/2.0/mlflow/registered-models/search', dave)).json.registered_models ?? [], []);
    assertDenied(await call('GET', '/api/2.0/serving-endpoints/carol-ep', dave));
    assertDenied(await call('POST', '/serving-endpoints/carol-ep/invocations', dave, query));
    assertDenied(await call('POST', '/api/2.0/serving-endpoints', dave, { name: 'dave-ep', config: { served_entities: [{ entity_name: 'carol-model', entity_version: '1' }] } }));
    assert.equal((await call('GET', '/api/2.0/serving-endpoints/dave-ep', ADMIN_TOKEN)).status, 404, 'a refused create leaves nothing behind');

    // carol grants dave CAN_QUERY and the service principal CAN_VIEW (by endpoint id, as Databricks does).
    const id = settled.id as string;
    const acl = await call('PATCH', `/api/2.0/permissions/serving-endpoints/${id}`, carol, {
      access_control_list: [{ user_name: 'dave', permission_level: 'CAN_QUERY' }, { service_principal_name: 'ci-bot', permission_level: 'CAN_VIEW' }],
    });
    assert.equal(acl.status, 200, acl.text);
    assert.equal(acl.json.object_id, `/serving-endpoints/${id}`);
    const levels = Object.fromEntries(acl.json.access_control_list.map((e: any) => [e.user_name ?? e.service_principal_name ?? e.group_name, e.all_permissions[0].permission_level]));
    assert.deepEqual(levels, { carol: 'CAN_MANAGE', dave: 'CAN_QUERY', 'ci-bot': 'CAN_VIEW', admins: 'CAN_MANAGE' });
    assert.equal((await call('POST', '/serving-endpoints/carol-ep/invocations', dave, query)).status, 200);
    assert.deepEqual((await call('GET', '/api/2.0/serving-endpoints', dave)).json.endpoints.map((e: { name: string }) => e.name), ['carol-ep']);
    assertDenied(await call('PUT', '/api/2.0/serving-endpoints/carol-ep/config', dave, { served_entities: [] }));
    assertDenied(await call('GET', '/api/2.0/permissions/serving-endpoints/carol-ep', dave));
    assert.deepEqual((await call('GET', '/api/2.0/permissions/serving-endpoints/carol-ep/me', dave)).json, { permission_level: 'CAN_QUERY' });
    assert.equal((await call('GET', '/v2/models/carol-ep/ready', ci)).status, 200);
    // The OIP v2 routes answer errors in the protocol's shape, {"error": "<message>"}.
    const v2Denied = await call('POST', '/v2/models/carol-ep/infer', ci, { inputs: [] });
    assert.equal(v2Denied.status, 403, v2Denied.text);
    assert.match(v2Denied.json.error, /does not have CAN_QUERY on serving endpoint 'carol-ep'/);

    // Rate limits keyed by user count each principal separately.
    const limit = await call('PUT', '/api/2.0/serving-endpoints/carol-ep/ai-gateway', carol, { rate_limits: [{ calls: 2, renewal_period: 'minute', key: 'user' }] });
    assert.equal(limit.status, 200, limit.text);
    const statuses = async (token: string): Promise<number[]> => {
      const out: number[] = [];
      for (let i = 0; i < 3; i++) out.push((await call('POST', '/serving-endpoints/carol-ep/invocations', token, query)).status);
      return out;
    };
    assert.deepEqual(await statuses(carol), [200, 200, 429]);
    assert.deepEqual(await statuses(dave), [200, 200, 429]);
    assert.equal((await call('PUT', '/api/2.0/serving-endpoints/carol-ep/ai-gateway', carol, { rate_limits: [] })).status, 200);

    // Bad access control lists name the entry and field.
    const invalid = [
      [{ user_name: 'ghost', permission_level: 'CAN_QUERY' }, /access_control_list\[0\]\.user_name/],
      [{ user_name: 'ci-bot', permission_level: 'CAN_QUERY' }, /existing user/],
      [{ user_name: 'dave', permission_level: 'CAN_EDIT' }, /permission_level.*CAN_VIEW, CAN_QUERY, CAN_MANAGE/],
      [{ group_name: 'admins', permission_level: 'CAN_VIEW' }, /group_name/],
      [{ user_name: 'dave', group_name: 'users', permission_level: 'CAN_VIEW' }, /exactly one of/],
    ] as const;
    for (const [entry, message] of invalid) {
      const r = await call('PATCH', '/api/2.0/permissions/serving-endpoints/carol-ep', carol, { access_control_list: [entry] });
      assert.equal(r.status, 400, r.text);
      assert.match(r.json.message, message);
    }

    // PUT replaces: dave is out again at once.
    const replaced = await call('PUT', '/api/2.0/permissions/serving-endpoints/carol-ep', carol, { access_control_list: [{ user_name: 'carol', permission_level: 'CAN_MANAGE' }] });
    assert.equal(replaced.status, 200, replaced.text);
    assertDenied(await call('POST', '/serving-endpoints/carol-ep/invocations', dave, query));

    // Models: dave may read once granted, and then serve it himself.
    assert.equal((await call('PATCH', '/api/2.0/permissions/registered-models/carol-model', carol, { access_control_list: [{ user_name: 'dave', permission_level: 'CAN_READ' }] })).status, 200);
    assert.equal((await call('GET', '/api/2.0/mlflow/registered-models/get?name=carol-model', dave)).status, 200);
    assertDenied(await call('POST', '/api/2.0/mlflow/registered-models/set-tag', dave, { name: 'carol-model', key: 'k', value: 'v' }));

    // Deleting the endpoint deletes its grants: a new endpoint of that name starts clean.
    assert.equal((await call('DELETE', '/api/2.0/serving-endpoints/carol-ep', carol)).status, 200);
    const again = await call('POST', '/api/2.0/serving-endpoints', ADMIN_TOKEN, { name: 'carol-ep', config: { served_entities: [{ entity_name: 'carol-model', entity_version: '1' }] } });
    assert.equal(again.status, 200, again.text);
    assertDenied(await call('GET', '/api/2.0/serving-endpoints/carol-ep', carol));
    assert.equal((await call('DELETE', '/api/2.0/serving-endpoints/carol-ep', ADMIN_TOKEN)).status, 200);
  });
});

describe('audit log', () => {
  test('every control-plane change and attempt is recorded; reads, inference and secrets are not', async () => {
    const erin = await principalWithToken('erin');
    // Strictly after the rows written so far (since_ms is inclusive, in whole milliseconds).
    await new Promise((resolve) => setTimeout(resolve, 5));
    const before = Date.now();
    assert.equal((await call('POST', '/api/2.0/mlflow/registered-models/create', erin, { name: 'erin-model' })).status, 200);
    assertDenied(await call('DELETE', '/api/2.0/mlflow/registered-models/delete?name=carol-model', erin));
    assertDenied(await call('POST', '/api/2.0/principals', null, { name: 'mallory' }), 401);
    assert.equal((await call('GET', '/api/2.0/mlflow/registered-models/get?name=erin-model', erin)).status, 200);

    assertDenied(await call('GET', '/api/2.0/audit-log', erin));
    const r = await call('GET', `/api/2.0/audit-log?since_ms=${before}`, ADMIN_TOKEN);
    assert.equal(r.status, 200, r.text);
    const rows = r.json.entries.map((e: any) => `${e.principal || '-'} ${e.action} ${e.status}${e.error_code ? ` ${e.error_code}` : ''}`);
    assert.deepEqual(rows, [
      '- POST /api/2.0/principals 401 UNAUTHENTICATED',
      'erin DELETE /api/2.0/mlflow/registered-models/delete 403 PERMISSION_DENIED',
      'erin POST /api/2.0/mlflow/registered-models/create 200',
    ]);
    const entry = r.json.entries[2];
    assert.equal(entry.source_address, '127.0.0.1');
    assert.equal(entry.path, '/api/2.0/mlflow/registered-models/create');
    assert.ok(entry.timestamp >= before);
    assert.equal((await call('GET', '/api/2.0/audit-log?principal=erin&max_results=1', ADMIN_TOKEN)).json.entries.length, 1);
    assert.equal((await call('GET', '/api/2.0/audit-log?max_results=0', ADMIN_TOKEN)).status, 400);

    // Token creation is audited too, and no token value reaches the audit log or the server log.
    const all = await call('GET', '/api/2.0/audit-log?max_results=1000', ADMIN_TOKEN);
    assert.ok(all.json.entries.some((e: any) => e.action === 'POST /api/2.0/token-management/on-behalf-of/tokens'));
    assert.ok(secrets.length > 3);
    for (const s of [...secrets, ADMIN_TOKEN]) {
      assert.ok(!all.text.includes(s), 'a token in the audit log');
      assert.ok(!logged.some((l) => l.includes(s)), 'a token in the server log');
    }
  });
});

describe('CLI', () => {
  test('principals, tokens, whoami, permissions and audit', async () => {
    const ferry = (args: string[], token = ADMIN_TOKEN): Promise<{ code: number; stdout: string; stderr: string }> => new Promise((resolve) => {
      execFile(process.execPath, [FERRY_BIN, ...args], { env: { PATH: process.env.PATH ?? '', FERRY_URL: server.url, FERRY_TOKEN: token } }, (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
      });
    });
    assert.match((await ferry(['principals', 'create', 'frank'])).stdout, /Created user frank/);
    const issued = await ferry(['tokens', 'create', '--for', 'frank', '--lifetime', '7d', '--comment', 'cli', '--json']);
    assert.equal(issued.code, 0, issued.stderr);
    const token = JSON.parse(issued.stdout).token_value as string;
    assert.equal(JSON.parse(issued.stdout).token_info.expiry_time - JSON.parse(issued.stdout).token_info.creation_time, 7 * 86_400_000);
    assert.match((await ferry(['whoami'], token)).stdout, /^frank \(user\)/);
    assert.match((await ferry(['tokens', 'list'], token)).stdout, /cli/);
    const denied = await ferry(['principals', 'list'], token);
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /PERMISSION_DENIED/);
    assert.equal((await ferry(['models', 'list'], token)).code, 0);
    assert.equal((await call('POST', '/api/2.0/mlflow/registered-models/create', ADMIN_TOKEN, { name: 'cli-model' })).status, 200);
    const granted = await ferry(['permissions', 'grant', 'model', 'cli-model', '--user', 'frank', '--level', 'CAN_EDIT']);
    assert.equal(granted.code, 0, granted.stderr);
    assert.match(granted.stdout, /frank\s+CAN_EDIT/);
    assert.equal((await call('POST', '/api/2.0/mlflow/registered-models/set-tag', token, { name: 'cli-model', key: 'k', value: 'v' })).status, 200);
    assert.doesNotMatch((await ferry(['permissions', 'revoke', 'model', 'cli-model', '--user', 'frank'])).stdout, /frank/);
    assertDenied(await call('POST', '/api/2.0/mlflow/registered-models/set-tag', token, { name: 'cli-model', key: 'k', value: 'v' }));
    const created = await call('POST', '/api/2.0/mlflow/experiments/create', ADMIN_TOKEN, { name: 'cli-experiment' });
    assert.equal(created.status, 200, created.text);
    const experiment = created.json.experiment_id as string;
    const onExperiment = await ferry(['permissions', 'grant', 'experiment', experiment, '--user', 'frank', '--level', 'CAN_READ']);
    assert.equal(onExperiment.code, 0, onExperiment.stderr);
    assert.match(onExperiment.stdout, /frank\s+CAN_READ/);
    assert.equal((await call('GET', `/api/2.0/mlflow/experiments/get?experiment_id=${experiment}`, token)).status, 200);
    assert.doesNotMatch((await ferry(['permissions', 'revoke', 'experiment', experiment, '--user', 'frank'])).stdout, /frank/);
    assertDenied(await call('GET', `/api/2.0/mlflow/experiments/get?experiment_id=${experiment}`, token));
    const audit = (await ferry(['audit', '--principal', 'frank', '--since', '1h'])).stdout;
    assert.match(audit, /^TIME\s+WHO\s+FROM\s+ACTION\s+PATH\s+RESULT\s+COUNT$/m);
    assert.match(audit, /frank .*set-tag.* 200\s+1$/m);
    const id = JSON.parse(issued.stdout).token_info.token_id as string;
    assert.match((await ferry(['tokens', 'revoke', id], token)).stdout, /Revoked/);
    assert.equal((await ferry(['whoami'], token)).code, 1);
  });
});
