/**
 * How the gateway picks one replica of an entity: power of two choices, and model-aware picks
 * with bounded load for model families. Pure functions of the backends and random numbers.
 */
import type { ReplicaChannel } from '../channel/index.js';

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
