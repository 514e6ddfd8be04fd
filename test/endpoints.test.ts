/**
 * Serving endpoints end to end through real processes: a server (in this process) whose local
 * runtime starts real `ferry replica` children on real Unix sockets.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import onnxProto from 'onnx-proto';
import { writeFixtures, writeMlp, type FixturePaths } from '../src/fixtures/index.js';
import type { FerryServer } from '../src/server/index.js';
import {
  ferryChildren as ferryChildrenOf, registerVersion, replicaPids as replicaPidsOf, request, startTestServer, tempDir, waitFor,
  waitSettled as waitSettledAt, type HttpResult,
} from './support/index.js';

/** Small limits so the tests can reach them: body 64 KiB, 2 waiting requests per entity for 300 ms. */
const SERVER_OPTIONS = { maxBodySize: 64 * 1024, bufferDepth: 2, bufferTimeout: '300ms' };

let dir: string;
let dataDir: string;
let fx: FixturePaths;
let server: FerryServer;

const call = (method: string, p: string, json?: unknown, token?: string | null): Promise<HttpResult> =>
  request({ url: server.url, method, path: p, ...(json === undefined ? {} : { json }), ...(token === undefined ? {} : { token }) });

const register = (name: string, source: string): Promise<string> => registerVersion(server.url, name, source);
const waitSettled = (name: string): Promise<any> => waitSettledAt(server.url, name);
const replicaPids = (): Promise<number[]> => replicaPidsOf(dataDir);
const ferryChildren = (): Promise<number[]> => ferryChildrenOf(dataDir);

/** An ONNX file that parses (so it registers READY) but that onnxruntime refuses to load. */
async function writeBrokenModel(file: string): Promise<void> {
  const { onnx } = onnxProto;
  const model = onnx.ModelProto.decode(await fsp.readFile(fx.linear));
  const node = model.graph?.node?.[0];
  if (node) node.opType = 'NoSuchOperator';
  await fsp.writeFile(file, onnx.ModelProto.encode(model).finish());
}

before(async () => {
  dir = await tempDir();
  dataDir = path.join(dir, 'data');
  fx = await writeFixtures(path.join(dir, 'fixtures'));
  server = await startTestServer(dataDir, SERVER_OPTIONS);
  await register('linear', fx.linear);
  await register('linear', fx.linear);
  await register('two', fx.twoInput);
  await writeMlp(path.join(dir, 'heavy.onnx'), [256, 2048, 2048, 256]);
  await register('heavy', path.join(dir, 'heavy.onnx'));
  await writeBrokenModel(path.join(dir, 'broken.onnx'));
  await register('broken', path.join(dir, 'broken.onnx'));
});

after(async () => {
  await server.close();
  assert.deepEqual(await ferryChildren(), [], 'no replica or pool process outlives the server');
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('serving endpoints', () => {
  test('create → READY → query in both protocols → update with no failed request → delete', async () => {
    const created = await call('POST', '/api/2.0/serving-endpoints', {
      name: 'lin', config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] }, tags: [{ key: 'team', value: 'ml' }],
    });
    assert.equal(created.status, 200, created.text);
    assert.equal(created.json.state.config_update, 'IN_PROGRESS');
    assert.equal(created.json.pending_config.config_version, 1);
    assertDuplicate(await call('POST', '/api/2.0/serving-endpoints', { name: 'lin', config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] } }));

    const e = await waitSettled('lin');
    assert.equal(e.state.ready, 'READY');
    assert.equal(e.state.config_update, 'NOT_UPDATING');
    assert.equal(e.config.served_entities[0].name, 'linear-1');
    assert.equal(e.config.served_entities[0].state.deployment, 'DEPLOYMENT_READY');
    assert.deepEqual(e.config.traffic_config.routes, [{ served_entity_name: 'linear-1', served_model_name: 'linear-1', traffic_percentage: 100 }]);

    const mlflow = await call('POST', '/serving-endpoints/lin/invocations', { inputs: [[1, 2, 3, 4], [0, 0, 0, 0]] });
    assert.equal(mlflow.status, 200, mlflow.text);
    assert.deepEqual(mlflow.json, { predictions: [[5.625], [0.125]] });
    assert.equal(mlflow.headers['served-model-name'], 'linear-1');
    const split = await call('POST', '/serving-endpoints/lin/invocations', { dataframe_split: { columns: ['a', 'b', 'c', 'd'], data: [[1, 2, 3, 4]] } });
    assert.deepEqual(split.json, { predictions: [[5.625]] });
    const v2 = await call('POST', '/v2/models/lin/infer', { inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3, 4] }] });
    assert.equal(v2.status, 200, v2.text);
    assert.deepEqual(v2.json.outputs, [{ name: 'y', datatype: 'FP32', shape: [1, 1], data: [5.625] }]);
    assert.equal(v2.json.model_name, 'lin');
    assert.equal(v2.json.model_version, '1');
    assert.equal((await call('POST', '/v2/models/lin/versions/1/infer', { inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3, 4] }] })).status, 200);
    assert.equal((await call('POST', '/v2/models/lin/versions/7/infer', { inputs: [] })).status, 404);
    const meta = await call('GET', '/v2/models/lin');
    assert.deepEqual(meta.json.inputs, [{ name: 'x', datatype: 'FP32', shape: [-1, 4] }]);
    assert.equal((await call('GET', '/v2/models/lin/ready')).status, 200);
    const bad = await call('POST', '/serving-endpoints/lin/invocations', { inputs: [[1, 2, 3]] });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error_code, 'INVALID_PARAMETER_VALUE');

    // Update to version 2 under steady traffic: every request succeeds, and the switch happens.
    let stop = false;
    const seen = new Set<string>();
    const failures: string[] = [];
    let sent = 0;
    const load = Promise.all([0, 1, 2, 3].map(async () => {
      while (!stop) {
        const r = await call('POST', '/serving-endpoints/lin/invocations', { inputs: [[1, 2, 3, 4]] });
        sent++;
        if (r.status !== 200 || r.json?.predictions?.[0]?.[0] !== 5.625) failures.push(`${r.status} ${r.text}`);
        else seen.add(String(r.headers['served-model-name']));
      }
    }));
    await new Promise((r) => setTimeout(r, 200));
    const updated = await call('PUT', '/api/2.0/serving-endpoints/lin/config', { served_entities: [{ entity_name: 'linear', entity_version: '2' }] });
    assert.equal(updated.status, 200, updated.text);
    assert.equal(updated.json.pending_config.config_version, 2);
    assert.equal(updated.json.config.config_version, 1, 'the old config serves while the new one starts');
    const conflict = await call('PUT', '/api/2.0/serving-endpoints/lin/config', { served_entities: [{ entity_name: 'linear', entity_version: '1' }] });
    assert.equal(conflict.status, 409);
    assert.equal(conflict.json.error_code, 'RESOURCE_CONFLICT');
    const after2 = await waitSettled('lin');
    await new Promise((r) => setTimeout(r, 300));
    stop = true;
    await load;
    assert.deepEqual(failures, [], `${failures.length} of ${sent} requests failed during the update`);
    assert.ok(sent > 20, `only ${sent} requests during the update`);
    assert.deepEqual([...seen].sort(), ['linear-1', 'linear-2']);
    assert.equal(after2.config.config_version, 2);
    assert.equal(after2.config.served_entities[0].entity_version, '2');
    assert.equal(after2.pending_config, undefined);
    await waitFor('old replica stopped', async () => ((await replicaPids()).length === 1 ? true : undefined));

    const logs = await call('GET', '/api/2.0/serving-endpoints/lin/served-models/linear-2/logs');
    assert.match(logs.json.logs, /replica ready/);
    assert.equal((await call('GET', '/api/2.0/serving-endpoints/lin/served-models/nope/logs')).status, 404);

    assert.equal((await call('DELETE', '/api/2.0/serving-endpoints/lin')).status, 200);
    assert.equal((await call('GET', '/api/2.0/serving-endpoints/lin')).status, 404);
    assert.equal((await call('POST', '/serving-endpoints/lin/invocations', { inputs: [[1, 2, 3, 4]] })).status, 404);
    assert.deepEqual(await replicaPids(), [], 'replicas gone after delete');
    // Each process has a socket directory of its own from its start: only the warm pool's (one) remains.
    assert.ok((await fsp.readdir(path.join(dataDir, 'runtime', 'sockets'))).length <= 1, 'sockets gone after delete');
  });

  test('a version that fails to load: UPDATE_FAILED with the reason, the old config keeps answering', async () => {
    await call('POST', '/api/2.0/serving-endpoints', { name: 'safe', config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] } });
    assert.equal((await waitSettled('safe')).state.ready, 'READY');
    const r = await call('PUT', '/api/2.0/serving-endpoints/safe/config', { served_entities: [{ entity_name: 'broken', entity_version: '1' }] });
    assert.equal(r.status, 200, r.text);
    const e = await waitSettled('safe');
    assert.equal(e.state.config_update, 'UPDATE_FAILED');
    assert.equal(e.state.ready, 'READY');
    assert.match(e.state.config_update_message, /broken-1.*NoSuchOperator/s);
    assert.equal(e.pending_config.served_entities[0].state.deployment, 'DEPLOYMENT_FAILED');
    assert.match(e.pending_config.served_entities[0].state.deployment_state_message, /NoSuchOperator/);
    assert.equal(e.config.served_entities[0].entity_name, 'linear');
    const q = await call('POST', '/serving-endpoints/safe/invocations', { inputs: [[1, 2, 3, 4]] });
    assert.deepEqual(q.json, { predictions: [[5.625]] });

    // A fresh endpoint on a broken version never becomes ready.
    await call('POST', '/api/2.0/serving-endpoints', { name: 'never', config: { served_entities: [{ entity_name: 'broken', entity_version: '1' }] } });
    const never = await waitSettled('never');
    assert.equal(never.state.ready, 'NOT_READY');
    assert.equal(never.state.config_update, 'UPDATE_FAILED');
    const q2 = await call('POST', '/serving-endpoints/never/invocations', { inputs: [[1, 2, 3, 4]] });
    assert.equal(q2.status, 404);
    await call('DELETE', '/api/2.0/serving-endpoints/never');

    // A later good update recovers.
    await call('PUT', '/api/2.0/serving-endpoints/safe/config', { served_entities: [{ entity_name: 'linear', entity_version: '2' }] });
    assert.equal((await waitSettled('safe')).state.config_update, 'NOT_UPDATING');
    await call('DELETE', '/api/2.0/serving-endpoints/safe');
  });

  test('kill -9 of a replica: it is restarted and serving again', async () => {
    await call('POST', '/api/2.0/serving-endpoints', { name: 'crashy', config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] } });
    await waitSettled('crashy');
    const [pid] = await replicaPids();
    assert.ok(pid);
    process.kill(pid, 'SIGKILL');
    await waitFor('a new replica', async () => {
      const pids = await replicaPids();
      return pids.length === 1 && pids[0] !== pid ? true : undefined;
    });
    const e = await waitFor('entity ready again', async () => {
      const r = await call('GET', '/api/2.0/serving-endpoints/crashy');
      return r.json.config.served_entities[0].state.deployment === 'DEPLOYMENT_READY' ? r.json : undefined;
    });
    assert.equal(e.state.ready, 'READY');
    const q = await call('POST', '/serving-endpoints/crashy/invocations', { inputs: [[1, 2, 3, 4]] });
    assert.deepEqual(q.json, { predictions: [[5.625]] });
    await call('DELETE', '/api/2.0/serving-endpoints/crashy');
  });

  test('traffic split between two versions, and config validation names the field', async () => {
    const r = await call('POST', '/api/2.0/serving-endpoints', {
      name: 'ab',
      config: {
        served_entities: [{ name: 'a', entity_name: 'linear', entity_version: '1' }, { name: 'b', entity_name: 'linear', entity_version: '2' }],
        traffic_config: { routes: [{ served_entity_name: 'a', traffic_percentage: 80 }, { served_model_name: 'b', traffic_percentage: 20 }] },
      },
    });
    assert.equal(r.status, 200, r.text);
    await waitSettled('ab');
    const counts: Record<string, number> = {};
    for (let i = 0; i < 200; i++) {
      const q = await call('POST', '/serving-endpoints/ab/invocations', { inputs: [[1, 2, 3, 4]] });
      const who = String(q.headers['served-model-name']);
      counts[who] = (counts[who] ?? 0) + 1;
    }
    // 200 draws at 80/20: b gets 40 ± 4.4σ (σ ≈ 5.7) essentially always.
    assert.ok((counts.b ?? 0) > 15 && (counts.b ?? 0) < 65, JSON.stringify(counts));
    // A traffic-only change restarts nothing.
    const before = (await replicaPids()).sort();
    await call('PUT', '/api/2.0/serving-endpoints/ab/config', {
      served_entities: [{ name: 'a', entity_name: 'linear', entity_version: '1' }, { name: 'b', entity_name: 'linear', entity_version: '2' }],
      traffic_config: { routes: [{ served_entity_name: 'a', traffic_percentage: 0 }, { served_entity_name: 'b', traffic_percentage: 100 }] },
    });
    const e = await waitSettled('ab');
    assert.equal(e.config.config_version, 2);
    assert.deepEqual((await replicaPids()).sort(), before);
    for (let i = 0; i < 20; i++) assert.equal((await call('POST', '/serving-endpoints/ab/invocations', { inputs: [[1, 2, 3, 4]] })).headers['served-model-name'], 'b');

    const invalid: Array<[unknown, RegExp]> = [
      [{ served_entities: [] }, /config\.served_entities/],
      [{ served_entities: [{ entity_name: 'linear', entity_version: '1', workload_size: 'Huge' }] }, /config\.served_entities\[0\]\.workload_size/],
      [{ served_entities: [{ entity_name: 'linear', entity_version: '9' }] }, /config\.served_entities\[0\].*version 9/],
      [{ served_entities: [{ entity_name: 'nope', entity_version: '1' }] }, /'nope' not found/],
      [{ served_entities: [{ entity_name: 'linear', entity_version: '1' }], traffic_config: { routes: [{ served_entity_name: 'linear-1', traffic_percentage: 90 }] } }, /add up to 100/],
      [{ served_entities: [{ entity_name: 'linear', entity_version: '1' }], traffic_config: { routes: [{ served_entity_name: 'zzz', traffic_percentage: 100 }] } }, /routes\[0\]\.served_entity_name/],
      [{ served_entities: [{ entity_name: 'linear', entity_version: '1' }], bogus: 1 }, /Unknown key 'bogus'/],
    ];
    for (const [config, re] of invalid) {
      const res = await call('PUT', '/api/2.0/serving-endpoints/ab/config', config);
      assert.equal(res.status, 400, `${JSON.stringify(config)} → ${res.text}`);
      assert.equal(res.json.error_code, 'INVALID_PARAMETER_VALUE');
      assert.match(res.json.message, re);
    }
    const badName = await call('POST', '/api/2.0/serving-endpoints', { name: 'no spaces', config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] } });
    assert.equal(badName.status, 400);
    assert.match(badName.json.message, /'name'/);
    await call('DELETE', '/api/2.0/serving-endpoints/ab');
  });

  test('gateway errors: 401, 404, 413, 504, 429 and 503 while no replica has room', async () => {
    await call('POST', '/api/2.0/serving-endpoints', { name: 'errs', config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] } });
    await waitSettled('errs');
    assert.equal((await call('POST', '/serving-endpoints/errs/invocations', { inputs: [[1, 2, 3, 4]] }, null)).status, 401);
    assert.equal((await call('POST', '/serving-endpoints/errs/invocations', { inputs: [[1, 2, 3, 4]] }, 'ferry_bad')).status, 401);
    const missing = await call('POST', '/serving-endpoints/nope/invocations', { inputs: [[1, 2, 3, 4]] });
    assert.equal(missing.status, 404);
    assert.match(missing.json.message, /'nope' not found/);
    const big = await call('POST', '/serving-endpoints/errs/invocations', { inputs: Array.from({ length: 10_000 }, () => [1, 2, 3, 4]) });
    assert.equal(big.status, 413);
    assert.equal(big.json.error_code, 'PAYLOAD_TOO_LARGE');
    // A model slower than the endpoint's timeout: 504.
    await call('POST', '/api/2.0/serving-endpoints', { name: 'slow', config: { served_entities: [{ entity_name: 'heavy', entity_version: '1' }], request_timeout_ms: 1 } });
    await waitSettled('slow');
    // 32 rows through 256→2048→2048→256: ~0.3 GFLOP, several ms on any CPU.
    const rows = Array.from({ length: 32 }, (_, i) => Array.from({ length: 256 }, (_, j) => (i + j) % 7));
    const slow = await request({ url: server.url, method: 'POST', path: '/serving-endpoints/slow/invocations', json: { inputs: rows } });
    assert.equal(slow.status, 504, slow.text);
    assert.equal(slow.json.error_code, 'DEADLINE_EXCEEDED');
    await call('DELETE', '/api/2.0/serving-endpoints/slow');

    // No ready replica: kill it and ask before the restart (backoff ≥ 1 s) brings it back. Two
    // requests wait in the buffer (then 503 after 300 ms), the others are refused at once (429).
    const [pid] = await replicaPids();
    process.kill(pid as number, 'SIGKILL');
    await waitFor('replica gone', async () => ((await replicaPids()).length === 0 ? true : undefined));
    const recovering = await waitFor('backend removed', async () => {
      const entity = (await call('GET', '/api/2.0/serving-endpoints/errs')).json.config.served_entities[0];
      return entity.state.replicas.ready === 0 ? entity : undefined;
    });
    assert.equal(recovering.state.deployment, 'DEPLOYMENT_RECOVERING');
    assert.match(recovering.state.deployment_state_message, /exited \(SIGKILL\)\. Last log lines:\n.*replica ready/s);
    const answers = await Promise.all(Array.from({ length: 5 }, () => call('POST', '/serving-endpoints/errs/invocations', { inputs: [[1, 2, 3, 4]] })));
    const byStatus = answers.map((a) => a.status).sort();
    assert.deepEqual(byStatus, [429, 429, 429, 503, 503], answers.map((a) => a.text).join('\n'));
    for (const a of answers) {
      assert.equal(a.headers['retry-after'], '1');
      assert.equal(a.json.error_code, a.status === 429 ? 'REQUEST_LIMIT_EXCEEDED' : 'TEMPORARILY_UNAVAILABLE');
    }
    // Once the replacement is ready, requests succeed again.
    await waitFor('serving again', async () => ((await call('POST', '/serving-endpoints/errs/invocations', { inputs: [[1, 2, 3, 4]] })).status === 200 ? true : undefined));
    await call('DELETE', '/api/2.0/serving-endpoints/errs');
  });
});

describe('restart', () => {
  test('a restarted server brings its endpoints back READY with the same config', async () => {
    await call('POST', '/api/2.0/serving-endpoints', { name: 'durable', config: { served_entities: [{ entity_name: 'two', entity_version: '1' }] } });
    const before = await waitSettled('durable');
    await server.close();
    assert.deepEqual(await ferryChildren(), [], 'stopping the server stops its replicas and its warm pool');
    server = await startTestServer(dataDir, SERVER_OPTIONS);
    const after = await waitFor('endpoint back', async () => {
      const r = await call('GET', '/api/2.0/serving-endpoints/durable');
      return r.json?.state?.ready === 'READY' ? r.json : undefined;
    });
    assert.deepEqual(after.config, before.config);
    const q = await call('POST', '/serving-endpoints/durable/invocations', { inputs: { a: [[1, 2]], b: [[3, 4]] } });
    assert.equal(q.status, 200, q.text);
    await call('DELETE', '/api/2.0/serving-endpoints/durable');
  });
});

function assertDuplicate(r: HttpResult): void {
  assert.equal(r.status, 409);
  assert.equal(r.json.error_code, 'RESOURCE_ALREADY_EXISTS');
}
