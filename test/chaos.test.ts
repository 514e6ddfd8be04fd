/**
 * Chaos scenarios, bounded in time, against real processes on 127.0.0.1: replicas killed under
 * load, a broken rollout under load, the server killed during a burst of writes. Each scenario
 * prints one summary line: requests sent, succeeded, failed.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import onnxProto from 'onnx-proto';
import { writeFixtures, type FixturePaths } from '../src/fixtures/index.js';
import type { FerryServer } from '../src/server/index.js';
import {
  kill, Processes, registerVersion, replicaPids as replicaPidsOf, request, startTestServer, tempDir, waitFor, waitSettled, type HttpResult,
} from './support/index.js';

let dir: string;
let fx: FixturePaths;
let server: FerryServer;

const call = (method: string, p: string, json?: unknown): Promise<HttpResult> =>
  request({ url: server.url, method, path: p, ...(json === undefined ? {} : { json }) });

const register = (url: string, name: string, source: string): Promise<string> => registerVersion(url, name, source);
const settled = (name: string): Promise<any> => waitSettled(server.url, name);
const replicaPids = (endpoint: string): Promise<number[]> => replicaPidsOf(path.join(dir, 'data'), endpoint);

/** Closed-loop clients scoring `body` until stopped (or 60 s, a hard bound). */
function load(endpoint: string, clients: number, body: unknown, check: (r: HttpResult) => boolean) {
  let stop = false;
  const stats = { sent: 0, succeeded: 0, failed: 0, failures: [] as string[], failedAnswers: [] as HttpResult[] };
  const deadline = Date.now() + 60_000;
  const running = Promise.all(Array.from({ length: clients }, async () => {
    while (!stop && Date.now() < deadline) {
      const r = await call('POST', `/serving-endpoints/${endpoint}/invocations`, body);
      stats.sent++;
      if (r.status === 200 && check(r)) stats.succeeded++;
      else {
        stats.failed++;
        stats.failedAnswers.push(r);
        if (stats.failures.length < 5) stats.failures.push(`${r.status} ${r.text}`);
      }
    }
  }));
  return { stats, stop: async () => { stop = true; await running; } };
}

function summary(scenario: string, s: { sent: number; succeeded: number; failed: number }): void {
  console.log(`chaos: ${scenario}: sent ${s.sent}, succeeded ${s.succeeded}, failed ${s.failed}`);
}

const ROW = { inputs: [[1, 2, 3, 4]] };
const isLinear = (r: HttpResult): boolean => r.json?.predictions?.[0]?.[0] === 5.625;

before(async () => {
  dir = await tempDir();
  fx = await writeFixtures(path.join(dir, 'fixtures'));
  server = await startTestServer(path.join(dir, 'data'));
  await register(server.url, 'linear', fx.linear);
  await register(server.url, 'linear', fx.linear);
  const { onnx } = onnxProto;
  const broken = onnx.ModelProto.decode(await fsp.readFile(fx.linear));
  if (broken.graph?.node?.[0]) broken.graph.node[0].opType = 'NoSuchOperator';
  await fsp.writeFile(path.join(dir, 'broken.onnx'), onnx.ModelProto.encode(broken).finish());
  await call('POST', '/api/2.0/mlflow/model-versions/create', { name: 'linear', source: path.join(dir, 'broken.onnx') });
});

after(async () => {
  await server.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

test('kill -9 a random replica every 3 s for 30 s under load: only the requests a killed replica held fail (502, not retried), no other', { timeout: 120_000 }, async () => {
  // Two replicas, fixed: 8 concurrent requests at 4 per replica.
  await call('POST', '/api/2.0/serving-endpoints', {
    name: 'chaos',
    config: { served_entities: [{ entity_name: 'linear', entity_version: '1', min_provisioned_concurrency: 8, max_provisioned_concurrency: 8 }] },
  });
  await settled('chaos');
  await waitFor('2 replicas', async () => ((await replicaPids('chaos')).length === 2 ? true : undefined));
  const l = load('chaos', 8, ROW, isLinear);
  let kills = 0;
  const end = Date.now() + 30_000;
  while (Date.now() < end) {
    await new Promise((r) => setTimeout(r, 3000));
    const pids = await replicaPids('chaos');
    // Kill only while both are up: "when another replica can answer".
    if (pids.length === 2) {
      process.kill(pids[Math.floor(Math.random() * 2)] as number, 'SIGKILL');
      kills++;
    }
  }
  await l.stop();
  summary(`kill -9 a replica every 3 s (${kills} kills)`, l.stats);
  // Replicas killed young count as crash-looping, so restarts back off (2 s, 4 s, ...) and kills
  // wait for both to be up again: 4-6 kills in 30 s.
  assert.ok(kills >= 4, `only ${kills} kills`);
  // A request the replica held when it died is not retried (it may be what killed it): at most
  // the 8 clients' requests per kill fail, each a 502 saying so. Requests that had not reached
  // it are retried on the other replica.
  assert.ok(l.stats.failed <= 8 * kills, `${l.stats.failed} of ${l.stats.sent} failed`);
  for (const r of l.stats.failedAnswers) {
    assert.equal(r.status, 502, r.text);
    assert.match(r.json?.message, /^The replica stopped while it held this request \(.*\); the request was not sent to another replica, as it may be what stopped it\.$/);
  }
  assert.ok(l.stats.sent > 500);
  await call('DELETE', '/api/2.0/serving-endpoints/chaos');
});

test('roll out v1 → v2 → broken v3 under load: no request fails, v3 is refused, v2 keeps serving', { timeout: 120_000 }, async () => {
  await call('POST', '/api/2.0/serving-endpoints', { name: 'roll', config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] } });
  await settled('roll');
  const l = load('roll', 6, ROW, isLinear);
  await new Promise((r) => setTimeout(r, 500));
  await call('PUT', '/api/2.0/serving-endpoints/roll/config', { served_entities: [{ entity_name: 'linear', entity_version: '2' }] });
  const v2 = await settled('roll');
  assert.equal(v2.state.config_update, 'NOT_UPDATING');
  const afterV2 = { ...l.stats };
  await call('PUT', '/api/2.0/serving-endpoints/roll/config', { served_entities: [{ entity_name: 'linear', entity_version: '3' }] });
  const v3 = await settled('roll');
  await new Promise((r) => setTimeout(r, 500));
  await l.stop();
  summary('roll out v1 → v2 under load', afterV2);
  summary('roll out broken v3 under load', { sent: l.stats.sent - afterV2.sent, succeeded: l.stats.succeeded - afterV2.succeeded, failed: l.stats.failed - afterV2.failed });
  assert.equal(v3.state.config_update, 'UPDATE_FAILED');
  assert.match(v3.state.config_update_message, /NoSuchOperator/);
  assert.equal(v3.config.served_entities[0].entity_version, '2');
  assert.deepEqual(l.stats.failures, [], `${l.stats.failed} of ${l.stats.sent} failed`);
  await call('DELETE', '/api/2.0/serving-endpoints/roll');
});

test('kill -9 the server during a burst of 500 registry and endpoint writes: every acknowledged write is there after restart', { timeout: 120_000 }, async () => {
  const procs = new Processes();
  const dataDir = path.join(dir, 'killed');
  try {
    const first = await procs.startServer(dataDir);
    await register(first.url, 'base', fx.linear);
    const acked: Array<{ kind: string; check: (url: string) => Promise<boolean> }> = [];
    let sent = 0;
    let failed = 0;
    const get = async (url: string, p: string): Promise<HttpResult> => request({ url, path: p });
    const writes = async (w: number): Promise<void> => {
      for (let i = 0; ; i++) {
        const kind = i % 5;
        const name = `m${w}-${i}`;
        try {
          sent++;
          let r: HttpResult;
          if (kind === 4 && i < 40) {
            // A few endpoint writes: each starts a replica, so keep them rare.
            r = await request({ url: first.url, method: 'POST', path: '/api/2.0/serving-endpoints', json: { name: `ep${w}-${i}`, config: { served_entities: [{ entity_name: 'base', entity_version: '1' }] } } });
            if (r.status === 200) acked.push({ kind: 'endpoint', check: async (url) => (await get(url, `/api/2.0/serving-endpoints/ep${w}-${i}`)).status === 200 });
          } else if (kind === 1) {
            r = await request({ url: first.url, method: 'POST', path: '/api/2.0/mlflow/registered-models/set-tag', json: { name: 'base', key: `k${w}-${i}`, value: String(i) } });
            if (r.status === 200) acked.push({ kind: 'tag', check: async (url) => (await get(url, '/api/2.0/mlflow/registered-models/get?name=base')).json.registered_model.tags.some((t: { key: string }) => t.key === `k${w}-${i}`) });
          } else if (kind === 2) {
            r = await request({ url: first.url, method: 'POST', path: '/api/2.0/mlflow/registered-models/alias', json: { name: 'base', alias: `a${w}_${i}`, version: '1' } });
            if (r.status === 200) acked.push({ kind: 'alias', check: async (url) => (await get(url, `/api/2.0/mlflow/registered-models/alias?name=base&alias=a${w}_${i}`)).status === 200 });
          } else {
            r = await request({ url: first.url, method: 'POST', path: '/api/2.0/mlflow/registered-models/create', json: { name } });
            if (r.status === 200) acked.push({ kind: 'model', check: async (url) => (await get(url, `/api/2.0/mlflow/registered-models/get?name=${name}`)).status === 200 });
          }
          if (r.status !== 200) failed++;
        } catch {
          return; // the server is gone
        }
      }
    };
    const writers = [0, 1, 2, 3].map(writes);
    while (sent < 500) await new Promise((r) => setTimeout(r, 2));
    await kill(first.child, 'SIGKILL');
    await Promise.all(writers);
    const second = await procs.startServer(dataDir);
    const lost: string[] = [];
    for (const a of acked) if (!(await a.check(second.url))) lost.push(a.kind);
    summary('kill -9 the server during 500+ writes', { sent, succeeded: acked.length, failed: sent - acked.length });
    assert.deepEqual(lost, [], `${lost.length} acknowledged writes lost`);
    assert.equal(failed, 0, 'no write was refused before the kill');
    assert.ok(acked.filter((a) => a.kind === 'endpoint').length >= 1);
  } finally {
    await procs.killAll();
  }
});
