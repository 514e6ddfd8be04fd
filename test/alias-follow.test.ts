/**
 * The alias follower's pure parts (src/control/alias-follow.ts): which configs follow an alias
 * move, the config body it sends back through the controller (every setting kept, the default
 * entity name and its routes moved to the new version, a named entity and the other entities left
 * as they are), and which endpoints serve a model. The end-to-end roll-forward is in
 * test/mlflow-client.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { scalingSpecFor } from '../src/autoscaler/index.js';
import { endpointsServing, followBody, followsTo, type EndpointConfig, type ServedEntityConfig } from '../src/control/index.js';
import type { EndpointRecord } from '../src/store/index.js';

const entity = (name: string, model: string, version: string, extra: Partial<ServedEntityConfig> = {}): ServedEntityConfig => ({
  name, entityName: model, entityVersion: version, entityAlias: undefined, followAlias: false,
  workloadSize: 'Small', workloadType: 'CPU', scaleToZeroEnabled: false, minProvisionedConcurrency: undefined, maxProvisionedConcurrency: undefined,
  batching: { enabled: true, maxBatchSize: 32, maxQueueDelayUs: 0, preferredBatchSizes: [] },
  scaling: scalingSpecFor({ workloadSize: 'Small', scaleToZeroEnabled: false, minProvisionedConcurrency: undefined, maxProvisionedConcurrency: undefined }, { targetConcurrency: 2 }),
  artifactPath: `models/${model}/${version}`, artifactSha256: 'ab', modelFile: 'model.onnx', flavor: 'onnx', inputExample: undefined,
  validationRequest: undefined, family: undefined, ...extra,
});

const config: EndpointConfig = {
  configVersion: 4,
  servedEntities: [
    entity('churn-3', 'churn', '3', { entityAlias: 'champion', followAlias: true, validationRequest: { inputs: [[1, 2]] } }),
    entity('baseline', 'churn', '1'),
  ],
  routes: [{ servedEntityName: 'churn-3', trafficPercentage: 90 }, { servedEntityName: 'baseline', trafficPercentage: 10 }],
  shadows: [{ servedEntityName: 'churn-3', mirrorPercentage: 5 }],
  requestTimeoutMs: 2000,
  rollout: { canarySteps: [{ trafficPercentage: 10, durationMs: 1000 }], maxErrorRate: 0.05, maxP99LatencyRatio: 2 },
};

test('only a following entity of that model and alias, on another version, makes the endpoint follow', () => {
  assert.equal(followsTo(config, { model: 'churn', alias: 'champion', version: 4 }), true);
  assert.equal(followsTo(config, { model: 'churn', alias: 'champion', version: 3 }), false, 'already there');
  assert.equal(followsTo(config, { model: 'churn', alias: 'other', version: 4 }), false);
  assert.equal(followsTo(config, { model: 'iris', alias: 'champion', version: 4 }), false);
  const recorded = { ...config, servedEntities: [entity('churn-3', 'churn', '3', { entityAlias: 'champion' })] };
  assert.equal(followsTo(recorded, { model: 'churn', alias: 'champion', version: 4 }), false, 'an alias without follow_alias is only recorded');
});

test('the body keeps every setting, names the alias, and moves the default entity name and its routes', () => {
  const body = followBody(config, { model: 'churn', alias: 'champion', version: 4 });
  const autoscaling = {
    target_concurrency: 2, stable_window_ms: config.servedEntities[0]!.scaling.stableWindowMs, panic_window_ms: config.servedEntities[0]!.scaling.panicWindowMs,
    panic_threshold: config.servedEntities[0]!.scaling.panicThreshold, scale_down_delay_ms: config.servedEntities[0]!.scaling.scaleDownDelayMs,
    scale_to_zero_grace_ms: config.servedEntities[0]!.scaling.scaleToZeroGraceMs, max_scale_up_rate: config.servedEntities[0]!.scaling.maxScaleUpRate,
  };
  const common = {
    workload_size: 'Small', workload_type: 'CPU', scale_to_zero_enabled: false, autoscaling,
    batching: { enabled: true, max_batch_size: 32, max_queue_delay_us: 0, preferred_batch_sizes: [] },
  };
  assert.deepEqual(body, {
    served_entities: [
      { name: 'churn-4', entity_name: 'churn', entity_version: 'champion', follow_alias: true, ...common, validation_request: { inputs: [[1, 2]] } },
      { name: 'baseline', entity_name: 'churn', entity_version: '1', follow_alias: false, ...common },
    ],
    traffic_config: {
      routes: [{ served_entity_name: 'churn-4', traffic_percentage: 90 }, { served_entity_name: 'baseline', traffic_percentage: 10 }],
      shadow_routes: [{ served_entity_name: 'churn-4', mirror_percentage: 5 }],
    },
    request_timeout_ms: 2000,
    rollout: { canary_steps: [{ traffic_percentage: 10, duration_ms: 1000 }], max_error_rate: 0.05, max_p99_latency_ratio: 2 },
  });
  const named = { ...config, servedEntities: [entity('champ', 'churn', '3', { entityAlias: 'champion', followAlias: true })], routes: [{ servedEntityName: 'champ', trafficPercentage: 100 }], shadows: [] };
  const b = followBody(named, { model: 'churn', alias: 'champion', version: 4 }) as { served_entities: Array<{ name: string }>; traffic_config: unknown };
  assert.equal(b.served_entities[0]?.name, 'champ', 'a name the user gave stays');
  assert.deepEqual(b.traffic_config, { routes: [{ served_entity_name: 'champ', traffic_percentage: 100 }] });
});

test('endpointsServing lists the endpoints whose current or pending config serves the model by name', () => {
  const record = (name: string, c: EndpointConfig | undefined, pending?: EndpointConfig): EndpointRecord => ({
    name, id: name, creator: 'a', createdMs: 0, updatedMs: 0, description: '', tags: {}, config: c, pendingConfig: pending, configUpdate: 'NOT_UPDATING', updateMessage: '', aiGateway: {},
  });
  const iris = { ...config, servedEntities: [entity('iris-1', 'iris', '1')] };
  const family = { ...config, servedEntities: [entity('fam', 'family churn*', '', { family: { namePrefix: 'churn', tag: undefined, cacheBytes: 1 << 20, sessionFallback: true } })] };
  assert.deepEqual(endpointsServing([record('a', config), record('b', iris), record('c', iris, config), record('d', family), record('e', undefined)], 'churn'), ['a', 'c']);
});
