/**
 * The primary process's side of its gateway workers' routes (`gatewayWorkers` ≥ 2). The
 * controller keeps building routes into the primary's `RoutingTable` exactly as with one process;
 * this mirror turns that table into data (`RouteSpec`: entities, weights, policies, replicas by
 * socket address) and sends it whole to every worker after each change: a route swap, a replica
 * that turned ready or left. Workers build their own routes from it, each with its own channels
 * to the replicas, so canary splits, shadows and fallback are the primary's, to the request.
 *
 * A replica leaving the table is still held by the workers until each says it sends nothing more
 * to it: the mirror adds one to the backend's `outstanding` per worker when it leaves and takes
 * it back as each worker releases it (`released`), so the controller's drain — which waits for
 * `outstanding` to reach 0 before it stops the replica — waits for the workers' requests too.
 *
 * Rate limits stay in the primary's `RateLimiter`s: workers ask `admit` per call, for endpoints
 * that have limits only. Family members are resolved by the primary's `FamilyResolver`s.
 */
import { FerryError } from '../errors.js';
import type { FamilyMember } from '../multi/index.js';
import type { ReplicaAddress } from '../runtime/index.js';
import type { Backend, EndpointRoute, RoutingTable } from './routing.js';
import type { EntityTraffic } from './traffic.js';
import type { EntitySpec, ErrorSpec, PrimaryToWorker, RouteSpec } from './worker-protocol.js';

export interface RouteMirrorOptions {
  table: RoutingTable;
  /** Whether an endpoint logs requests to its inference table (its workers then send the bodies). */
  inferenceTableOn: (endpoint: string) => boolean;
  /** Sends to one worker. */
  send: (worker: number, msg: PrimaryToWorker) => void;
  /** A backend's replica address; undefined: it cannot be reached from another process (left out). */
  addressOf: (b: Backend) => ReplicaAddress | undefined;
}

interface Hold {
  backend: Backend;
  /** Workers that have not released it yet. */
  workers: Set<number>;
}

export class RouteMirror {
  private readonly workers = new Set<number>();
  private readonly keys = new WeakMap<Backend | EntityTraffic, number>();
  private nextKey = 1;
  /** The backends of the table at the last change. */
  private live = new Set<Backend>();
  /** Backends that left since the last message, sent with the next one. */
  private removed: number[] = [];
  private readonly holds = new Map<number, Hold>();
  private scheduled = false;

  constructor(private readonly o: RouteMirrorOptions) {}

  /**
   * The table or a backend changed (called synchronously by `RoutingTable` and `EntityTraffic`):
   * holds the backends that left for every worker, then sends the table at the end of this turn.
   */
  readonly changed = (): void => {
    const now = new Set<Backend>();
    for (const r of this.o.table.all()) for (const e of r.entities) for (const b of e.traffic.backends) now.add(b);
    for (const b of this.live) {
      if (now.has(b)) continue;
      const key = this.keyOf(b);
      this.removed.push(key);
      if (this.workers.size === 0 || this.holds.has(key)) continue;
      b.outstanding += this.workers.size;
      this.holds.set(key, { backend: b, workers: new Set(this.workers) });
    }
    this.live = now;
    // Without workers there is nobody to tell: a worker that joins gets the whole table.
    if (this.workers.size === 0) {
      this.removed = [];
      return;
    }
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      const msg: PrimaryToWorker = { type: 'routes', routes: this.snapshot(), removed: this.removed };
      this.removed = [];
      for (const w of this.workers) this.o.send(w, msg);
    });
  };

  /** A worker joined: it gets the whole table now, and holds from now on. */
  addWorker(worker: number): void {
    this.workers.add(worker);
    this.o.send(worker, { type: 'routes', routes: this.snapshot(), removed: [] });
  }

  /** A worker is gone (exited or crashed): whatever it held is released. */
  removeWorker(worker: number): void {
    this.workers.delete(worker);
    for (const key of [...this.holds.keys()]) this.release(worker, key);
  }

  /** `worker` sends nothing more to these backends. */
  released(worker: number, keys: readonly number[]): void {
    for (const key of keys) this.release(worker, key);
  }

  /** A worker's rate-limit admission: the primary's buckets decide (undefined: admitted). */
  async admit(endpoint: string, principal: string): Promise<ErrorSpec | undefined> {
    try {
      await this.o.table.get(endpoint)?.rateLimiter?.admit(principal, performance.now());
      return undefined;
    } catch (err) {
      return errorSpec(err);
    }
  }

  charge(endpoint: string, principal: string, tokens: number): void {
    this.o.table.get(endpoint)?.rateLimiter?.chargeTokens(principal, performance.now(), tokens);
  }

  /** A worker's family lookup, by the primary's resolver of that entity. */
  async resolve(endpoint: string, servedEntity: string, raw: string, field: string): Promise<{ member: FamilyMember | undefined; error: ErrorSpec | undefined }> {
    const family = this.o.table.get(endpoint)?.entities.find((e) => e.name === servedEntity)?.family;
    try {
      if (family === undefined) throw new FerryError('TEMPORARILY_UNAVAILABLE', `Serving endpoint '${endpoint}' has no family entity '${servedEntity}' right now; retry shortly.`, { retryAfterS: 1 });
      return { member: await family.resolve(raw, field), error: undefined };
    } catch (err) {
      return { member: undefined, error: errorSpec(err) };
    }
  }

  private release(worker: number, key: number): void {
    const hold = this.holds.get(key);
    if (hold === undefined || !hold.workers.delete(worker)) return;
    hold.backend.outstanding--;
    if (hold.workers.size === 0) this.holds.delete(key);
  }

  private keyOf(x: Backend | EntityTraffic): number {
    let k = this.keys.get(x);
    if (k === undefined) {
      k = this.nextKey++;
      this.keys.set(x, k);
    }
    return k;
  }

  /** The table as data. */
  private snapshot(): RouteSpec[] {
    return [...this.o.table.all()].map((r) => this.routeSpec(r));
  }

  private routeSpec(r: EndpointRoute): RouteSpec {
    const entities: EntitySpec[] = r.entities.map((e) => ({
      key: this.keyOf(e.traffic), name: e.name, modelName: e.modelName, modelVersion: e.modelVersion, trafficPercentage: e.trafficPercentage,
      statsKey: e.statsKey, family: e.family !== undefined,
      backends: e.traffic.backends.flatMap((b) => {
        const address = this.o.addressOf(b);
        return address === undefined ? [] : [{ key: this.keyOf(b), id: b.id, address }];
      }),
    }));
    return {
      name: r.name, timeoutMs: r.timeoutMs, entities,
      shadows: r.shadows.map((s) => ({ entity: r.entities.indexOf(s.entity), mirrorPercentage: s.mirrorPercentage })).filter((s) => s.entity >= 0),
      fallback: r.fallback, maxBodyBytes: r.maxBodyBytes,
      rateLimits: r.rateLimiter === undefined ? undefined : { countsTokens: r.rateLimiter.countsTokens },
      inferenceTable: this.o.inferenceTableOn(r.name),
    };
  }
}

function errorSpec(err: unknown): ErrorSpec {
  const e = err instanceof FerryError ? err : new FerryError('INTERNAL_ERROR', err instanceof Error ? err.message : String(err));
  return { code: e.code, message: e.message, retryAfterS: e.retryAfterS };
}
