/**
 * Safe updates end to end: validation of new replicas before traffic moves, canary steps judged
 * from gateway stats with automatic rollback, and cancel. Real server, real replica processes.
 * The pure pieces (route blending, step verdicts, the stats ring) are checked in-process first.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { blendRoutes, judgeCanaryStep, LATENCY_FLOOR_MS } from '../src/control/rollout.js';
import { writeFixtures, type FixturePaths } from '../src/fixtures/index.js';
import { GatewayStats, statsKey } from '../src/gateway/index.js';
import type { FerryServer } from '../src/server/index.js';
import {
  ferryChildren as ferryChildrenOf, registerVersion, replicaPids as replicaPidsOf, request, startTestServer, tempDir, waitFor,
  waitSettled as waitSettledAt, writeEvenRowsModel, type HttpResult,
} from './support/index.js';

const SPEC = { canarySteps: [{ trafficPercentage: 10, durationMs: 0 }], maxErrorRate: 0.05, maxP99LatencyRatio: 2 };
const summary = (requests: number, errors: number, p99LatencyMs?: number) => ({ requests, errors, errorRate: requests ? errors / requests : 0, p99LatencyMs });

describe('rollout pieces (in-process)', () => {
  test('blendRoutes: the documented examples', () => {
    assert.deepEqual(blendRoutes([{ target: 'A', trafficPercentage: 100 }], [{ target: 'B', trafficPercentage: 100 }], 10),
      [{ target: 'A', trafficPercentage: 90 }, { target: 'B', trafficPercentage: 10 }]);
    const kept = blendRoutes([{ target: 'A', trafficPercentage: 50 }, { target: 'K', trafficPercentage: 50 }], [{ target: 'B', trafficPercentage: 50 }, { target: 'K', trafficPercentage: 50 }], 20);
    assert.deepEqual(kept, [{ target: 'A', trafficPercentage: 40 }, { target: 'K', trafficPercentage: 50 }, { target: 'B', trafficPercentage: 10 }]);
    assert.equal(kept.reduce((a, w) => a + w.trafficPercentage, 0), 100);
  });

  test('judgeCanaryStep: error rate, latency ratio with its floor, no data → no decision', () => {
    assert.match(judgeCanaryStep(SPEC, summary(10, 4, 1), summary(10, 0, 1)) ?? '', /^error rate 0\.40 > 0\.05 \(4 of 10/);
    assert.equal(judgeCanaryStep(SPEC, summary(0, 0), summary(10, 0, 1)), undefined);
    assert.equal(judgeCanaryStep(SPEC, summary(100, 5, 1), summary(10, 0, 1)), undefined, '0.05 is not > 0.05');
    assert.match(judgeCanaryStep(SPEC, summary(10, 0, 45), summary(10, 0, 20)) ?? '', /^p99 latency 45 ms > 2 × 20 ms/);
    assert.equal(judgeCanaryStep(SPEC, summary(10, 0, 12), summary(10, 0, 1)), undefined, `the old p99 counts as ${LATENCY_FLOOR_MS} ms`);
    assert.match(judgeCanaryStep(SPEC, summary(10, 0, 21), summary(10, 0, 1)) ?? '', /> 2 × 10 ms/);
  });

  test('GatewayStats: window, pooling, p99, and bounds', () => {
    let now = 1000;
    const stats = new GatewayStats({ maxSamples: 8, maxKeys: 2, now: () => now });
    for (let i = 1; i <= 10; i++) stats.record('a', i <= 4 ? 500 : 200, i);
    assert.deepEqual(stats.summary(['a'], 0), { requests: 8, errors: 2, errorRate: 0.25, p99LatencyMs: 10 }, 'the ring keeps the newest 8');
    now = 2000;
    stats.record('a', 503, 50);
    stats.record('b', 200, 5);
    assert.deepEqual(stats.summary(['a', 'b'], 2000), { requests: 2, errors: 1, errorRate: 0.5, p99LatencyMs: 50 });
    assert.deepEqual(stats.summary(['nope'], 0), { requests: 0, errors: 0, errorRate: 0, p99LatencyMs: undefined });
    stats.record('c', 200, 1); // a third key drops the first one created
    assert.equal(stats.summary(['a'], 0).requests, 0);
    assert.equal(stats.summary(['c'], 0).requests, 1);
    assert.equal(statsKey('lin', 'linear-2', '2'), 'lin/linear-2/2');
  });
});

let dir: string;
let dataDir: string;
let fx: FixturePaths;
let server: FerryServer;

const call = (method: string, p: string, json?: unknown): Promise<HttpResult> => request({ url: server.url, method, path: p, ...(json === undefined ? {} : { json }) });
const endpoint = async (name: string): Promise<any> => (await call('GET', `/api/2.0/serving-endpoints/${name}`)).json;

const register = (name: string, source: string): Promise<string> => registerVersion(server.url, name, source);
const waitSettled = (name: string, timeoutMs?: number): Promise<any> => waitSettledAt(server.url, name, timeoutMs);
const replicaPids = (): Promise<number[]> => replicaPidsOf(dataDir);
const ferryChildren = (): Promise<number[]> => ferryChildrenOf(dataDir);

/** Waits until the in-progress message matches `re` (e.g. a canary step holding). */
async function waitProgress(name: string, re: RegExp): Promise<any> {
  return waitFor(`endpoint ${name} at ${re}`, async () => {
    const e = await endpoint(name);
    assert.equal(e.state.config_update, 'IN_PROGRESS', JSON.stringify(e.state));
    return re.test(e.state.config_update_message ?? '') ? e : undefined;
  }, 30_000);
}

async function waitReplicas(n: number): Promise<void> {
  await waitFor(`${n} replica(s) running`, async () => ((await replicaPids()).length === n ? true : undefined));
}

/** `workers` clients querying `name` in a loop until stopped; collects who answered and what failed. */
function lightLoad(name: string, workers = 2): { stop: () => Promise<{ sent: number; seen: Set<string>; failures: string[] }> } {
  let stopped = false;
  const seen = new Set<string>();
  const failures: string[] = [];
  let sent = 0;
  const loops = Promise.all(Array.from({ length: workers }, async () => {
    while (!stopped) {
      const r = await call('POST', `/serving-endpoints/${name}/invocations`, { inputs: [[1, 2, 3, 4]] });
      sent++;
      if (r.status !== 200) failures.push(`${r.status} ${String(r.headers['served-model-name'])} ${r.text}`);
      else seen.add(String(r.headers['served-model-name']));
      await new Promise((res) => setTimeout(res, 5));
    }
  }));
  return { stop: async () => { stopped = true; await loops; return { sent, seen, failures }; } };
}

async function servedBy(name: string, n = 20): Promise<Set<string>> {
  const who = new Set<string>();
  for (let i = 0; i < n; i++) {
    const r = await call('POST', `/serving-endpoints/${name}/invocations`, { inputs: [[1, 2, 3, 4]] });
    assert.equal(r.status, 200, r.text);
    who.add(String(r.headers['served-model-name']));
  }
  return who;
}

/** The even-rows model with batching off, so a one-row request is never merged into two rows. */
const EVEN = { entity_name: 'even', entity_version: '1', batching: { enabled: false } };

before(async () => {
  dir = await tempDir();
  dataDir = path.join(dir, 'data');
  fx = await writeFixtures(path.join(dir, 'fixtures'));
  server = await startTestServer(dataDir, {});
  await register('linear', fx.linear);
  await register('linear', fx.linear);
  await register('mlflow-linear', fx.mlflowLinear);
  await writeEvenRowsModel(path.join(dir, 'even'));
  await register('even', path.join(dir, 'even'));
});

after(async () => {
  await server.close();
  assert.deepEqual(await ferryChildren(), [], 'no replica or pool process outlives the server');
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('validation before traffic', () => {
  test('a refused validation_request or input example: UPDATE_FAILED with the replica\'s answer, the old config untouched', async () => {
    await call('POST', '/api/2.0/serving-endpoints', { name: 'val', config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] } });
    const first = await waitSettled('val');
    assert.equal(first.state.ready, 'READY');
    assert.match(first.config.served_entities[0].state.deployment_state_message, /Validation skipped: the model version has no input example/);

    // 1. A validation_request the model refuses (3 columns for a [-1, 4] input).
    const load = lightLoad('val');
    const bad = await call('PUT', '/api/2.0/serving-endpoints/val/config', {
      served_entities: [{ entity_name: 'linear', entity_version: '2', validation_request: { inputs: [[1, 2, 3]] } }],
    });
    assert.equal(bad.status, 200, bad.text);
    assert.deepEqual(bad.json.pending_config.served_entities[0].validation_request, { inputs: [[1, 2, 3]] });
    let e = await waitSettled('val');
    const during = await load.stop();
    assert.equal(e.state.config_update, 'UPDATE_FAILED');
    assert.match(e.state.config_update_message, /served entity 'linear-2' \(linear version 2\) failed validation: .*validation_request with 400: .*INVALID_PARAMETER_VALUE/);
    assert.equal(e.pending_config.served_entities[0].state.deployment, 'DEPLOYMENT_FAILED');
    assert.match(e.pending_config.served_entities[0].state.deployment_state_message, /answered the validation_request with 400/);
    assert.equal(e.config.config_version, 1);
    assert.deepEqual(during.failures, []);
    assert.deepEqual([...during.seen], ['linear-1'], 'no request reached the new version');
    await waitReplicas(1);

    // 2. A version whose input example the model fails on at run time.
    await call('PUT', '/api/2.0/serving-endpoints/val/config', { served_entities: [EVEN] });
    e = await waitSettled('val');
    assert.equal(e.state.config_update, 'UPDATE_FAILED');
    assert.match(e.state.config_update_message, /served entity 'even-1' \(even version 1\) failed validation: .*the input example with 5\d\d: /);
    assert.match(e.pending_config.served_entities[0].state.deployment_state_message, /Validation failed: .*input example/);
    assert.deepEqual([...await servedBy('val')], ['linear-1']);
    await waitReplicas(1);

    // 3. A version with a valid input example: scored, then the swap.
    await call('PUT', '/api/2.0/serving-endpoints/val/config', { served_entities: [{ entity_name: 'mlflow-linear', entity_version: '1' }] });
    e = await waitSettled('val');
    assert.equal(e.state.config_update, 'NOT_UPDATING', e.state.config_update_message);
    assert.match(e.config.served_entities[0].state.deployment_state_message, /^Validated: the input example was scored by replica val\.mlflow-linear-1\.\w+ \(200 in [\d.]+ ms\)\.$/);
    assert.deepEqual([...await servedBy('val')], ['mlflow-linear-1']);
    await waitReplicas(1);
    await call('DELETE', '/api/2.0/serving-endpoints/val');
  });

  test('rollout config is validated and shown back', async () => {
    const bad: Array<[unknown, RegExp]> = [
      [{ canary_steps: [{ traffic_percentage: 50, duration_ms: 10 }, { traffic_percentage: 10, duration_ms: 10 }] }, /'config\.rollout\.canary_steps\[1\]\.traffic_percentage'.*more than the previous step's 50/],
      [{ canary_steps: [] }, /canary_steps/],
      [{ canary_steps: [{ traffic_percentage: 0, duration_ms: 10 }] }, /traffic_percentage/],
      [{ canary_steps: [{ traffic_percentage: 10, duration_ms: 10 }], max_error_rate: 2 }, /max_error_rate/],
      [{ canary_steps: [{ traffic_percentage: 10, duration_ms: 10 }], bogus: 1 }, /bogus/],
    ];
    for (const [rollout, re] of bad) {
      const r = await call('POST', '/api/2.0/serving-endpoints', { name: 'cfg', config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }], rollout } });
      assert.equal(r.status, 400, r.text);
      assert.match(r.json.message, re);
    }
    const ok = await call('POST', '/api/2.0/serving-endpoints', {
      name: 'cfg', config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }], rollout: { canary_steps: [{ traffic_percentage: 25, duration_ms: 100 }] } },
    });
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.json.pending_config.rollout, { canary_steps: [{ traffic_percentage: 25, duration_ms: 100 }], max_error_rate: 0.05, max_p99_latency_ratio: 2 });
    // A create has no old config to compare with: no canary, straight to READY.
    assert.equal((await waitSettled('cfg')).state.config_update, 'NOT_UPDATING');
    await call('DELETE', '/api/2.0/serving-endpoints/cfg');
  });
});

describe('canary', () => {
  test('a failing candidate is rolled back automatically with the reason', async () => {
    await call('POST', '/api/2.0/serving-endpoints', { name: 'can', config: { served_entities: [{ entity_name: 'linear', entity_version: '1' }] } });
    await waitSettled('can');
    const load = lightLoad('can');
    // The candidate passes validation (two rows) but fails one-row requests with a 500.
    const r = await call('PUT', '/api/2.0/serving-endpoints/can/config', {
      served_entities: [{ ...EVEN, validation_request: { inputs: [[1, 2, 3, 4], [1, 2, 3, 4]] } }],
      rollout: { canary_steps: [{ traffic_percentage: 30, duration_ms: 1500 }, { traffic_percentage: 100, duration_ms: 1500 }] },
    });
    assert.equal(r.status, 200, r.text);
    await waitProgress('can', /^canary step 1\/2: 30% for 1\.5 s$/);
    // What the gateway records for each answer (fed here too, so the test holds whether or not
    // the gateway's recording is wired): the candidate's one-row answers are 500s.
    const stats = server.controller.stats;
    for (let i = 0; i < 10; i++) {
      stats.record(statsKey('can', 'even-1', '1'), i < 6 ? 500 : 200, 2);
      stats.record(statsKey('can', 'linear-1', '1'), 200, 1);
    }
    const e = await waitSettled('can');
    const during = await load.stop();
    assert.equal(e.state.config_update, 'UPDATE_FAILED');
    assert.match(e.state.config_update_message, /^canary step 1 \(30%\): error rate \d\.\d\d > 0\.05 \(\d+ of \d+ requests answered 5xx\); traffic is back on config version 1$/);
    assert.equal(e.pending_config.served_entities[0].state.deployment, 'DEPLOYMENT_ABORTED');
    assert.match(e.pending_config.served_entities[0].state.deployment_state_message, /^Rolled back: canary step 1/);
    assert.ok(during.seen.has('linear-1'));
    // Only the candidate ever failed (its real one-row answers), and now only the old version answers.
    for (const f of during.failures) assert.match(f, /^500 even-1 /);
    assert.deepEqual([...await servedBy('can')], ['linear-1']);
    await waitReplicas(1);
  });

  test('a healthy candidate: steps, then the final config, no failed request under load', async () => {
    const load = lightLoad('can');
    const r = await call('PUT', '/api/2.0/serving-endpoints/can/config', {
      served_entities: [{ entity_name: 'linear', entity_version: '2' }],
      // Judged on errors only: a loaded 2-core machine's p99 can jump for either version (GC, other
      // tests), so the latency ratio is lax here; the rollback tests above judge on purpose.
      rollout: { canary_steps: [{ traffic_percentage: 20, duration_ms: 1000 }, { traffic_percentage: 60, duration_ms: 1000 }], max_error_rate: 0.01, max_p99_latency_ratio: 1000 },
    });
    assert.equal(r.status, 200, r.text);
    const step1 = await waitProgress('can', /^canary step 1\/2: 20% for 1 s$/);
    assert.equal(step1.config.config_version, 1, 'the old config is still the config during a canary');
    assert.equal(step1.pending_config.served_entities[0].state.deployment, 'DEPLOYMENT_READY');
    await waitProgress('can', /^canary step 2\/2: 60% for 1 s$/);
    const e = await waitSettled('can');
    await new Promise((res) => setTimeout(res, 200));
    const during = await load.stop();
    assert.equal(e.state.config_update, 'NOT_UPDATING', e.state.config_update_message);
    assert.equal(e.config.served_entities[0].name, 'linear-2');
    assert.deepEqual(during.failures, [], `${during.failures.length} of ${during.sent} requests failed`);
    assert.deepEqual([...during.seen].sort(), ['linear-1', 'linear-2']);
    assert.deepEqual([...await servedBy('can')], ['linear-2']);
    await waitReplicas(1);
  });

  test('cancel: during a slow canary, during the start, and 409 with nothing in progress', async () => {
    const idle = await call('POST', '/api/2.0/serving-endpoints/can/config/cancel');
    assert.equal(idle.status, 409, idle.text);
    assert.equal(idle.json.error_code, 'RESOURCE_CONFLICT');
    assert.equal((await call('POST', '/api/2.0/serving-endpoints/nope/config/cancel')).status, 404);

    const load = lightLoad('can');
    await call('PUT', '/api/2.0/serving-endpoints/can/config', {
      served_entities: [{ entity_name: 'linear', entity_version: '1' }],
      rollout: { canary_steps: [{ traffic_percentage: 50, duration_ms: 600_000 }], max_p99_latency_ratio: 1000 },
    });
    await waitProgress('can', /^canary step 1\/1: 50% for 600 s$/);
    await waitFor('both versions answering', async () => ((await servedBy('can', 10)).size === 2 ? true : undefined));
    const canceled = await call('POST', '/api/2.0/serving-endpoints/can/config/cancel');
    assert.equal(canceled.status, 200, canceled.text);
    assert.equal(canceled.json.state.config_update, 'UPDATE_CANCELED');
    assert.match(canceled.json.state.config_update_message, /^Update to config version 4 canceled during "canary step 1\/1: 50% for 600 s"\.$/);
    assert.equal(canceled.json.config.config_version, 3);
    assert.equal(canceled.json.pending_config.served_entities[0].state.deployment, 'DEPLOYMENT_ABORTED');
    assert.deepEqual([...await servedBy('can')], ['linear-2']);
    const during = await load.stop();
    assert.deepEqual(during.failures, [], `${during.failures.length} of ${during.sent} requests failed`);
    await waitReplicas(1);
    assert.equal((await call('POST', '/api/2.0/serving-endpoints/can/config/cancel')).status, 409);

    // Canceled while the new replica is still starting: it is stopped too.
    await call('PUT', '/api/2.0/serving-endpoints/can/config', { served_entities: [{ entity_name: 'linear', entity_version: '1' }] });
    const early = await call('POST', '/api/2.0/serving-endpoints/can/config/cancel');
    assert.equal(early.status, 200, early.text);
    assert.equal(early.json.state.config_update, 'UPDATE_CANCELED');
    assert.deepEqual([...await servedBy('can')], ['linear-2']);
    await waitReplicas(1);

    // A later update goes through.
    await call('PUT', '/api/2.0/serving-endpoints/can/config', { served_entities: [{ entity_name: 'linear', entity_version: '1' }] });
    assert.equal((await waitSettled('can')).state.config_update, 'NOT_UPDATING');
    await call('DELETE', '/api/2.0/serving-endpoints/can');
    await waitReplicas(0);
  });
});
