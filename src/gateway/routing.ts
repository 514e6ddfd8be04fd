/**
 * The routing table: which ready replicas serve which served entity of which endpoint, with
 * traffic weights. The control plane swaps an endpoint's route atomically (one Map.set) when a
 * new config is ready, and adds/removes backends in place as replicas turn ready or die, so the
 * gateway never sees a half-built config.
 */
import type { ReplicaChannel } from '../channel/index.js';
import type { RateLimiter } from './rate-limit.js';
import type { EntityTraffic } from './traffic.js';

/** One ready replica as the gateway sees it. */
export interface Backend {
  id: string;
  channel: ReplicaChannel;
  /** Requests sent and not yet answered. */
  outstanding: number;
  /** Transport failures in a row (outlier detection); reset by a success. */
  consecutiveFailures?: number;
  /** Not picked before this time (ms, performance.now()) after repeated failures. */
  ejectedUntilMs?: number;
}

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
  rateLimiter: RateLimiter | undefined;
  /** Largest inference body for this endpoint (`ai_gateway.input_limits`); undefined: the server's limit. */
  maxBodyBytes: number | undefined;
}

export class RoutingTable {
  private readonly routes = new Map<string, EndpointRoute>();

  get(endpoint: string): EndpointRoute | undefined {
    return this.routes.get(endpoint);
  }

  /** Names of the routed endpoints, sorted. */
  names(): string[] {
    return [...this.routes.keys()].sort();
  }

  set(route: EndpointRoute): void {
    this.routes.set(route.name, route);
  }

  delete(endpoint: string): void {
    this.routes.delete(endpoint);
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

/**
 * Power of two choices: two random backends, the one with fewer outstanding requests wins.
 * Near least-loaded balancing at O(1) cost, without the herd effect of always choosing the global
 * minimum. `r1`, `r2` are uniform in [0, 1); `exclude` skips a backend that just failed.
 */
export function pickBackend(backends: readonly Backend[], r1: number, r2: number, exclude?: Backend): Backend | undefined {
  const pool = exclude === undefined ? backends : backends.filter((b) => b !== exclude);
  const n = pool.length;
  if (n === 0) return undefined;
  if (n === 1) return pool[0];
  const a = pool[Math.floor(r1 * n)] as Backend;
  let j = Math.floor(r2 * (n - 1));
  if (pool[j] === a) j = n - 1;
  const b = pool[j] as Backend;
  return b.outstanding < a.outstanding ? b : a;
}
