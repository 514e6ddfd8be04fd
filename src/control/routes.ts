/**
 * From an endpoint's stored record to its gateway route: the pieces the leader's controller and a
 * follower's route sync (./follower.ts) share, so both build the same route from the same config.
 */
import type { Authorizer } from '../auth/index.js';
import { FerryError } from '../errors.js';
import { RateLimiter, statsKey, type EndpointRoute, type EntityRoute, type EntityTraffic } from '../gateway/index.js';
import type { FamilyResolver } from '../multi/index.js';
import type { EndpointRecord, MetadataStore } from '../store/index.js';
import type { AiGatewayConfig } from './ai-gateway.js';
import type { EndpointConfig, ServedEntityConfig } from './config.js';

/** One served entity's place in a route: its share of traffic and its live replicas. */
export interface RoutedEntity {
  endpoint: string;
  entity: ServedEntityConfig;
  trafficPercentage: number;
  traffic: EntityTraffic;
  /** A family entity's member lookup. */
  family: FamilyResolver | undefined;
}

/**
 * The endpoint's route: entities in route order with their weights, the request timeout
 * (`config.request_timeout_ms`, else the server's), the shadows that name a routed entity, and the
 * AI gateway policies. Example: routes a 90 / b 10, shadow b 5 % → entities [a 90, b 10], shadows [b 5].
 */
export function buildEndpointRoute(name: string, config: EndpointConfig, weighted: readonly RoutedEntity[], defaultRequestTimeoutMs: number,
  aiGateway: AiGatewayConfig, rateLimiter: RateLimiter | undefined): EndpointRoute {
  const entities: EntityRoute[] = weighted.map(({ endpoint, entity, trafficPercentage, traffic, family }) => ({
    name: entity.name, modelName: entity.entityName, modelVersion: entity.entityVersion, trafficPercentage, traffic,
    statsKey: statsKey(endpoint, entity.name, entity.entityVersion),
    ...(family === undefined ? {} : { family }),
  }));
  return {
    name,
    timeoutMs: config.requestTimeoutMs ?? defaultRequestTimeoutMs,
    entities,
    shadows: (config.shadows ?? []).flatMap((s) => {
      const entity = entities.find((e) => e.name === s.servedEntityName);
      return entity ? [{ entity, mirrorPercentage: s.mirrorPercentage }] : [];
    }),
    fallback: aiGateway.fallbackEnabled, rateLimiter, maxBodyBytes: aiGateway.maxBodyBytes,
  };
}

/** The stored AI gateway settings (records written before they existed have none, or fewer). */
export function aiGatewayOf(r: EndpointRecord<EndpointConfig>): AiGatewayConfig {
  const a = r.aiGateway as Partial<AiGatewayConfig> | undefined;
  return { fallbackEnabled: a?.fallbackEnabled === true, rateLimits: a?.rateLimits ?? [], maxBodyBytes: a?.maxBodyBytes, ...(a?.inferenceTable === undefined ? {} : { inferenceTable: a.inferenceTable }) };
}

/** No limiter at all without limits, so such endpoints pay nothing for the feature. */
export function rateLimiterFor(endpoint: string, a: AiGatewayConfig): RateLimiter | undefined {
  return a.rateLimits.length === 0 ? undefined : new RateLimiter(endpoint, a.rateLimits);
}

const INFERENCE_TABLE_OFF = Object.freeze({ endpointId: '', enabled: false, sampleFraction: 1 });

/** An endpoint's inference table settings; called per inference request, so no allocation unless enabled. */
export function inferenceTableSettings(r: EndpointRecord<EndpointConfig>): { endpointId: string; enabled: boolean; sampleFraction: number } {
  const t = (r.aiGateway as Partial<AiGatewayConfig> | undefined)?.inferenceTable;
  if (t?.enabled !== true) return INFERENCE_TABLE_OFF;
  return { endpointId: r.id, enabled: true, sampleFraction: t.sampleFraction ?? 1 };
}

/**
 * Whether an endpoint's creator may read a model: a family serves only those, so a principal
 * who registers a model under the family's prefix (or with its tag) cannot slip it into
 * someone else's replicas. Looked up per model name (the family resolver caches the answer).
 */
export function creatorReads(store: MetadataStore, authz: Pick<Authorizer, 'require'>, creator: string): (model: string) => Promise<boolean> {
  return async (model) => {
    const owner = await store.getPrincipal(creator);
    if (owner === undefined) return false;
    try {
      await authz.require({ principal: owner.name, admin: owner.admin }, 'registered-model', model, 'CAN_READ');
      return true;
    } catch (err) {
      if (err instanceof FerryError && err.code === 'PERMISSION_DENIED') return false;
      throw err;
    }
  };
}
