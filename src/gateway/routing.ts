/**
 * The routing table: which ready replicas serve which served entity of which endpoint, with
 * traffic weights. The control plane swaps an endpoint's route atomically (one Map.set) when a
 * new config is ready, and adds/removes backends in place as replicas turn ready or die, so the
 * gateway never sees a half-built config.
 */
import type { FamilyResolver } from '../multi/index.js';
import type { Admission } from './rate-limit.js';
import type { EntityTraffic } from './traffic.js';

export { AFFINITY_LOAD_FACTOR, modelAffinity, pickAffine, pickBackend, type Backend } from './pick.js';

export interface EntityRoute {
  /** Served entity name (sent back in the `served-model-name` header). */
  name: string;
  /** The registered model and version it serves. */
  modelName: string;
  modelVersion: string;
  /** Percentage of traffic, 0-100. */
  trafficPercentage: number;
  /** Ready replicas, capacity and the wait buffer; shared with the control plane. */
  traffic: EntityTraffic;
  /** Key of this entity's status/latency samples (`statsKey`), built once per route. */
  statsKey: string;
  /** Set for a family entity: finds the READY version a request names (404 otherwise). */
  family?: Pick<FamilyResolver, 'resolve'>;
}

export interface EndpointRoute {
  name: string;
  /** In route order: fallback tries them in this order. */
  entities: EntityRoute[];
  timeoutMs: number;
  /** Entities that also get a copy of this share of requests (answers discarded). */
  shadows: Array<{ entity: EntityRoute; mirrorPercentage: number }>;
  /** Retry a 5xx or unreachable entity on the next ones in route order. */
  fallback: boolean;
  /** The endpoint's rate limits (`ai_gateway.rate_limits`); undefined when it has none. */
  rateLimiter: Admission | undefined;
  /** Largest inference body for this endpoint (`ai_gateway.input_limits`); undefined: the server's limit. */
  maxBodyBytes: number | undefined;
}

export class RoutingTable {
  private readonly routes = new Map<string, EndpointRoute>();

  /**
   * `onChange` runs synchronously after every `set` and `delete` (gateway workers mirror the
   * table: src/gateway/route-mirror.ts).
   */
  constructor(private readonly onChange?: () => void) {}

  get(endpoint: string): EndpointRoute | undefined {
    return this.routes.get(endpoint);
  }

  /** Names of the routed endpoints, sorted. */
  names(): string[] {
    return [...this.routes.keys()].sort();
  }

  set(route: EndpointRoute): void {
    this.routes.set(route.name, route);
    this.onChange?.();
  }

  delete(endpoint: string): void {
    if (this.routes.delete(endpoint)) this.onChange?.();
  }

  /** Every route, in insertion order. */
  all(): IterableIterator<EndpointRoute> {
    return this.routes.values();
  }
}

/**
 * Picks a served entity by traffic percentage. `r` is uniform in [0, 1). Entities at 0% are
 * never picked while another has traffic. Example: routes 90/10 and r = 0.95 → the second.
 */
export function pickEntity(entities: readonly EntityRoute[], r: number): EntityRoute | undefined {
  let x = r * 100;
  let last: EntityRoute | undefined;
  for (const e of entities) {
    if (e.trafficPercentage <= 0) continue;
    last = e;
    if (x < e.trafficPercentage) return e;
    x -= e.trafficPercentage;
  }
  return last;
}
