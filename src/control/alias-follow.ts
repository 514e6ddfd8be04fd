/**
 * Endpoints that follow an alias. A served entity configured with `entity_version: "champion"`
 * and `follow_alias: true` is rolled forward whenever `champion` moves: the registry publishes
 * each alias change on `ferry:registry:alias-set`, and the follower sends the endpoint's serving
 * config back through the controller's normal config update, with the alias still named, so the
 * update resolves it to the new version and goes through the usual rollout (start → validate →
 * optional canary → swap; a failure keeps the old version, UPDATE_FAILED).
 *
 * Worked example: an endpoint serves `churn@champion` (version 3, entity `churn-3`); setting
 * `champion` to 4 makes the follower update the config with the entity named `churn-4`, its route
 * moved to that name; version 4's replicas start, are validated, and take the traffic.
 *
 * An endpoint with an update in progress does not follow (its update would be refused as a
 * conflict): the follower logs it and the alias is followed at its next move.
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import { FerryError } from '../errors.js';
import { ALIAS_SET_CHANNEL, type AliasSetEvent } from '../registry/index.js';
import type { EndpointRecord, MetadataStore } from '../store/index.js';
import { defaultEntityName, type EndpointConfig, type ServedEntityConfig } from './config.js';

export interface AliasFollowerOptions {
  store: Pick<MetadataStore, 'listEndpoints'>;
  /** The controller's config update (`EndpointController.updateConfig`). */
  update: (endpoint: string, body: unknown) => Promise<unknown>;
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

export class AliasFollower {
  private readonly listener = (message: unknown): void => {
    const e = message as AliasSetEvent;
    const done = this.follow(e).catch((err: unknown) => this.options.log('error', 'alias follow failed', { model: e.model, alias: e.alias, error: String(err) }));
    this.pending.add(done);
    void done.finally(() => this.pending.delete(done));
  };
  private readonly pending = new Set<Promise<unknown>>();

  constructor(private readonly options: AliasFollowerOptions) {
    diagnosticsChannel.subscribe(ALIAS_SET_CHANNEL, this.listener);
  }

  /**
   * Updates every endpoint whose serving config follows `model@alias` and serves another version
   * than `version`; resolves with the names of the endpoints it updated.
   */
  async follow(e: AliasSetEvent): Promise<string[]> {
    const updated: string[] = [];
    for (const r of await this.options.store.listEndpoints()) {
      const config = r.config as EndpointConfig | undefined;
      if (config === undefined || !followsTo(config, e)) continue;
      try {
        await this.options.update(r.name, followBody(config, e));
        updated.push(r.name);
        this.options.log('info', 'endpoint follows alias', { endpoint: r.name, model: e.model, alias: e.alias, version: e.version });
      } catch (err) {
        if (!(err instanceof FerryError)) throw err;
        this.options.log('warn', 'endpoint did not follow alias', { endpoint: r.name, model: e.model, alias: e.alias, version: e.version, reason: err.message });
      }
    }
    return updated;
  }

  /** Stops listening and waits for the updates already started. */
  async close(): Promise<void> {
    diagnosticsChannel.unsubscribe(ALIAS_SET_CHANNEL, this.listener);
    await Promise.all(this.pending);
  }
}

/** Whether `config` has an entity that follows `model@alias` and serves another version now. */
export function followsTo(config: EndpointConfig, e: AliasSetEvent): boolean {
  return config.servedEntities.some((s) => following(s, e) && s.entityVersion !== String(e.version));
}

function following(s: ServedEntityConfig, e: AliasSetEvent): boolean {
  return s.followAlias === true && s.family === undefined && s.entityName === e.model && s.entityAlias === e.alias;
}

/**
 * The config body (the API's shape) that serves `config` again with the following entities
 * re-resolved: every setting of the compiled config is written out, entities keep their names
 * unless the name was the default `<model>-<version>` (then it becomes the new version's, and
 * the routes follow), and a following entity names its alias, not a number.
 */
export function followBody(config: EndpointConfig, e: AliasSetEvent): Record<string, unknown> {
  const renamed = new Map<string, string>();
  const entities = config.servedEntities.map((s) => {
    const follows = following(s, e);
    const defaultName = s.name === defaultEntityName(s.entityName, Number(s.entityVersion));
    if (follows && defaultName) renamed.set(s.name, defaultEntityName(s.entityName, e.version));
    return {
      name: renamed.get(s.name) ?? s.name,
      entity_name: s.entityName,
      entity_version: s.entityAlias !== undefined && s.followAlias === true ? s.entityAlias : s.entityVersion,
      follow_alias: s.followAlias === true,
      workload_size: s.workloadSize,
      workload_type: s.workloadType,
      scale_to_zero_enabled: s.scaleToZeroEnabled,
      ...(s.minProvisionedConcurrency === undefined ? {} : { min_provisioned_concurrency: s.minProvisionedConcurrency }),
      ...(s.maxProvisionedConcurrency === undefined ? {} : { max_provisioned_concurrency: s.maxProvisionedConcurrency }),
      autoscaling: {
        target_concurrency: s.scaling.targetConcurrency, stable_window_ms: s.scaling.stableWindowMs, panic_window_ms: s.scaling.panicWindowMs,
        panic_threshold: s.scaling.panicThreshold, scale_down_delay_ms: s.scaling.scaleDownDelayMs, scale_to_zero_grace_ms: s.scaling.scaleToZeroGraceMs,
        max_scale_up_rate: s.scaling.maxScaleUpRate,
      },
      batching: {
        enabled: s.batching.enabled, max_batch_size: s.batching.maxBatchSize, max_queue_delay_us: s.batching.maxQueueDelayUs,
        preferred_batch_sizes: s.batching.preferredBatchSizes,
      },
      ...(s.validationRequest === undefined ? {} : { validation_request: s.validationRequest }),
    };
  });
  const entityName = (n: string): string => renamed.get(n) ?? n;
  return {
    served_entities: entities,
    traffic_config: {
      routes: config.routes.map((r) => ({ served_entity_name: entityName(r.servedEntityName), traffic_percentage: r.trafficPercentage })),
      ...(config.shadows.length > 0 ? { shadow_routes: config.shadows.map((r) => ({ served_entity_name: entityName(r.servedEntityName), mirror_percentage: r.mirrorPercentage })) } : {}),
    },
    ...(config.requestTimeoutMs === undefined ? {} : { request_timeout_ms: config.requestTimeoutMs }),
    ...(config.rollout === undefined ? {} : {
      rollout: {
        canary_steps: config.rollout.canarySteps.map((c) => ({ traffic_percentage: c.trafficPercentage, duration_ms: c.durationMs })),
        max_error_rate: config.rollout.maxErrorRate, max_p99_latency_ratio: config.rollout.maxP99LatencyRatio,
      },
    }),
  };
}

/** The names of the endpoints whose current or pending config serves `model` by name. */
export function endpointsServing(records: readonly EndpointRecord[], model: string): string[] {
  const serves = (c: unknown): boolean => (c as EndpointConfig | undefined)?.servedEntities.some((s) => s.family === undefined && s.entityName === model) ?? false;
  return records.filter((r) => serves(r.config) || serves(r.pendingConfig)).map((r) => r.name);
}
