/**
 * `POST /api/2.0/serving-endpoints/{name}/simulate` and `ferry simulate` (a real child process,
 * against the server and offline) on a real server with a real endpoint: the
 * current config and a candidate side by side, the entity's own measurements and traffic as the
 * replica model and trace, a recommendation, and 400s that name the trace line or the field.
 * (Who may call it is checked by the route × role matrix in security-matrix.test.ts.)
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { writeFixtures } from '../src/fixtures/index.js';
import type { FerryServer } from '../src/server/index.js';
import { ADMIN_TOKEN, FERRY_BIN, request, startTestServer, tempDir, waitFor, type HttpResult } from './support/index.js';

let dir: string;
let server: FerryServer;

const call = (method: string, p: string, json?: unknown): Promise<HttpResult> =>
  request({ url: server.url, method, path: p, ...(json === undefined ? {} : { json }) });
const simulate = (json: unknown): Promise<HttpResult> => call('POST', '/api/2.0/serving-endpoints/sim/simulate', json);

before(async () => {
  dir = await tempDir();
  const fx = await writeFixtures(path.join(dir, 'fixtures'));
  server = await startTestServer(path.join(dir, 'data'));
  await call('POST', '/api/2.0/mlflow/registered-models/create', { name: 'linear' });
  await call('POST', '/api/2.0/mlflow/model-versions/create', { name: 'linear', source: fx.linear });
  const r = await call('POST', '/api/2.0/serving-endpoints', {
    name: 'sim',
    config: { served_entities: [{ name: 'main', entity_name: 'linear', entity_version: '1', workload_size: 'Medium', autoscaling: { target_concurrency: 4 } }] },
  });
  assert.equal(r.status, 200, r.text);
  await waitFor('READY', async () => ((await call('GET', '/api/2.0/serving-endpoints/sim')).json.state.ready === 'READY' ? true : undefined));
  for (let i = 0; i < 20; i++) assert.equal((await call('POST', '/serving-endpoints/sim/invocations', { inputs: [[1, 2, 3, 4]] })).status, 200);
});

after(async () => {
  await server.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

test('current and candidate side by side on a pattern, with the entity\'s measured model time', { timeout: 60_000 }, async () => {
  const r = await simulate({
    trace: { source: 'pattern', pattern: 'step', duration_ms: 120_000, rps: 20, peak_rps: 400, at_ms: 60_000 },
    candidate: { scale_to_zero_enabled: true, min_provisioned_concurrency: 0, autoscaling: { target_concurrency: 1 } },
    replica: { cold_start_ms: 800 },
    price_per_replica_hour: { CPU: 0.5, 'CPU/Medium': 0.8 },
  });
  assert.equal(r.status, 200, r.text);
  const a = r.json;
  assert.equal(a.served_entity_name, 'main');
  assert.equal(a.replica_model.service_time_source, 'measured', 'from the replicas\' model-call histogram');
  assert.equal(a.replica_model.service_time.kind, 'histogram');
  assert.equal(a.replica_model.cold_start_source, 'request');
  assert.equal(a.replica_model.max_concurrency_per_replica, 64, 'the server\'s replicaMaxConcurrency');
  assert.equal(a.current.config.workload_size, 'Medium');
  assert.equal(a.current.config.autoscaling.target_concurrency, 4);
  assert.equal(a.candidate.config.autoscaling.target_concurrency, 1);
  assert.equal(a.candidate.config.autoscaling.stable_window_ms, 30_000, 'the current tunables stay unless replaced');
  assert.equal(a.trace.requests, 60 * 20 + 60 * 400);
  // Medium at target 4: 2..4 replicas; the candidate (target 1, 0..16) has room for more.
  assert.equal(a.current.result.max_replicas, 2, 'a tiny model keeps the concurrency low');
  assert.ok(a.current.result.replica_seconds >= 2 * 120);
  assert.ok(a.candidate.result.replica_seconds < a.current.result.replica_seconds, JSON.stringify(a.candidate.result));
  assert.equal(a.current.result.cost, Math.round(a.current.result.replica_seconds / 3600 * 0.8 * 1000) / 1000, 'the Medium CPU price');
  assert.equal(a.current.result.timeline.length, 120);
  assert.equal(a.recommendation, null);
});

test('the endpoint\'s own traffic: the series; a recommendation on it', { timeout: 60_000 }, async () => {
  const r = await simulate({ trace: { source: 'series', window_ms: 60_000 }, recommend: { target_p99_ms: 1000 } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.trace.source, 'series');
  assert.ok(r.json.trace.requests >= 20, `the series holds the 20 requests sent: ${r.json.trace.requests}`);
  assert.equal(r.json.trace.duration_s, 60);
  const rec = r.json.recommendation;
  assert.ok(rec.setting !== null && rec.result !== null, JSON.stringify(rec));
  assert.ok(rec.result.replica_seconds <= rec.static_peak.result.replica_seconds);
});

test('the endpoint\'s own traffic: inference-table timestamps', { timeout: 60_000 }, async () => {
  const on = await call('PUT', '/api/2.0/serving-endpoints/sim/ai-gateway', { inference_table_config: { enabled: true } });
  assert.equal(on.status, 200, on.text);
  try {
    for (let i = 0; i < 12; i++) assert.equal((await call('POST', '/serving-endpoints/sim/invocations', { inputs: [[1, 2, 3, 4]] })).status, 200);
    const r = await waitFor('the 12 rows written', async () => {
      const x = await simulate({ trace: { source: 'inference_table', window_ms: 600_000 }, replica: { service_time_ms: 5 } });
      return x.status === 200 && x.json.trace.requests === 12 ? x : undefined;
    });
    assert.equal(r.json.trace.source, 'inference_table');
    assert.equal(r.json.current.result.requests, 12);
    assert.equal(r.json.current.result.served, 12);
    assert.equal(r.json.replica_model.service_time_source, 'request');
  } finally {
    await call('PUT', '/api/2.0/serving-endpoints/sim/ai-gateway', { inference_table_config: { enabled: false } });
  }
});

test('400s name the trace line or the field', async () => {
  const bad = async (json: unknown, message: RegExp): Promise<void> => {
    const r = await simulate(json);
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error_code, 'INVALID_PARAMETER_VALUE');
    assert.match(r.json.message, message);
  };
  await bad({ trace: { source: 'file', format: 'csv', data: 'timestamp\n1733443200000\nlater\n' } }, /^Trace line 3: expected a timestamp/);
  await bad({ trace: { source: 'file', format: 'jsonl', data: '{"timestamp":1733443200000}\n{oops\n' } }, /^Trace line 2: expected a JSON object/);
  await bad({ trace: { source: 'inference_table' } }, /'trace.source'.*inference table enabled/);
  await bad({ trace: { source: 'bundled', name: 'bursty' }, served_entity_name: 'other' }, /'served_entity_name'/);
  await bad({ trace: { source: 'bundled', name: 'bursty' }, candidate: { autoscaling: { panic_threshold: 0.5 } } }, /'candidate.autoscaling.panic_threshold'/);
  await bad({ trace: { source: 'bundled', name: 'bursty' }, replica: { service_time_ms: 0 } }, /'replica.service_time_ms'/);
  const missing = await call('POST', '/api/2.0/serving-endpoints/none/simulate', { trace: { source: 'bundled', name: 'bursty' } });
  assert.equal(missing.status, 404, missing.text);
});

function ferry(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [FERRY_BIN, ...args], { env: { PATH: process.env.PATH ?? '', FERRY_URL: server.url, FERRY_TOKEN: ADMIN_TOKEN }, cwd: dir, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

test('ferry simulate: offline on a file and a pattern, and on the server', { timeout: 120_000 }, async () => {
  const file = path.join(dir, 'trace.csv');
  await fsp.writeFile(file, 'timestamp,duration_ms\n' + Array.from({ length: 600 }, (_, i) => `${1733443200000 + i * 100},50`).join('\n') + '\n');
  const offline = await ferry(['simulate', '--trace', file, '--candidate', '{"autoscaling":{"target_concurrency":1}}', '--cold-start-ms', '300', '--json']);
  assert.equal(offline.code, 0, offline.stderr);
  const a = JSON.parse(offline.stdout);
  assert.equal(a.current, null, 'offline: no current config');
  assert.equal(a.trace.requests, 600);
  assert.equal(a.candidate.config.autoscaling.target_concurrency, 1);
  assert.equal(a.candidate.result.p50_ms > 49 && a.candidate.result.p50_ms < 51, true, 'the durations of the file');

  const table = await ferry(['simulate', '--pattern', 'spike', '--rps', '2', '--peak-rps', '100', '--duration', '5m', '--at', '1m', '--burst', '1m',
    '--service-time-ms', '100', '--max-concurrency', '4', '--candidate', '{"max_provisioned_concurrency":64}', '--target-p99-ms', '1000']);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /^candidate +\d+/m);
  assert.match(table.stdout, /^recommended +\d+/m);
  assert.match(table.stdout, /^static \d+ \(peak\) +\d+/m);
  assert.match(table.stdout, /^knative defaults +\d+/m);

  const remote = await ferry(['simulate', 'sim', '--bundled', 'bursty', '--json']);
  assert.equal(remote.code, 0, remote.stderr);
  const b = JSON.parse(remote.stdout);
  assert.equal(b.endpoint, 'sim');
  assert.equal(b.current.config.workload_size, 'Medium');

  await fsp.writeFile(path.join(dir, 'bad.csv'), '1733443200000\n1733443200100\nlater\n');
  const badLine = await ferry(['simulate', '--trace', path.join(dir, 'bad.csv')]);
  assert.equal(badLine.code, 1);
  assert.match(badLine.stderr, /INVALID_PARAMETER_VALUE: Trace line 3: expected a timestamp/);
  const usage = await ferry(['simulate', '--source', 'series']);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /give the endpoint name/);
});
