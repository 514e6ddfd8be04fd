/**
 * Autoscaling with real replicas: scale to zero and back with no failed request and one cold
 * start, and a bounded load step that raises the replica count and lets it fall back.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { writeFixtures, writeMlp } from '../src/fixtures/index.js';
import type { FerryServer } from '../src/server/index.js';
import { request, startTestServer, tempDir, waitFor, type HttpResult } from './support/index.js';

let dir: string;
let server: FerryServer;

const call = (method: string, p: string, json?: unknown): Promise<HttpResult> =>
  request({ url: server.url, method, path: p, ...(json === undefined ? {} : { json }) });
const entityOf = async (name: string): Promise<any> => (await call('GET', `/api/2.0/serving-endpoints/${name}`)).json.config?.served_entities?.[0];

const ROW = { inputs: [Array.from({ length: 256 }, (_, i) => (i % 7) - 3)] };

/** Short windows so scaling happens within seconds. */
const FAST = { stable_window_ms: 3000, panic_window_ms: 1000, scale_down_delay_ms: 0, scale_to_zero_grace_ms: 2000 };

before(async () => {
  dir = await tempDir();
  const fx = await writeFixtures(path.join(dir, 'fixtures'));
  server = await startTestServer(path.join(dir, 'data'));
  await call('POST', '/api/2.0/mlflow/registered-models/create', { name: 'linear' });
  await call('POST', '/api/2.0/mlflow/model-versions/create', { name: 'linear', source: fx.linear });
  // A model slow enough (~ms per request) that 8 clients keep ~8 requests in flight.
  await writeMlp(path.join(dir, 'heavy.onnx'), [256, 2048, 2048, 256]);
  await call('POST', '/api/2.0/mlflow/registered-models/create', { name: 'heavy' });
  await call('POST', '/api/2.0/mlflow/model-versions/create', { name: 'heavy', source: path.join(dir, 'heavy.onnx') });
});

after(async () => {
  await server.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

test('scale to zero when idle; 50 concurrent requests at zero all succeed with one cold start', { timeout: 60_000 }, async () => {
  const r = await call('POST', '/api/2.0/serving-endpoints', {
    name: 'zero',
    config: { served_entities: [{ entity_name: 'linear', entity_version: '1', scale_to_zero_enabled: true, autoscaling: FAST }] },
  });
  assert.equal(r.status, 200, r.text);
  await waitFor('READY', async () => ((await call('GET', '/api/2.0/serving-endpoints/zero')).json.state.ready === 'READY' ? true : undefined));
  const idle = await waitFor('scaled to zero', async () => {
    const e = await entityOf('zero');
    return e.autoscaling.ready_replicas === 0 && e.autoscaling.starting_replicas === 0 ? e : undefined;
  }, 20_000);
  assert.equal(idle.autoscaling.desired_replicas, 0);
  assert.match(idle.autoscaling.last_decisions.at(-1).reason, /zero|idle|grace/i);

  const answers = await Promise.all(Array.from({ length: 50 }, () => call('POST', '/serving-endpoints/zero/invocations', { inputs: [[1, 2, 3, 4]] })));
  const failed = answers.filter((a) => a.status !== 200);
  assert.deepEqual(failed.map((a) => `${a.status} ${a.text}`), [], 'every request waits for the cold start and succeeds');
  for (const a of answers) assert.deepEqual(a.json, { predictions: [[5.625]] });
  const after = await entityOf('zero');
  assert.equal(after.autoscaling.cold_starts_ms.length, 1, 'one cold start served all 50');
  assert.ok(after.autoscaling.ready_replicas >= 1);
  await call('DELETE', '/api/2.0/serving-endpoints/zero');
});

test('a load step raises the replica count to the target and it returns to the minimum; no request fails', { timeout: 150_000 }, async () => {
  // target 0.5 in flight per replica, at most 2 concurrent → 1..4 replicas. 8 clients keep up to 8
  // in flight, and at least ~2 when this process (clients and gateway share its event loop) is short
  // of CPU: either way the policy asks for all 4.
  const r = await call('POST', '/api/2.0/serving-endpoints', {
    name: 'step',
    config: { served_entities: [{ entity_name: 'heavy', entity_version: '1', max_provisioned_concurrency: 2, autoscaling: { ...FAST, target_concurrency: 0.5 } }] },
  });
  assert.equal(r.status, 200, r.text);
  await waitFor('READY', async () => ((await call('GET', '/api/2.0/serving-endpoints/step')).json.state.ready === 'READY' ? true : undefined));
  assert.equal((await entityOf('step')).autoscaling.max_replicas, 4);

  let stop = false;
  let sent = 0;
  const failures: string[] = [];
  let peak = 0;
  // 8 closed-loop clients for a bounded time (≤ 60 s: replica starts are slow on a loaded machine).
  const deadline = Date.now() + 60_000;
  const clients = Array.from({ length: 8 }, async () => {
    while (!stop && Date.now() < deadline) {
      const a = await call('POST', '/serving-endpoints/step/invocations', ROW);
      sent++;
      if (a.status !== 200) failures.push(`${a.status} ${a.text}`);
    }
  });
  let reached: Awaited<ReturnType<typeof entityOf>>;
  let last: unknown;
  try {
    reached = await waitFor('replicas at the target', async () => {
      const e = await entityOf('step');
      peak = Math.max(peak, e.autoscaling.ready_replicas);
      last = e.autoscaling;
      return e.autoscaling.ready_replicas >= 3 ? e : undefined;
    }, 58_000).catch((err: unknown) => {
      throw new Error(`${String(err)}; last state: ${JSON.stringify(last)}`);
    });
  } finally {
    // The clients stop with the test, also when it fails.
    stop = true;
    await Promise.all(clients);
  }
  assert.ok(reached.autoscaling.desired_replicas >= 3 && reached.autoscaling.desired_replicas <= 4, JSON.stringify(reached.autoscaling));
  const back = await waitFor('back to the minimum', async () => {
    const e = await entityOf('step');
    return e.autoscaling.ready_replicas === 1 && e.autoscaling.desired_replicas === 1 ? e : undefined;
  }, 20_000);
  assert.deepEqual(failures, [], `${failures.length} of ${sent} requests failed`);
  assert.ok(sent > 50, `only ${sent} requests`);
  assert.ok(back.autoscaling.last_decisions.length >= 2);
  await call('DELETE', '/api/2.0/serving-endpoints/step');
});
