/**
 * The console's autoscaling editor logic (ui/src/lib/simulate.ts): form ↔ scaling fields, the
 * simulate body with the API's ranges, the config Save sends (the API compiles it), the table and
 * chart columns of an answer (a real one, from the simulator itself).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { scalingConfigOf } from '../src/control/index.js';
import { localTrace, parseSimulateRequest, runSimulation } from '../src/simulator/index.js';
import { checkForm, comparisonRows, configWithScaling, formOf, SIMULATION_CHARTS, simulationChart, withSetting } from '../ui/src/lib/simulate.js';
import type { EndpointConfigView, ServedEntityView } from '../ui/src/lib/types.js';

const entity = (over: Partial<ServedEntityView> = {}): ServedEntityView => ({
  name: 'iris-1', entity_name: 'iris', entity_version: '1', workload_size: 'Small', workload_type: 'CPU', scale_to_zero_enabled: false,
  batching: { enabled: true, max_batch_size: 64, max_queue_delay_us: 0, preferred_batch_sizes: [] },
  autoscaling: {
    target_concurrency: 4, stable_window_ms: 30_000, panic_window_ms: 3000, panic_threshold: 2, scale_down_delay_ms: 10_000, scale_to_zero_grace_ms: 30_000, max_scale_up_rate: 10,
    min_replicas: 1, max_replicas: 1, desired_replicas: 1, ready_replicas: 1, starting_replicas: 0, in_flight_requests: 0, queued_requests: 0, cold_starts_ms: [], last_decisions: [],
  },
  state: { deployment: 'DEPLOYMENT_READY', deployment_state_message: '', replicas: { ready: 1, total: 1, desired: 1 } },
  ...over,
});

test('formOf fills the form with the settings in effect; checkForm builds the candidate and the body', () => {
  const f = formOf(entity({ max_provisioned_concurrency: 16 }));
  assert.deepEqual(f, {
    entity: 'iris-1', source: 'series', targetConcurrency: '4', scaleToZero: false, minProvisionedConcurrency: '', maxProvisionedConcurrency: '16',
    stableWindowS: '30', scaleDownDelayS: '10', scaleToZeroGraceS: '30', targetP99Ms: '', pricePerReplicaHour: '',
  });
  const c = checkForm({ ...f, targetConcurrency: '2', scaleToZero: true, source: 'bursty', targetP99Ms: '250', pricePerReplicaHour: '0.25' });
  assert.deepEqual(c.errors, []);
  assert.deepEqual(c.fields, {
    scale_to_zero_enabled: true, max_provisioned_concurrency: 16,
    autoscaling: { target_concurrency: 2, stable_window_ms: 30_000, scale_down_delay_ms: 10_000, scale_to_zero_grace_ms: 30_000 },
  });
  assert.deepEqual(c.body, { served_entity_name: 'iris-1', candidate: c.fields, trace: { source: 'bundled', name: 'bursty' }, price_per_replica_hour: 0.25, recommend: { target_p99_ms: 250 } });
  // The API takes what the form sends.
  assert.doesNotThrow(() => parseSimulateRequest(c.body));
  assert.doesNotThrow(() => scalingConfigOf(c.fields, 'candidate'));
});

test('checkForm names each field out of the API\'s range', () => {
  const f = formOf(entity());
  assert.deepEqual(checkForm({ ...f, targetConcurrency: '0' }).errors, ['target concurrency: expected a number from 0.1 to 1000, got 0']);
  assert.deepEqual(checkForm({ ...f, stableWindowS: '' }).errors, ['stable window (s): expected a number from 1 to 3600, got nothing']);
  assert.deepEqual(checkForm({ ...f, maxProvisionedConcurrency: '2.5' }).errors, ['max provisioned concurrency: expected an integer from 1 to 100000, got 2.5']);
  assert.deepEqual(checkForm({ ...f, minProvisionedConcurrency: '8', maxProvisionedConcurrency: '4' }).errors, ['min provisioned concurrency: expected at most max provisioned concurrency (4), got 8']);
  assert.equal(checkForm({ ...f, targetP99Ms: 'fast' }).body, undefined);
  assert.deepEqual(checkForm({ ...f, pricePerReplicaHour: '-1' }).errors, ['price per replica-hour: expected a number from 0 to 1000000, got -1']);
});

test('configWithScaling changes only the chosen entity\'s scaling fields', () => {
  const config: EndpointConfigView = {
    config_version: 3,
    served_entities: [entity({ min_provisioned_concurrency: 4, max_provisioned_concurrency: 8, workload_size: 'Medium' }), entity({ name: 'iris-2', entity_version: '2' })],
    traffic_config: { routes: [{ served_entity_name: 'iris-1', served_model_name: 'iris-1', traffic_percentage: 90 }, { served_entity_name: 'iris-2', served_model_name: 'iris-2', traffic_percentage: 10 }] },
  };
  const fields = checkForm({ ...formOf(config.served_entities[0] as ServedEntityView), targetConcurrency: '1', minProvisionedConcurrency: '', maxProvisionedConcurrency: '' }).fields;
  assert.ok(fields);
  const out = configWithScaling(config, 'iris-1', fields);
  const [a, b] = out.served_entities;
  assert.equal(a?.min_provisioned_concurrency, undefined, 'emptied: the workload size\'s bound');
  assert.equal(a?.max_provisioned_concurrency, undefined);
  assert.equal(a?.workload_size, 'Medium');
  assert.equal(a?.autoscaling?.target_concurrency, 1);
  assert.equal(a?.autoscaling?.panic_threshold, 2, 'tunables the form does not show stay');
  assert.equal(b?.autoscaling?.target_concurrency, 4, 'the other entity is untouched');
  assert.deepEqual(out.traffic_config, config.traffic_config);
});

test('comparison rows and chart columns of a real answer', () => {
  const req = parseSimulateRequest({
    trace: { source: 'pattern', pattern: 'spike', duration_ms: 120_000, rps: 2, peak_rps: 100, at_ms: 30_000, burst_ms: 30_000 },
    candidate: { max_provisioned_concurrency: 64, autoscaling: { target_concurrency: 1 } },
    replica: { service_time_ms: 100, max_concurrency_per_replica: 4, cold_start_ms: 500 },
    recommend: { target_p99_ms: 1000 },
  });
  const trace = localTrace(req.trace);
  assert.ok(trace);
  const a = runSimulation(req, {
    trace, current: { workload_size: 'Small', max_provisioned_concurrency: 64 }, measuredServiceTime: undefined, measuredColdStartsMs: [],
    gateway: { maxConcurrencyPerReplica: 64, maxQueued: 1000, queueTimeoutMs: 10_000 },
  });
  assert.deepEqual(comparisonRows(a).map((r) => r.label.replace(/\d+/, 'N')), ['current', 'candidate', 'recommended', 'static N (peak)', 'Knative defaults']);
  const { labels, data } = simulationChart(a, SIMULATION_CHARTS[0], 1_000_000);
  assert.deepEqual(labels, ['current', 'candidate']);
  assert.equal(data.length, 3);
  assert.equal(data[0][0], 1000 - 120, 'x: the trace ends at endMs');
  assert.equal(data[0].length, 120);
  assert.ok(Math.max(...(data[2] as number[])) > Math.max(...(data[1] as number[])), 'target 1 runs more replicas than target 4');
  const rec = a.recommendation?.setting;
  assert.ok(rec);
  const f = withSetting(formOf(entity()), rec);
  assert.equal(f.targetConcurrency, String(rec.target_concurrency));
  assert.equal(f.stableWindowS, String(rec.stable_window_ms / 1000));
});
