/**
 * The web console's client-side logic (ui/src/lib, compiled by the root tsconfig): traffic split
 * validation as the API does it, configs it writes, error display, formatting, series → chart
 * columns, routes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { exampleRequest } from '../src/client/index.js';
import { configWithEntity, configWithRoutes, serveRequest, toName, validateTraffic } from '../ui/src/lib/config.js';
import { errorFromResponse, isMissingRoute } from '../ui/src/lib/errors.js';
import { buildState, endpointStatus, formatBytes, formatMs, formatTime, prettyJson } from '../ui/src/lib/format.js';
import { href, parseRoute } from '../ui/src/lib/route.js';
import { CHARTS, chartData, hasTraffic, latest } from '../ui/src/lib/series.js';
import type { Endpoint, EndpointConfigView, SeriesPoint, ServedEntityView } from '../ui/src/lib/types.js';

test('validateTraffic accepts whole percentages adding up to 100, as the API does', () => {
  assert.deepEqual(validateTraffic([{ name: 'a', value: '90' }, { name: 'b', value: ' 10 ' }]), {
    routes: [{ served_entity_name: 'a', traffic_percentage: 90 }, { served_entity_name: 'b', traffic_percentage: 10 }], errors: [],
  });
  assert.deepEqual(validateTraffic([{ name: 'a', value: '100' }, { name: 'b', value: '0' }]).errors, []);
});

test('validateTraffic names the field and value of each mistake', () => {
  const sum = validateTraffic([{ name: 'a', value: '90' }, { name: 'b', value: '5' }]);
  assert.equal(sum.routes, undefined);
  assert.deepEqual(sum.errors, ["Invalid value [90, 5] for 'traffic_config.routes': expected traffic percentages that add up to 100 (they add up to 95)."]);
  for (const bad of ['', '1.5', '-1', '101', 'ten', '1e2']) {
    const r = validateTraffic([{ name: 'a', value: bad }, { name: 'b', value: '0' }]);
    assert.equal(r.errors.length, 1, `value ${JSON.stringify(bad)}`);
    assert.match(r.errors[0] ?? '', /traffic_config\.routes\[0\]\.traffic_percentage' \(a\): expected a whole number from 0 to 100/);
  }
  assert.match(validateTraffic([{ name: 'a', value: '50' }, { name: 'a', value: '50' }]).errors[0] ?? '', /one route only/);
});

const entity = (name: string, version: string, extra: Partial<ServedEntityView> = {}): ServedEntityView => ({
  name, entity_name: 'iris', entity_version: version, entity_alias: 'champion', workload_size: 'Small', workload_type: 'CPU', scale_to_zero_enabled: true,
  batching: { enabled: true, max_batch_size: 32, max_queue_delay_us: 0, preferred_batch_sizes: [] },
  autoscaling: {
    target_concurrency: 2, stable_window_ms: 60_000, panic_window_ms: 6000, panic_threshold: 2, scale_down_delay_ms: 0, scale_to_zero_grace_ms: 45_000, max_scale_up_rate: 10,
    min_replicas: 0, max_replicas: 1, desired_replicas: 1, ready_replicas: 1, starting_replicas: 0, in_flight_requests: 0, queued_requests: 0, cold_starts_ms: [], last_decisions: [] },
  state: { deployment: 'DEPLOYMENT_READY', deployment_state_message: '', replicas: { ready: 1, total: 1, desired: 1 } },
  ...extra,
});
const config: EndpointConfigView = {
  config_version: 3,
  served_entities: [entity('iris-1', '1')],
  traffic_config: { routes: [{ served_entity_name: 'iris-1', served_model_name: 'iris-1', traffic_percentage: 100 }], shadow_routes: [{ served_entity_name: 'iris-1', mirror_percentage: 5 }] },
  request_timeout_ms: 5000,
};

test('configWithRoutes keeps every served entity as configured (resolved version, workload, autoscaling tunables, batching) and the rest of the config', () => {
  const c = configWithRoutes(config, [{ served_entity_name: 'iris-1', traffic_percentage: 100 }]);
  assert.deepEqual(c, {
    served_entities: [{
      name: 'iris-1', entity_name: 'iris', entity_version: '1', workload_size: 'Small', workload_type: 'CPU', scale_to_zero_enabled: true,
      autoscaling: { target_concurrency: 2, stable_window_ms: 60_000, panic_window_ms: 6000, panic_threshold: 2, scale_down_delay_ms: 0, scale_to_zero_grace_ms: 45_000, max_scale_up_rate: 10 },
      batching: { enabled: true, max_batch_size: 32, max_queue_delay_us: 0, preferred_batch_sizes: [] },
    }],
    traffic_config: { routes: [{ served_entity_name: 'iris-1', traffic_percentage: 100 }], shadow_routes: [{ served_entity_name: 'iris-1', mirror_percentage: 5 }] },
    request_timeout_ms: 5000,
  });
});

test('configWithRoutes keeps an entity that follows its alias following it (the alias, not the version)', () => {
  const following: EndpointConfigView = { ...config, served_entities: [entity('iris-1', '1', { follow_alias: true })] };
  const [e] = configWithRoutes(following, [{ served_entity_name: 'iris-1', traffic_percentage: 100 }]).served_entities;
  assert.deepEqual([e?.entity_version, e?.follow_alias], ['champion', true]);
});

test('configWithEntity adds a version at 0% traffic under the name the server would give it', () => {
  const c = configWithEntity(config, 'iris', '2');
  assert.deepEqual(c.served_entities.map((e) => [e.name, e.entity_version]), [['iris-1', '1'], ['iris-2', '2']]);
  assert.deepEqual(c.traffic_config?.routes, [{ served_entity_name: 'iris-1', traffic_percentage: 100 }, { served_entity_name: 'iris-2', traffic_percentage: 0 }]);
  assert.throws(() => configWithEntity(config, 'iris', '1'), /already serves 'iris-1'/);
});

test('serveRequest names the endpoint after the model, then <model>-<version>, then a counter', () => {
  assert.deepEqual(serveRequest('iris', '3', new Set()), { name: 'iris', config: { served_entities: [{ entity_name: 'iris', entity_version: '3' }] } });
  assert.equal(serveRequest('iris', '3', new Set(['iris'])).name, 'iris-3');
  assert.equal(serveRequest('iris', '3', new Set(['iris', 'iris-3'])).name, 'iris-3-2');
  assert.equal(serveRequest('my.model v2', '1', new Set()).name, 'my-model-v2');
  assert.equal(toName('..x'), 'x');
  assert.equal(toName('a'.repeat(80)).length, 63);
});

test('errorFromResponse shows the API message, and never an unknown body', () => {
  assert.deepEqual(errorFromResponse(400, '{"error_code":"INVALID_PARAMETER_VALUE","message":"Invalid value 0 for \'x\'."}'),
    { status: 400, code: 'INVALID_PARAMETER_VALUE', message: "Invalid value 0 for 'x'." });
  const html = errorFromResponse(502, '<html>Error: at Object.<anonymous> (/srv/app.js:1:1)</html>');
  assert.deepEqual(html, { status: 502, code: 'HTTP_502', message: 'The server answered 502 Bad Gateway without an error message.' });
  assert.equal(errorFromResponse(500, '{"message": 1}').code, 'HTTP_500');
  assert.equal(isMissingRoute(errorFromResponse(404, '{"error_code":"ENDPOINT_NOT_FOUND","message":"No API route"}')), true);
  assert.equal(isMissingRoute(errorFromResponse(404, '{"error_code":"RESOURCE_DOES_NOT_EXIST","message":"x"}')), false);
});

test('formatting', () => {
  assert.equal(formatMs(0.423), '0.42 ms');
  assert.equal(formatMs(12.3), '12 ms');
  assert.equal(formatMs(1530), '1.53 s');
  assert.equal(formatMs(null), '–');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatBytes(12), '12 B');
  assert.equal(formatTime(Date.UTC(2025, 10, 26, 7, 36, 5), 0), '2025-11-26 07:36:05');
  assert.equal(formatTime(Date.UTC(2025, 10, 26, 7, 36, 5), -60), '2025-11-26 08:36:05');
  assert.equal(prettyJson('{"a":1}'), '{\n  "a": 1\n}');
  assert.equal(prettyJson('not json'), 'not json');
  assert.equal(prettyJson({ inputs: [[0, 0], [1, 2]] }), '{\n  "inputs": [\n    [0, 0],\n    [1, 2]\n  ]\n}', 'arrays of plain values on one line');
  assert.equal(prettyJson({ s: ['a, b', 'c'] }), '{\n  "s": ["a, b", "c"]\n}');
  assert.equal(prettyJson({ s: ['x]'] }), '{\n  "s": [\n    "x]"\n  ]\n}', 'brackets inside strings leave the array as printed');
});

test('endpointStatus: updating, failed, ready, not ready', () => {
  const e = (state: Endpoint['state'], deployment: ServedEntityView['state']['deployment'] = 'DEPLOYMENT_READY'): Pick<Endpoint, 'state' | 'config'> => ({
    state, config: { ...config, served_entities: [entity('iris-1', '1', { state: { deployment, deployment_state_message: '', replicas: { ready: 0, total: 0, desired: 1 } } })] },
  });
  assert.equal(endpointStatus(e({ ready: 'READY', config_update: 'NOT_UPDATING' })), 'ready');
  assert.equal(endpointStatus(e({ ready: 'READY', config_update: 'IN_PROGRESS' })), 'updating');
  assert.equal(endpointStatus(e({ ready: 'READY', config_update: 'UPDATE_FAILED' })), 'failed');
  assert.equal(endpointStatus(e({ ready: 'NOT_READY', config_update: 'NOT_UPDATING' }, 'DEPLOYMENT_FAILED')), 'failed');
  assert.equal(endpointStatus(e({ ready: 'NOT_READY', config_update: 'NOT_UPDATING' }, 'DEPLOYMENT_RECOVERING')), 'updating');
  assert.equal(endpointStatus(e({ ready: 'NOT_READY', config_update: 'NOT_UPDATING' }, 'DEPLOYMENT_READY')), 'not ready');
});

test('chartData: time-ordered columns in seconds, gaps for missing values; latest skips gaps', () => {
  const p = (t: number, qps: number, p50: number | null): SeriesPoint => ({
    timestamp_ms: t, qps, p50_ms: p50, p99_ms: p50 === null ? null : p50 * 2, error_rate: 0.25, replicas_ready: 1, replicas_desired: 2, in_flight: 3, queued: 0,
  });
  const points = [p(2000, 5, null), p(1000, 3, 4)];
  const [qps, latency, errors] = CHARTS;
  assert.deepEqual(chartData(points, qps!), [[1, 2], [3, 5]]);
  const lat = chartData(points, latency!);
  assert.deepEqual(lat, [[1, 2], [4, null], [8, null]]);
  assert.deepEqual(latest(lat), [4, 8]);
  assert.deepEqual(chartData(points, errors!)[1], [25, 25], 'error rate in percent');
  // A slot without requests has no error rate (null): a gap, not 0%.
  assert.deepEqual(chartData([p(1000, 0, null), { ...p(2000, 0, null), error_rate: null }], errors!)[1], [25, null]);
  assert.deepEqual(chartData([p(1000, Number.NaN, 1)], qps!), [[1], [null]]);
  assert.equal(hasTraffic(points), true);
  assert.equal(hasTraffic([p(1000, 0, null)]), false);
});

test('routes round-trip through the hash', () => {
  assert.deepEqual(parseRoute(''), { page: 'models' });
  assert.deepEqual(parseRoute('#/endpoints'), { page: 'endpoints' });
  assert.deepEqual(parseRoute('#/endpoints/a%20b'), { page: 'endpoint', name: 'a b' });
  assert.deepEqual(parseRoute('#/models/iris'), { page: 'model', name: 'iris' });
  assert.deepEqual(parseRoute('#/nowhere/x'), { page: 'models' });
  assert.deepEqual(parseRoute('#/models/%E0%A4%A'), { page: 'model', name: '%E0%A4%A' });
  for (const p of [{ page: 'endpoint', name: 'x/y?z' }, { page: 'model', name: 'iris' }] as const) assert.deepEqual(parseRoute(href(p)), p);
});

test('exampleRequest: the input example, else zeros in the signature shape; a huge fixed shape is refused before anything is built', () => {
  assert.deepEqual(exampleRequest({ input_example: { inputs: [[1]] } }), { body: { inputs: [[1]] } });
  assert.deepEqual(exampleRequest({ signature: { inputs: [{ name: 'x', dtype: 'float32', shape: [-1, 3] }] } }), { body: { inputs: [[0, 0, 0]] } });
  assert.deepEqual(exampleRequest({ signature: { inputs: [{ name: 'a', dtype: 'string', shape: [-1] }, { name: 'b', dtype: 'bool', shape: [-1] }] } }), { body: { inputs: { a: [''], b: [false] } } });
  // The attack: a model declaring [1, 100000000] made the console and `ferry serve` allocate until they died.
  const before = process.memoryUsage().heapUsed;
  const huge = exampleRequest({ signature: { inputs: [{ name: 'x', dtype: 'float32', shape: [1, 100_000_000] }] } });
  assert.ok('tooLarge' in huge);
  assert.match(huge.tooLarge, /input 'x' has shape \[1, 100000000\] \(100,000,000 values per request\), more than the 200,000/);
  assert.ok(process.memoryUsage().heapUsed - before < 50 * 1024 * 1024, 'nothing of that size was allocated');
  // The bound counts all inputs together; an image-sized input still gets its example.
  assert.ok('tooLarge' in exampleRequest({ signature: { inputs: [{ name: 'a', dtype: 'float32', shape: [150_000] }, { name: 'b', dtype: 'float32', shape: [60_000] }] } }));
  const image = exampleRequest({ signature: { inputs: [{ name: 'img', dtype: 'float32', shape: [-1, 3, 224, 224] }] } });
  assert.ok('body' in image);
  assert.equal(JSON.stringify(image.body).match(/0/g)?.length, 3 * 224 * 224);
});

test('buildState reads a Python environment build log: none, building, ready, failed', () => {
  assert.equal(buildState(''), 'none');
  assert.equal(buildState('environment abc for /m\n$ /usr/bin/python3 -m venv /x\n'), 'building');
  assert.equal(buildState('environment abc for /m\nRequirement already satisfied: numpy\nenvironment ready\n'), 'ready');
  assert.equal(buildState('environment abc for /m\nERROR: No matching distribution found for nope\nenvironment build failed: ERROR: No matching distribution found for nope\n'), 'failed');
  // A rebuild after a failure: the last outcome counts.
  assert.equal(buildState('environment build failed: x\nenvironment abc for /m\nenvironment ready\n'), 'ready');
});
