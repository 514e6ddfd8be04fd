/**
 * Gateway workers (`gatewayWorkers: 2`, src/server/workers.ts): two worker processes accept the
 * server's connections and serve inference; the primary runs the control plane. Checked on a real
 * server with real replicas: exact rate limits across workers, every request counted once in
 * /metrics and in the inference table, the control plane relayed with auth, a killed worker
 * replaced without failing the other's requests, and a drain on close that answers what is in flight.
 */
import assert from 'node:assert/strict';
import cluster from 'node:cluster';
import fsp from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { compileServerConfig } from '../src/config/index.js';
import { writeFixtures } from '../src/fixtures/index.js';
import type { FerryServer } from '../src/server/index.js';
import type { WorkerInit } from '../src/server/workers.js';
import { ADMIN_TOKEN, processDescendants, registerVersion, request, startTestServer, tempDir, waitFor, waitSettled, type HttpResult } from './support/index.js';

let dir: string;
let server: FerryServer;
const call = (method: string, p: string, json?: unknown, token: string | null = ADMIN_TOKEN): Promise<HttpResult> =>
  request({ url: server.url, method, path: p, token, ...(json === undefined ? {} : { json }) });
const ROW = { inputs: [[1, 2, 3, 4]] };
/** `n` invocations at once, each on a connection of its own (so cluster spreads them over the workers). */
const burst = (name: string, n: number): Promise<HttpResult[]> => Promise.all(Array.from({ length: n }, () => call('POST', `/serving-endpoints/${name}/invocations`, ROW)));
const count = (results: HttpResult[], status: number): number => results.filter((r) => r.status === status).length;

/** The gateway worker processes of this test process's server. */
async function workerPids(): Promise<number[]> {
  const pids: number[] = [];
  for (const pid of await processDescendants(process.pid)) {
    const cmd = await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes('worker-main.js')) pids.push(pid);
  }
  return pids;
}

const createReady = async (name: string, aiGateway?: unknown): Promise<void> => {
  const r = await call('POST', '/api/2.0/serving-endpoints', {
    name, config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] }, ...(aiGateway === undefined ? {} : { ai_gateway: aiGateway }),
  });
  assert.equal(r.status, 200, r.text);
  await waitSettled(server.url, name);
  await waitFor(`${name} ready`, async () => ((await call('GET', `/api/2.0/serving-endpoints/${name}`)).json.state.ready === 'READY' ? true : undefined));
};

/** `ferry_requests_total` of an endpoint with status 200 (0 when absent). */
async function served(endpoint: string): Promise<number> {
  const text = (await call('GET', '/metrics')).text;
  const line = text.split('\n').find((l) => l.startsWith('ferry_requests_total{') && l.includes(`endpoint="${endpoint}"`) && l.includes('code="200"'));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

before(async () => {
  dir = await tempDir();
  const fx = await writeFixtures(path.join(dir, 'fixtures'));
  server = await startTestServer(path.join(dir, 'data'), { gatewayWorkers: 2 });
  await registerVersion(server.url, 'linear', fx.linear);
  await createReady('lin');
});

after(async () => {
  await server.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

test('two workers serve inference; the control plane is relayed to the primary with its auth, audit and error shapes', { timeout: 60_000 }, async () => {
  assert.equal((await workerPids()).length, 2);
  const results = await burst('lin', 40);
  assert.equal(count(results, 200), 40, results.find((r) => r.status !== 200)?.text);
  assert.equal(results[0]?.headers['served-model-name'], 'linear-1');
  // Relayed: the endpoints API, with the caller's token checked by the primary.
  assert.equal((await call('GET', '/api/2.0/serving-endpoints/lin')).json.name, 'lin');
  const anonymous = await call('GET', '/api/2.0/serving-endpoints', undefined, null);
  assert.equal(anonymous.status, 401);
  assert.equal(anonymous.json.error_code, 'UNAUTHENTICATED');
  const missing = await call('GET', '/api/2.0/no-such-route');
  assert.equal(missing.status, 404);
  // Served by a worker: inference without a token, in its API family's error shape.
  const v2 = await request({ url: server.url, method: 'POST', path: '/v2/models/lin/infer', token: null, json: { inputs: [] } });
  assert.equal(v2.status, 401);
  assert.deepEqual(Object.keys(v2.json), ['error']);
  // A change made through the primary reaches the workers' caches at once: a revoked token is refused on the next call.
  const token = (await call('POST', '/api/2.0/token/create', { comment: 'w' })).json.token_value as string;
  assert.equal((await request({ url: server.url, method: 'POST', path: '/serving-endpoints/lin/invocations', token, json: ROW })).status, 200);
  const id = ((await call('GET', '/api/2.0/token/list')).json.token_infos as Array<{ token_id: string; comment: string }>).find((t) => t.comment === 'w')?.token_id;
  assert.equal((await call('POST', '/api/2.0/token/delete', { token_id: id })).status, 200);
  const refused = await Promise.all(Array.from({ length: 6 }, () => request({ url: server.url, method: 'POST', path: '/serving-endpoints/lin/invocations', token, json: ROW })));
  assert.deepEqual(refused.map((r) => r.status), [401, 401, 401, 401, 401, 401]);
});

test('rate limits stay exact across workers: a burst of N + k calls gets exactly k refused', { timeout: 60_000 }, async () => {
  await createReady('rl', { rate_limits: [{ calls: 20, renewal_period: 'minute', key: 'endpoint' }] });
  const results = await burst('rl', 27);
  assert.equal(count(results, 200), 20);
  assert.equal(count(results, 429), 7);
  const refusal = results.find((r) => r.status === 429);
  assert.equal(refusal?.json.error_code, 'REQUEST_LIMIT_EXCEEDED');
  assert.match(refusal?.headers['retry-after'] ?? '', /^\d+$/);
});

test('/metrics and the inference table count every worker\'s requests exactly once', { timeout: 60_000 }, async () => {
  await createReady('tbl', { inference_table_config: { enabled: true } });
  const before = await served('lin');
  assert.equal(count(await burst('lin', 30), 200), 30);
  assert.equal(count(await burst('tbl', 12), 200), 12);
  await waitFor('the 30 requests in /metrics', async () => ((await served('lin')) >= before + 30 ? true : undefined), 5000);
  const rows = await waitFor('12 inference table rows', async () => {
    const r = await call('GET', '/api/2.0/serving-endpoints/tbl/inference-table?max_results=100');
    return r.json.rows.length >= 12 ? r.json.rows as unknown[] : undefined;
  }, 10_000);
  // Late duplicates would show by now (events are sent once per event-loop turn of a worker).
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(await served('lin'), before + 30);
  assert.equal(rows.length, 12);
  assert.equal((await call('GET', '/api/2.0/serving-endpoints/tbl/inference-table?max_results=100')).json.rows.length, 12);
});

test('a worker killed with SIGKILL is replaced; requests on connections to the other worker do not fail', { timeout: 60_000 }, async () => {
  // Four keep-alive connections: cluster hands them to the workers in turn, two each.
  const agents = Array.from({ length: 4 }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
  const sockets = new Map<http.Agent, { closed: boolean }>();
  const invoke = (agent: http.Agent): Promise<number> => new Promise((resolve, reject) => {
    const body = JSON.stringify(ROW);
    const req = http.request(`${server.url}/serving-endpoints/lin/invocations`, {
      method: 'POST', agent, headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('socket', (s) => {
      if (sockets.has(agent)) return;
      const state = { closed: false };
      sockets.set(agent, state);
      s.once('close', () => (state.closed = true));
    });
    req.on('error', reject);
    req.end(body);
  });
  try {
    for (const a of agents) assert.equal(await invoke(a), 200);
    const [victim, ...others] = await workerPids();
    assert.equal(others.length, 1);
    process.kill(victim as number, 'SIGKILL');
    await waitFor('the killed worker\'s connections to close', () => ([...sockets.values()].filter((s) => s.closed).length === 2 ? true : undefined), 10_000);
    const alive = agents.filter((a) => sockets.get(a)?.closed === false);
    assert.equal(alive.length, 2);
    for (let i = 0; i < 20; i++) for (const a of alive) assert.equal(await invoke(a), 200);
    await waitFor('a new worker', async () => ((await workerPids()).length === 2 && !(await workerPids()).includes(victim as number) ? true : undefined), 15_000);
    const results = await burst('lin', 20);
    assert.equal(count(results, 200), 20);
  } finally {
    for (const a of agents) a.destroy();
  }
});

test('two servers with workers in one process keep their own connections', { timeout: 60_000 }, async () => {
  const other = await startTestServer(path.join(dir, 'other'), { gatewayWorkers: 2, warmPoolSize: 0 });
  try {
    assert.notEqual(other.url, server.url);
    const there = await Promise.all(Array.from({ length: 20 }, () => request({ url: other.url, method: 'POST', path: '/serving-endpoints/lin/invocations', json: ROW })));
    assert.deepEqual([...new Set(there.map((r) => r.status))], [404], 'the other server has no endpoint lin');
    assert.equal(count(await burst('lin', 20), 200), 20);
  } finally {
    await other.close();
  }
});

test('a worker told to drain while its listen on a port in use is pending reports the port and exits without a crash', { timeout: 60_000 }, async () => {
  // node:cluster answers a worker's listen asynchronously; a drain that closes the server in
  // between made node throw on the failed listen's null handle (seen once in CI).
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', () => resolve()));
  const port = (blocker.address() as net.AddressInfo).port;
  try {
    cluster.setupPrimary({ exec: fileURLToPath(new URL('../src/server/worker-main.js', import.meta.url)), serialization: 'advanced', args: [], execArgv: [], silent: true });
    const worker = cluster.fork();
    let stderr = '';
    worker.process.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
    const messages: Array<{ type: string; code?: string }> = [];
    worker.on('message', (msg: { type: string; code?: string }) => {
      messages.push(msg);
      if (msg.type === 'loaded') {
        const config = compileServerConfig({ port, dataDir: path.join(dir, 'data'), gatewayWorkers: 2 });
        worker.send({ type: 'init', config, primarySocket: path.join(dir, 'no-primary.sock'), routes: [], port } satisfies WorkerInit);
      }
    });
    // The drain goes out before the primary's answer to the listen (that answer waits for the bind).
    worker.process.on('internalMessage', (msg: { cmd?: string; act?: string }) => {
      if (msg.cmd === 'NODE_CLUSTER' && msg.act === 'queryServer') worker.send({ type: 'drain' });
    });
    await new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    assert.doesNotMatch(stderr, /TypeError|\n\s+at /, stderr);
    assert.deepEqual(messages.filter((m) => m.type === 'failed').map((m) => m.code), ['EADDRINUSE']);
  } finally {
    blocker.close();
  }
});

test('close drains every worker: a request whose body is still arriving is answered', { timeout: 60_000 }, async () => {
  const body = JSON.stringify(ROW);
  const url = new URL(server.url);
  const answer = new Promise<number>((resolve, reject) => {
    const req = http.request({
      hostname: url.hostname, port: url.port, path: '/serving-endpoints/lin/invocations', method: 'POST', agent: false,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.write(body.slice(0, 5));
    // The rest once the server is closing.
    setTimeout(() => req.end(body.slice(5)), 300);
  });
  await new Promise((r) => setTimeout(r, 100));
  const closing = server.close();
  assert.equal(await answer, 200);
  await closing;
  assert.deepEqual(await workerPids(), []);
});
