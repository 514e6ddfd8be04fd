/**
 * The routing table: which ready replicas serve which served entity of which endpoint, with
 * traffic weights. The control plane swaps an endpoint's route atomically (one Map.set) when a
 * new config is ready, and adds/removes backends in place as replicas turn ready or die, so the
 * gateway never sees a half-built config.
 */
import type { ReplicaChannel } from '../channel/index.js';
import type { FamilyResolver } from '../multi/index.js';
import type { Admission } from './rate-limit.js';
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
  /** Hash of `id` for model-aware routing, computed on first use. */
  affinitySeed?: number;
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

/**
 * Bounded-load factor of model-aware routing: a replica keeps taking one model's requests while it
 * carries fewer than this × the mean outstanding requests per replica (+1 request), as in
 * consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018). 1.25 keeps the
 * busiest replica within 25% of the mean while most of a model's requests stay on one replica.
 */
export const AFFINITY_LOAD_FACTOR = 1.25;

/** 32-bit FNV-1a of a string, finished with murmur3's mixer: the hash of a model for `pickAffine`. */
export function modelAffinity(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return mix32(h);
}

function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * Model-aware pick (rendezvous hashing with bounded load): the backends ranked by
 * hash(model, backend), highest first; the first usable one under the load bound wins. Each model
 * thus has a stable home replica (then a second, a third…) that keeps it loaded; a hot model that
 * fills its home spills to its next-ranked replicas, which load it too; removing a replica moves
 * only the models it was home to. Undefined when every replica is at the bound or unusable: the
 * caller then takes any replica (a miss there just loads the model).
 * Example: 3 idle replicas, bound = ceil(1.25 × 1 / 3) = 1 → the top-ranked one; with 6
 * outstanding requests, 2 on each, bound = ceil(1.25 × 7 / 3) = 3 → still the top-ranked one.
 */
export function pickAffine(backends: readonly Backend[], affinity: number, usable: (b: Backend) => boolean): Backend | undefined {
  const n = backends.length;
  if (n === 0) return undefined;
  let total = 0;
  for (const b of backends) total += b.outstanding;
  const bound = Math.max(1, Math.ceil((AFFINITY_LOAD_FACTOR * (total + 1)) / n));
  // n is a replica count (tens at most): ranking them all costs less than a cached ring would.
  const ranked = backends.map((b) => ({ b, score: mix32((b.affinitySeed ??= modelAffinity(b.id)) ^ affinity) }));
  ranked.sort((x, y) => y.score - x.score);
  for (const { b } of ranked) if (b.outstanding < bound && usable(b)) return b;
  return undefined;
}
