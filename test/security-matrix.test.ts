/**
 * The route × role matrix: every route of the real server's route table, called by every role,
 * through the real authentication and authorization middlewares and the real store's grants. The
 * handlers are replaced by one that answers 200 "reached", so the walk changes nothing and checks
 * only who gets through. EXPECTED below is written by hand: a route added without a row here fails,
 * and so does a route whose rule stops matching its row.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { authenticate, Authorizer, authorize, generateToken, hashToken, type Access } from '../src/auth/index.js';
import { listener, Router, type Handler } from '../src/http/index.js';
import type { FerryServer } from '../src/server/index.js';
import { request, startTestServer, tempDir } from './support/index.js';

const ROLES = ['anonymous', 'outsider', 'viewer', 'querier', 'manager', 'admin'] as const;
type Role = typeof ROLES[number];
/** The least role that may call a route ('public': even without a token). */
type Min = 'public' | Exclude<Role, 'anonymous'>;

/**
 * Endpoint levels map to roles as CAN_VIEW → viewer, CAN_QUERY → querier, CAN_MANAGE → manager;
 * model and experiment levels as CAN_READ → viewer, CAN_EDIT → querier, CAN_MANAGE → manager
 * (see `before`).
 */
const EXPECTED: Record<string, Min> = {
  'GET /v2/health/live': 'public',
  'GET /v2/health/ready': 'public',
  'GET /': 'public',
  'GET /assets/*path': 'public',
  'GET /api/2.0/me': 'outsider',
  'POST /api/2.0/principals': 'admin',
  'GET /api/2.0/principals': 'admin',
  'GET /api/2.0/principals/:name': 'admin',
  'PATCH /api/2.0/principals/:name': 'admin',
  'DELETE /api/2.0/principals/:name': 'admin',
  'POST /api/2.0/token/create': 'outsider',
  'GET /api/2.0/token/list': 'outsider',
  'POST /api/2.0/token/delete': 'outsider',
  'POST /api/2.0/token-management/on-behalf-of/tokens': 'admin',
  'GET /api/2.0/token-management/tokens': 'admin',
  'DELETE /api/2.0/token-management/tokens/:id': 'admin',
  'GET /api/2.0/permissions/serving-endpoints/:id': 'manager',
  'PUT /api/2.0/permissions/serving-endpoints/:id': 'manager',
  'PATCH /api/2.0/permissions/serving-endpoints/:id': 'manager',
  'GET /api/2.0/permissions/serving-endpoints/:id/me': 'viewer',
  'GET /api/2.0/permissions/registered-models/:id': 'manager',
  'PUT /api/2.0/permissions/registered-models/:id': 'manager',
  'PATCH /api/2.0/permissions/registered-models/:id': 'manager',
  'GET /api/2.0/permissions/registered-models/:id/me': 'viewer',
  'GET /api/2.0/audit-log': 'admin',
  'POST /api/2.0/mlflow/registered-models/create': 'outsider',
  'GET /api/2.0/mlflow/registered-models/get': 'viewer',
  'PATCH /api/2.0/mlflow/registered-models/update': 'querier',
  'DELETE /api/2.0/mlflow/registered-models/delete': 'manager',
  'GET /api/2.0/mlflow/registered-models/search': 'outsider',
  'POST /api/2.0/mlflow/registered-models/get-latest-versions': 'viewer',
  'POST /api/2.0/mlflow/registered-models/set-tag': 'querier',
  'DELETE /api/2.0/mlflow/registered-models/delete-tag': 'querier',
  'POST /api/2.0/mlflow/registered-models/alias': 'querier',
  'DELETE /api/2.0/mlflow/registered-models/alias': 'querier',
  'GET /api/2.0/mlflow/registered-models/alias': 'viewer',
  'POST /api/2.0/mlflow/model-versions/create': 'querier',
  'POST /api/2.0/mlflow/model-versions/bulk-create': 'outsider',
  'GET /api/2.0/mlflow/model-versions/get': 'viewer',
  'PATCH /api/2.0/mlflow/model-versions/update': 'querier',
  'DELETE /api/2.0/mlflow/model-versions/delete': 'manager',
  'GET /api/2.0/mlflow/model-versions/search': 'outsider',
  'GET /api/2.0/mlflow/model-versions/get-download-uri': 'viewer',
  'GET /api/2.0/mlflow/model-versions/get-environment': 'viewer',
  'POST /api/2.0/mlflow/model-versions/set-tag': 'querier',
  'DELETE /api/2.0/mlflow/model-versions/delete-tag': 'querier',
  'PUT /api/2.0/mlflow-artifacts/artifacts/*path': 'outsider',
  'GET /api/2.0/mlflow-artifacts/artifacts/*path': 'outsider',
  'DELETE /api/2.0/mlflow-artifacts/artifacts/*path': 'outsider',
  'GET /api/2.0/mlflow-artifacts/artifacts': 'outsider',
  'POST /api/2.0/serving-endpoints': 'outsider',
  'GET /api/2.0/serving-endpoints': 'outsider',
  'GET /api/2.0/serving-endpoints/:name': 'viewer',
  'PUT /api/2.0/serving-endpoints/:name/config': 'manager',
  'POST /api/2.0/serving-endpoints/:name/config/cancel': 'manager',
  'PUT /api/2.0/serving-endpoints/:name/ai-gateway': 'manager',
  'DELETE /api/2.0/serving-endpoints/:name': 'manager',
  'GET /api/2.0/serving-endpoints/:name/served-models/:served/logs': 'manager',
  'GET /api/2.0/serving-endpoints/:name/served-models/:served/build-logs': 'manager',
  'GET /api/2.0/serving-endpoints/:name/inference-table': 'manager',
  'GET /api/2.0/serving-endpoints/:name/inference-table/export': 'manager',
  'GET /api/2.0/serving-endpoints/:name/inference-table/status': 'viewer',
  'POST /serving-endpoints/:name/invocations': 'querier',
  'POST /v2/models/:name/infer': 'querier',
  'POST /v2/models/:name/versions/:version/infer': 'querier',
  'GET /v2/models/:name': 'viewer',
  'GET /v2/models/:name/versions/:version': 'viewer',
  'GET /v2/models/:name/ready': 'viewer',
  'GET /v2/models/:name/versions/:version/ready': 'viewer',
  'GET /v2/models/:name/config': 'viewer',
  'GET /v2/models/:name/versions/:version/config': 'viewer',
  'GET /v2/models/stats': 'outsider',
  'GET /v2/models/:name/stats': 'viewer',
  'GET /v2/models/:name/versions/:version/stats': 'viewer',
  'GET /v2': 'public',
  'POST /v2/repository/index': 'outsider',
  'GET /v1/models/:id': 'viewer',
  'GET /api/2.0/permissions/serving-endpoints/:id/permissionLevels': 'viewer',
  'GET /api/2.0/permissions/registered-models/:id/permissionLevels': 'viewer',
  'GET /api/2.0/permissions/experiments/:id': 'manager',
  'PUT /api/2.0/permissions/experiments/:id': 'manager',
  'PATCH /api/2.0/permissions/experiments/:id': 'manager',
  'GET /api/2.0/permissions/experiments/:id/me': 'viewer',
  'GET /api/2.0/permissions/experiments/:id/permissionLevels': 'viewer',
  'POST /api/2.0/mlflow/registered-models/rename': 'manager',
  'POST /api/2.0/mlflow/model-versions/transition-stage': 'querier',
  // Tracking: experiment levels as model levels; get-by-name and the searches check in the handler.
  'POST /api/2.0/mlflow/experiments/create': 'outsider',
  'GET /api/2.0/mlflow/experiments/get': 'viewer',
  'GET /api/2.0/mlflow/experiments/get-by-name': 'outsider',
  'GET /api/2.0/mlflow/experiments/search': 'outsider',
  'POST /api/2.0/mlflow/experiments/search': 'outsider',
  'POST /api/2.0/mlflow/experiments/update': 'querier',
  'POST /api/2.0/mlflow/experiments/delete': 'manager',
  'POST /api/2.0/mlflow/experiments/restore': 'manager',
  'POST /api/2.0/mlflow/experiments/set-experiment-tag': 'querier',
  'POST /api/2.0/mlflow/runs/create': 'querier',
  'GET /api/2.0/mlflow/runs/get': 'viewer',
  'POST /api/2.0/mlflow/runs/update': 'querier',
  'POST /api/2.0/mlflow/runs/delete': 'querier',
  'POST /api/2.0/mlflow/runs/restore': 'querier',
  'POST /api/2.0/mlflow/runs/search': 'outsider',
  'GET /api/2.0/mlflow/runs/search': 'outsider',
  'POST /api/2.0/mlflow/runs/log-batch': 'querier',
  'POST /api/2.0/mlflow/runs/log-metric': 'querier',
  'POST /api/2.0/mlflow/runs/log-parameter': 'querier',
  'POST /api/2.0/mlflow/runs/set-tag': 'querier',
  'POST /api/2.0/mlflow/runs/delete-tag': 'querier',
  'POST /api/2.0/mlflow/runs/log-inputs': 'querier',
  'POST /api/2.0/mlflow/runs/log-model': 'querier',
  'GET /api/2.0/mlflow/metrics/get-history': 'viewer',
  'GET /api/2.0/serving-endpoints/:name/openapi': 'viewer',
  'PATCH /api/2.0/serving-endpoints/:name/tags': 'manager',
  'POST /v1/chat/completions': 'querier',
  'POST /v1/completions': 'querier',
  'POST /v1/embeddings': 'querier',
  'GET /v1/models': 'outsider',
  'GET /metrics': 'outsider',
  'GET /api/2.0/serving-endpoints/:name/metrics': 'viewer',
  'GET /api/2.0/serving-endpoints/:name/metrics/series': 'viewer',
  'POST /api/2.0/serving-endpoints/:name/simulate': 'manager',
};

let dir: string;
let server: FerryServer;
let probe: http.Server;
let probeUrl: string;
const tokens = new Map<Role, string | null>();
const RUN = 'a'.repeat(32);

before(async () => {
  dir = await tempDir();
  server = await startTestServer(dir);
  const store = server.store;
  // Principals with tokens, and their grants on endpoint 'ep' and model 'm' (neither needs to
  // exist: access is decided before a handler looks).
  tokens.set('anonymous', null);
  for (const role of ['outsider', 'viewer', 'querier', 'manager', 'admin'] as const) {
    const name = role === 'admin' ? 'second-admin' : role;
    await store.createPrincipal({ name, kind: 'user', admin: role === 'admin', createdMs: 0, createdBy: 'test' });
    const token = generateToken();
    await store.putToken({ id: name, principal: name, hash: hashToken(token), createdMs: 0, expiresMs: undefined, description: '' });
    tokens.set(role, token);
  }
  await store.setGrants('serving-endpoint', 'ep', [
    { grantee: 'viewer', level: 'CAN_VIEW' }, { grantee: 'querier', level: 'CAN_QUERY' }, { grantee: 'manager', level: 'CAN_MANAGE' },
  ]);
  await store.setGrants('registered-model', 'm', [
    { grantee: 'viewer', level: 'CAN_READ' }, { grantee: 'querier', level: 'CAN_EDIT' }, { grantee: 'manager', level: 'CAN_MANAGE' },
  ]);
  // Experiment '1' with a run: run routes are decided by the run's experiment.
  const experiment = await store.tracking.createExperiment({ name: 'e', tags: {} }, 0);
  await store.tracking.createRun({ id: RUN, experimentId: experiment.id, name: 'r', userId: 'admin', startMs: 0, tags: {} });
  await store.setGrants('experiment', experiment.id, [
    { grantee: 'viewer', level: 'CAN_READ' }, { grantee: 'querier', level: 'CAN_EDIT' }, { grantee: 'manager', level: 'CAN_MANAGE' },
  ]);
  // The server's own route table with its rules, each handler replaced by "reached".
  const stub = new Router<Handler, Access>();
  for (const r of server.router.list()) stub.add(r.method, r.pattern, () => ({ body: { reached: true } }), r.meta);
  const authz = new Authorizer(store);
  probe = http.createServer(listener(stub, [authenticate(authz), authorize(authz)]));
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  probeUrl = `http://127.0.0.1:${(probe.address() as AddressInfo).port}`;
});

after(async () => {
  await new Promise((resolve) => probe.close(resolve));
  await server.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

/** A concrete request for a route pattern, about endpoint 'ep', model 'm', experiment '1' and its run. */
function concrete(method: string, pattern: string): { path: string; json?: unknown } {
  const path = pattern
    .replace(':name/served-models', 'ep/served-models')
    .replace(/^\/api\/2\.0\/permissions\/serving-endpoints\/:id/, '/api/2.0/permissions/serving-endpoints/ep')
    .replace(/^\/api\/2\.0\/permissions\/registered-models\/:id/, '/api/2.0/permissions/registered-models/m')
    .replace(/^\/api\/2\.0\/permissions\/experiments\/:id/, '/api/2.0/permissions/experiments/1')
    .replace(':name', pattern.startsWith('/api/2.0/principals') ? 'viewer' : 'ep')
    .replace(':version', '1').replace(':served', 'm-1').replace('/v1/models/:id', '/v1/models/ep').replace(':id', 'x').replace('*path', 'dir/file');
  // OpenAI routes name their endpoint in the body's `model`.
  if (pattern.startsWith('/v1/') && method === 'POST') return { path, json: { model: 'ep' } };
  if (!pattern.startsWith('/api/2.0/mlflow/')) return { path };
  // Registry and tracking calls name their object in the query (GET, DELETE) or the body (POST, PATCH).
  return method === 'GET' || method === 'DELETE' ? { path: `${path}?name=m&experiment_id=1&run_id=${RUN}` } : { path, json: { name: 'm', experiment_id: '1', run_id: RUN } };
}

test('every route has an access rule and a row in the expected matrix', () => {
  const routes = server.router.list().map((r) => `${r.method} ${r.pattern}`);
  for (const r of server.router.list()) assert.ok(r.meta !== undefined, `route ${r.method} ${r.pattern} has no access rule`);
  assert.deepEqual(routes.filter((r) => !(r in EXPECTED)), [], 'routes without a row in EXPECTED (add one: who may call it?)');
  assert.deepEqual(Object.keys(EXPECTED).filter((r) => !routes.includes(r)), [], 'rows in EXPECTED for routes that no longer exist');
});

test('route × role: each role reaches exactly the routes its rank allows', async () => {
  const failures: string[] = [];
  for (const r of server.router.list()) {
    const min = EXPECTED[`${r.method} ${r.pattern}`];
    if (min === undefined) continue;
    for (const role of ROLES) {
      const allowed = min === 'public' || ROLES.indexOf(role) >= ROLES.indexOf(min);
      const { path, json } = concrete(r.method, r.pattern);
      const res = await request({ url: probeUrl, method: r.method, path, token: tokens.get(role) ?? null, ...(json === undefined ? {} : { json }) });
      const want = allowed ? 200 : role === 'anonymous' ? 401 : 403;
      if (res.status !== want) failures.push(`${role} ${r.method} ${path}: ${res.status} (want ${want}) ${res.text.slice(0, 120)}`);
      if (!allowed && role !== 'anonymous' && res.json?.error_code !== 'PERMISSION_DENIED') failures.push(`${role} ${r.method} ${path}: error_code ${String(res.json?.error_code)}`);
    }
  }
  assert.deepEqual(failures, []);
});

test('a grant to the group "users" reaches every authenticated principal, never anonymous callers', async () => {
  await server.store.setGrants('serving-endpoint', 'open', [{ grantee: 'group:users', level: 'CAN_QUERY' }]);
  const call = (role: Role): Promise<number> => request({ url: probeUrl, method: 'POST', path: '/serving-endpoints/open/invocations', json: {}, token: tokens.get(role) ?? null }).then((r) => r.status);
  assert.equal(await call('outsider'), 200);
  assert.equal(await call('anonymous'), 401);
  const view = await request({ url: probeUrl, method: 'PUT', path: '/api/2.0/serving-endpoints/open/config', json: {}, token: tokens.get('outsider') ?? null });
  assert.equal(view.status, 403, 'CAN_QUERY for users does not make them managers');
});
