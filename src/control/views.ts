/**
 * The endpoint views: the JSON the serving-endpoints API answers, built from an endpoint's stored
 * record (the spec) and its live replicas (the status). Shapes are `src/api`'s, so the server, the
 * client and the console read one declaration. Also the per-entity gauges metrics read, and the
 * family cache view read from a family entity's replicas.
 */
import type {
  AutoscalingStatus, AutoscalingTunables, EndpointConfigView, FamilyCacheView, ServedEntityView, ServingEndpoint, Tag,
} from '../api/index.js';
import type { EndpointRoute } from '../gateway/index.js';
import type { ModelCacheStats } from '../multi/index.js';
import { aiGatewayView } from './ai-gateway.js';
import type { EndpointConfig, ServedEntityConfig } from './config.js';
import { validationRequestOf } from './rollout.js';
import { aiGatewayOf } from './routes.js';
import type { EndpointState, EntityReplicas } from './state.js';

const VALIDATION_SKIPPED = 'Validation skipped: the model version has no input example and the served entity no validation_request.';
/** How long the endpoint view waits for a family replica's cache counters. */
const FAMILY_STATS_TIMEOUT_MS = 1000;

/** One served entity's replica counts and gateway load, for metrics. */
export interface EntityGauges {
  endpoint: string;
  servedEntity: string;
  ready: number;
  starting: number;
  desired: number;
  inFlight: number;
  queued: number;
}

/**
 * An endpoint as the API shows it. `route` is its live gateway route (READY when some entity with
 * traffic has a ready replica); `families`, the family entities' caches (read only by `GET`).
 */
export function endpointView(st: EndpointState, route: EndpointRoute | undefined, families?: ReadonlyMap<string, FamilyCacheView>): ServingEndpoint {
  const r = st.record;
  const ready = route !== undefined && route.entities.some((e) => e.trafficPercentage > 0 && e.traffic.backends.length > 0);
  return {
    name: r.name,
    id: r.id,
    creator: r.creator,
    creation_timestamp: r.createdMs,
    last_updated_timestamp: r.updatedMs,
    ...(r.description ? { description: r.description } : {}),
    tags: tagList(r.tags),
    ai_gateway: aiGatewayView(aiGatewayOf(r)),
    state: {
      ready: ready ? 'READY' : 'NOT_READY',
      config_update: r.configUpdate,
      ...(r.updateMessage ? { config_update_message: r.updateMessage } : {}),
    },
    ...(r.config ? { config: configView(r.config, st.current, families) } : {}),
    ...(r.pendingConfig ? { pending_config: { ...configView(r.pendingConfig, st.pending, families), start_time: r.updatedMs } } : {}),
  };
}

export function tagList(tags: Readonly<Record<string, string>>): Tag[] {
  return Object.entries(tags).map(([key, value]) => ({ key, value }));
}

function configView(c: EndpointConfig, entities: Map<string, EntityReplicas>, families: ReadonlyMap<string, FamilyCacheView> | undefined): EndpointConfigView {
  return {
    config_version: c.configVersion,
    served_entities: c.servedEntities.map((e) => entityView(e, entities.get(e.name), families?.get(e.name))),
    traffic_config: {
      routes: c.routes.map((x) => ({ served_entity_name: x.servedEntityName, served_model_name: x.servedEntityName, traffic_percentage: x.trafficPercentage })),
      ...((c.shadows ?? []).length ? { shadow_routes: c.shadows.map((x) => ({ served_entity_name: x.servedEntityName, mirror_percentage: x.mirrorPercentage })) } : {}),
    },
    ...(c.requestTimeoutMs === undefined ? {} : { request_timeout_ms: c.requestTimeoutMs }),
    ...(c.rollout === undefined ? {} : {
      rollout: {
        canary_steps: c.rollout.canarySteps.map((x) => ({ traffic_percentage: x.trafficPercentage, duration_ms: x.durationMs })),
        max_error_rate: c.rollout.maxErrorRate, max_p99_latency_ratio: c.rollout.maxP99LatencyRatio,
      },
    }),
  };
}

function entityView(e: ServedEntityConfig, d: EntityReplicas | undefined, family: FamilyCacheView | undefined): ServedEntityView {
  return {
    name: e.name,
    ...(e.family === undefined ? { entity_name: e.entityName, entity_version: e.entityVersion } : {
      model_family: {
        ...(e.family.namePrefix === undefined ? {} : { name_prefix: e.family.namePrefix }),
        ...(e.family.tag === undefined ? {} : { tag: `${e.family.tag.key}=${e.family.tag.value}` }),
        cache_size: e.family.cacheBytes, session_fallback: e.family.sessionFallback,
      },
    }),
    ...(e.entityAlias === undefined ? {} : { entity_alias: e.entityAlias, follow_alias: e.followAlias }),
    workload_size: e.workloadSize,
    workload_type: e.workloadType,
    scale_to_zero_enabled: e.scaleToZeroEnabled,
    ...(e.minProvisionedConcurrency === undefined ? {} : { min_provisioned_concurrency: e.minProvisionedConcurrency }),
    ...(e.maxProvisionedConcurrency === undefined ? {} : { max_provisioned_concurrency: e.maxProvisionedConcurrency }),
    batching: {
      enabled: e.batching.enabled, max_batch_size: e.batching.maxBatchSize,
      max_queue_delay_us: e.batching.maxQueueDelayUs, preferred_batch_sizes: e.batching.preferredBatchSizes,
    },
    ...(e.validationRequest === undefined ? {} : { validation_request: e.validationRequest }),
    ...(d === undefined ? {} : { autoscaling: { ...tunablesView(e), ...autoscalingStatus(e, d) } }),
    state: {
      deployment: d?.state ?? 'DEPLOYMENT_CREATING',
      deployment_state_message: d === undefined ? '' : d.message || d.validationNote || (validationRequestOf(e) === undefined ? VALIDATION_SKIPPED : ''),
      replicas: { ready: d?.readyReplicas ?? 0, total: d?.replicas.size ?? 0, desired: d?.desiredReplicas ?? 0 },
      ...(family === undefined ? {} : { family }),
    },
  };
}

/** The tunables in effect (set or default), so a client can send the config back unchanged. */
function tunablesView(e: ServedEntityConfig): AutoscalingTunables {
  const s = e.scaling;
  return {
    target_concurrency: s.targetConcurrency, stable_window_ms: s.stableWindowMs, panic_window_ms: s.panicWindowMs, panic_threshold: s.panicThreshold,
    scale_down_delay_ms: s.scaleDownDelayMs, scale_to_zero_grace_ms: s.scaleToZeroGraceMs, max_scale_up_rate: s.maxScaleUpRate,
  };
}

function autoscalingStatus(e: ServedEntityConfig, d: EntityReplicas): AutoscalingStatus {
  return {
    min_replicas: e.scaling.minReplicas,
    max_replicas: e.scaling.maxReplicas,
    desired_replicas: d.desiredReplicas,
    ready_replicas: d.readyReplicas,
    starting_replicas: d.startingReplicas,
    in_flight_requests: d.inFlight,
    queued_requests: d.queued,
    cold_starts_ms: d.coldStartsMs,
    last_decisions: d.decisions.map((x) => ({
      timestamp: x.timeMs, desired_replicas: x.desiredReplicas, panic: x.panic, reason: x.reason,
      stable_concurrency: x.inputs.stableConcurrency, panic_concurrency: x.inputs.panicConcurrency,
      ready_replicas: x.inputs.readyReplicas, starting_replicas: x.inputs.startingReplicas,
    })),
  };
}

/**
 * Replica counts and gateway load of every served entity (serving and rolling out), for
 * metrics. An entity kept across configs is counted once; a name that both configs use for
 * different replicas (a new version under the same name) adds up.
 */
export function entityGauges(endpoints: Iterable<EndpointState>): EntityGauges[] {
  const out = new Map<string, EntityGauges>();
  for (const st of endpoints) {
    for (const d of new Set([...st.current.values(), ...st.pending.values()])) {
      const key = `${d.endpoint}\0${d.entity.name}`;
      const g = out.get(key) ?? { endpoint: d.endpoint, servedEntity: d.entity.name, ready: 0, starting: 0, desired: 0, inFlight: 0, queued: 0 };
      g.ready += d.readyReplicas;
      g.starting += d.startingReplicas;
      g.desired += d.stopped ? 0 : d.desiredReplicas;
      g.inFlight += d.inFlight;
      g.queued += d.queued;
      out.set(key, g);
    }
  }
  return [...out.values()];
}

/**
 * The model caches of an endpoint's family entities, read from their ready replicas (each
 * answers `GET /metrics` with its cache counters; one that does not answer within 1 s is left
 * out): per entity, models and bytes per replica and the counters summed.
 */
export async function readFamilyViews(st: EndpointState): Promise<Map<string, FamilyCacheView>> {
  const out = new Map<string, FamilyCacheView>();
  await Promise.all([...st.current.values()].filter((d) => d.entity.family !== undefined).map(async (d) => {
    const replicas = await Promise.all([...d.replicas.values()].map(async (slot) => {
      if (slot.backend === undefined) return undefined;
      try {
        const res = await slot.backend.channel.request({ method: 'GET', path: '/metrics', body: undefined, meta: undefined, signal: undefined }, FAMILY_STATS_TIMEOUT_MS);
        const stats = (JSON.parse(res.body.toString('utf8')) as { family?: ModelCacheStats }).family;
        return stats === undefined ? undefined : { replica: slot.id, stats };
      } catch {
        return undefined;
      }
    }));
    out.set(d.entity.name, familyView(replicas.filter((r) => r !== undefined)));
  }));
  return out;
}

function familyView(replicas: Array<{ replica: string; stats: ModelCacheStats }>): FamilyCacheView {
  const sum = (k: 'hits' | 'misses' | 'loads' | 'loadFailures' | 'evictions' | 'loadSecondsSum'): number => replicas.reduce((a, r) => a + r.stats[k], 0);
  const hits = sum('hits');
  const misses = sum('misses');
  const loads = sum('loads');
  return {
    replicas: replicas.map((r) => ({ replica: r.replica, models_loaded: r.stats.models, bytes: r.stats.bytes, budget_bytes: r.stats.budgetBytes })),
    hits, misses, hit_rate: hits + misses === 0 ? null : hits / (hits + misses),
    loads, load_failures: sum('loadFailures'), evictions: sum('evictions'),
    load_seconds_avg: loads === 0 ? null : sum('loadSecondsSum') / loads,
    load_seconds_max: replicas.reduce((a, r) => Math.max(a, r.stats.loadSecondsMax), 0),
  };
}
