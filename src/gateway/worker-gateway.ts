/**
 * A gateway worker's side of its routes (`gatewayWorkers` ≥ 2; the primary's side is
 * ./route-mirror.ts). The worker builds its `RoutingTable` from the primary's `RouteSpec`s: one
 * `EntityTraffic` per primary entity (its own buffer, concurrency bound, retries and outlier
 * ejection) and one `FramedChannel` per replica, so requests take the same gateway path as in a
 * single process. What must be counted once is the primary's:
 * - rate limits: an endpoint with limits gets a stand-in `Admission` that asks the primary's
 *   buckets per call (an IPC round trip on those endpoints only);
 * - family members: looked up by the primary's resolver, answers kept here as long as it keeps
 *   them (`RESOLVE_TTL_MS`);
 * - finished-request events (`ferry:gateway:request`, `ferry:gateway:stream`) and canary samples:
 *   batched once per event-loop turn and published again by the primary (the bodies only for
 *   endpoints with an inference table);
 * - load: every `reportIntervalMs` the time-weighted concurrency and the queued requests per
 *   served entity, and at once when a request waits for an entity with no replica here (as a
 *   follower server reports to the leader), summed by the primary's autoscaler.
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import { FramedChannel, framePayloadLimit } from '../channel/index.js';
import { FerryError } from '../errors.js';
import { RESOLVE_TTL_MS, type FamilyMember } from '../multi/index.js';
import { GATEWAY_REQUEST_CHANNEL, GATEWAY_STREAM_CHANNEL, type GatewayRequestEvent, type GatewayStreamEvent } from './events.js';
import type { Admission } from './rate-limit.js';
import type { Backend, EndpointRoute, EntityRoute, RoutingTable } from './routing.js';
import { EntityTraffic, type TrafficOptions } from './traffic.js';
import type { ErrorSpec, PrimaryToWorker, RouteSpec, StatsSample, WorkerEntityLoad, WorkerToPrimary } from './worker-protocol.js';

/** The least time between two batches of events and samples sent to the primary (see `scheduleFlush`). */
const FLUSH_GAP_MS = 5;

/** The least time between two early load reports, however many requests wait (as a follower's). */
const EARLY_REPORT_GAP_MS = 250;

export interface WorkerGatewayOptions {
  table: RoutingTable;
  traffic: Omit<TrafficOptions, 'name' | 'onDemand' | 'onBackendsChange'>;
  /** The server's body limit: bounds a replica channel's frames. */
  maxBodyBytes: number;
  /** How long a replica that left the table may take to answer this worker's requests. */
  drainTimeoutMs: number;
  /** How often the load is reported, e.g. 1000. */
  reportIntervalMs: number;
  send: (msg: WorkerToPrimary) => void;
}

interface WorkerEntity {
  traffic: EntityTraffic;
  endpoint: string;
  name: string;
  /** By the primary's backend key. */
  backends: Map<number, Backend>;
  family: RemoteFamily | undefined;
}

export class WorkerGateway {
  private readonly entities = new Map<number, WorkerEntity>();
  private readonly limiters = new Map<string, RemoteAdmission>();
  private readonly inferenceTables = new Set<string>();
  private readonly pending = new Map<number, { resolve: (msg: PrimaryToWorker) => void }>();
  private nextId = 1;
  private readonly admissions = new Map<number, { resolve: () => void; reject: (err: FerryError) => void }>();
  private admitting: Array<{ id: number; endpoint: string; principal: string }> = [];
  private requests: GatewayRequestEvent[] = [];
  private streams: GatewayStreamEvent[] = [];
  private samples: StatsSample[] = [];
  private flushScheduled = false;
  private flushedAtMs = -Infinity;
  private readonly reportTimer: NodeJS.Timeout;
  private reportedAtMs = -Infinity;
  private closed = false;

  /** Canary samples go to the primary's `GatewayStats`. */
  readonly stats = {
    record: (key: string, status: number, latencyMs: number): void => {
      this.samples.push([key, status, latencyMs]);
      this.scheduleFlush();
    },
  };

  constructor(private readonly o: WorkerGatewayOptions) {
    diagnosticsChannel.subscribe(GATEWAY_REQUEST_CHANNEL, this.onRequest);
    diagnosticsChannel.subscribe(GATEWAY_STREAM_CHANNEL, this.onStream);
    this.reportTimer = setInterval(() => this.reportLoad(), o.reportIntervalMs);
    this.reportTimer.unref();
  }

  /** A message from the primary. */
  onMessage(msg: PrimaryToWorker): void {
    if (msg.type === 'routes') this.apply(msg.routes, msg.removed);
    else if (msg.type === 'admitted') {
      for (const a of msg.answers) this.settle(a.id, a.error);
    } else if (msg.type === 'member') {
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      p?.resolve(msg);
    }
  }

  /**
   * A rate-limit admission by the primary: the calls of one event-loop turn go in one message
   * (one IPC round trip for all of them, instead of one each).
   */
  admit(endpoint: string, principal: string): Promise<void> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.admissions.set(id, { resolve, reject });
      this.admitting.push({ id, endpoint, principal });
      if (this.admitting.length > 1) return;
      setImmediate(() => {
        const calls = this.admitting;
        this.admitting = [];
        this.o.send({ type: 'admit', calls });
      });
    });
  }

  private settle(id: number, error: ErrorSpec | undefined): void {
    const a = this.admissions.get(id);
    this.admissions.delete(id);
    if (error === undefined) a?.resolve();
    else a?.reject(toError(error));
  }

  /** Asks the primary and waits for its answer (`id` correlates them). */
  ask(build: (id: number) => WorkerToPrimary): Promise<PrimaryToWorker> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, { resolve });
      this.o.send(build(id));
    });
  }

  /** Stops reporting, sends what is batched, and closes every replica channel. */
  close(): void {
    this.closed = true;
    clearInterval(this.reportTimer);
    diagnosticsChannel.unsubscribe(GATEWAY_REQUEST_CHANNEL, this.onRequest);
    diagnosticsChannel.unsubscribe(GATEWAY_STREAM_CHANNEL, this.onStream);
    this.flush();
    for (const e of this.entities.values()) for (const b of e.backends.values()) b.channel.close();
    this.entities.clear();
  }

  private apply(routes: readonly RouteSpec[], removed: readonly number[]): void {
    const used = new Set<number>();
    const live = new Set<number>();
    const names = new Set<string>();
    this.inferenceTables.clear();
    for (const spec of routes) {
      names.add(spec.name);
      if (spec.inferenceTable) this.inferenceTables.add(spec.name);
      const entities: EntityRoute[] = spec.entities.map((es) => {
        used.add(es.key);
        let e = this.entities.get(es.key);
        if (e === undefined) {
          const key = es.key;
          e = {
            endpoint: spec.name, name: es.name, backends: new Map(),
            traffic: new EntityTraffic({ ...this.o.traffic, name: `${spec.name}/${es.name}`, onDemand: () => this.onDemand(key) }),
            family: es.family ? new RemoteFamily(this, spec.name, es.name) : undefined,
          };
          this.entities.set(key, e);
        }
        for (const bs of es.backends) {
          live.add(bs.key);
          if (e.backends.has(bs.key)) continue;
          const backend: Backend = { id: bs.id, outstanding: 0, channel: new FramedChannel(bs.address, { maxPayloadBytes: framePayloadLimit(this.o.maxBodyBytes) }) };
          e.backends.set(bs.key, backend);
          e.traffic.addBackend(backend);
        }
        return {
          name: es.name, modelName: es.modelName, modelVersion: es.modelVersion, trafficPercentage: es.trafficPercentage, traffic: e.traffic, statsKey: es.statsKey,
          ...(e.family === undefined ? {} : { family: e.family }),
        };
      });
      const route: EndpointRoute = {
        name: spec.name, timeoutMs: spec.timeoutMs, entities,
        shadows: spec.shadows.flatMap((s) => {
          const entity = entities[s.entity];
          return entity === undefined ? [] : [{ entity, mirrorPercentage: s.mirrorPercentage }];
        }),
        fallback: spec.fallback, maxBodyBytes: spec.maxBodyBytes, rateLimiter: this.limiterFor(spec),
      };
      this.o.table.set(route);
    }
    for (const name of this.o.table.names()) if (!names.has(name)) this.o.table.delete(name);
    for (const name of this.limiters.keys()) if (!names.has(name)) this.limiters.delete(name);
    // Replicas that left: out of rotation now, released once this worker's requests on them are answered.
    const retiring = new Map<number, Promise<void>>();
    for (const [key, e] of this.entities) {
      for (const [bk, b] of e.backends) {
        if (used.has(key) && live.has(bk)) continue;
        e.backends.delete(bk);
        retiring.set(bk, this.retire(e, b));
      }
      if (used.has(key)) continue;
      this.entities.delete(key);
      e.traffic.rejectWaiting(new FerryError('TEMPORARILY_UNAVAILABLE', `Served entity '${e.endpoint}/${e.name}' is shutting down; retry shortly.`, { retryAfterS: 1 }));
    }
    // A removed backend this worker does not send to (never had, or has again) is released at once.
    const idle = removed.filter((k) => !retiring.has(k));
    if (idle.length > 0) this.o.send({ type: 'released', backends: idle });
    for (const [k, done] of retiring) void done.then(() => this.o.send({ type: 'released', backends: [k] }));
  }

  private limiterFor(spec: RouteSpec): RemoteAdmission | undefined {
    if (spec.rateLimits === undefined) {
      this.limiters.delete(spec.name);
      return undefined;
    }
    let l = this.limiters.get(spec.name);
    if (l === undefined || l.countsTokens !== spec.rateLimits.countsTokens) {
      l = new RemoteAdmission(this, this.o.send, spec.name, spec.rateLimits.countsTokens);
      this.limiters.set(spec.name, l);
    }
    return l;
  }

  private async retire(e: WorkerEntity, b: Backend): Promise<void> {
    e.traffic.removeBackend(b);
    const deadline = Date.now() + this.o.drainTimeoutMs;
    while (b.outstanding > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    b.channel.close();
  }

  private readonly onRequest = (m: unknown): void => {
    const ev = m as GatewayRequestEvent;
    const withBodies = this.inferenceTables.has(ev.endpoint);
    this.requests.push({
      ...ev,
      requestBody: withBodies ? ownBytes(ev.requestBody) : undefined,
      responseBody: withBodies ? ownBytes(ev.responseBody) : undefined,
    });
    this.scheduleFlush();
  };

  private readonly onStream = (m: unknown): void => {
    this.streams.push(m as GatewayStreamEvent);
    this.scheduleFlush();
  };

  /**
   * Sends at the end of this event-loop turn when the last batch went `FLUSH_GAP_MS` ago or more
   * (a lightly loaded worker: the primary counts a request about when its answer leaves), else
   * once that gap has passed (a busy worker: one message per `FLUSH_GAP_MS` carries many requests,
   * instead of one message per request).
   */
  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    const waitMs = this.flushedAtMs + FLUSH_GAP_MS - performance.now();
    if (waitMs <= 0) setImmediate(() => this.flush());
    else setTimeout(() => this.flush(), waitMs);
  }

  private flush(): void {
    this.flushScheduled = false;
    this.flushedAtMs = performance.now();
    if (this.requests.length === 0 && this.streams.length === 0 && this.samples.length === 0) return;
    this.o.send({ type: 'telemetry', requests: this.requests, streams: this.streams, stats: this.samples });
    this.requests = [];
    this.streams = [];
    this.samples = [];
  }

  /** A request waits: with no replica of its entity here, reports at once (see the module comment). */
  private onDemand(key: number): void {
    if (this.entities.get(key)?.backends.size !== 0) return;
    if (Date.now() - this.reportedAtMs >= EARLY_REPORT_GAP_MS) this.reportLoad();
  }

  private reportLoad(): void {
    if (this.closed) return;
    this.reportedAtMs = Date.now();
    const entities: WorkerEntityLoad[] = [];
    for (const e of this.entities.values()) {
      const concurrency = e.traffic.takeAverageConcurrency();
      const queued = e.traffic.queued;
      const inFlight = e.traffic.inFlight;
      if (concurrency > 0 || queued > 0 || inFlight > 0) entities.push({ endpoint: e.endpoint, servedEntity: e.name, concurrency, queued, inFlight });
    }
    this.o.send({ type: 'load', entities });
  }
}

/** A copy of a body that owns its bytes (a pooled Buffer would clone its whole slab). */
function ownBytes(b: Buffer | undefined): Buffer | undefined {
  return b === undefined ? undefined : Buffer.from(new Uint8Array(b));
}

function toError(e: ErrorSpec): FerryError {
  return new FerryError(e.code, e.message, e.retryAfterS === undefined ? {} : { retryAfterS: e.retryAfterS });
}

/** An endpoint's rate limits as the primary holds them: one admission per call. */
class RemoteAdmission implements Admission {
  constructor(
    private readonly gw: WorkerGateway, private readonly send: (msg: WorkerToPrimary) => void,
    private readonly endpoint: string, readonly countsTokens: boolean,
  ) {}

  admit(principal: string): Promise<void> {
    return this.gw.admit(this.endpoint, principal);
  }

  chargeTokens(principal: string, _nowMs: number, tokens: number): void {
    if (tokens > 0) this.send({ type: 'charge', endpoint: this.endpoint, principal, tokens });
  }
}

/** A family entity's member lookup, answered by the primary and kept for `RESOLVE_TTL_MS`. */
class RemoteFamily {
  private readonly cache = new Map<string, { member: FamilyMember; atMs: number }>();

  constructor(private readonly gw: WorkerGateway, private readonly endpoint: string, private readonly servedEntity: string) {}

  async resolve(raw: string, field: string): Promise<FamilyMember> {
    const hit = this.cache.get(raw);
    if (hit !== undefined && Date.now() - hit.atMs < RESOLVE_TTL_MS) return hit.member;
    const answer = await this.gw.ask((id) => ({ type: 'resolve', id, endpoint: this.endpoint, servedEntity: this.servedEntity, raw, field }));
    if (answer.type !== 'member' || answer.member === undefined) {
      throw answer.type === 'member' && answer.error !== undefined ? toError(answer.error) : new FerryError('INTERNAL_ERROR', 'The family lookup got no answer.');
    }
    // Bounded as the primary's cache is: names seen within the TTL; old entries go first.
    if (this.cache.size >= FAMILY_CACHE_MAX) this.cache.delete(this.cache.keys().next().value as string);
    this.cache.set(raw, { member: answer.member, atMs: Date.now() });
    return answer.member;
  }
}

/** Names a worker keeps per family entity (the primary's resolver bounds its own cache alike). */
const FAMILY_CACHE_MAX = 100_000;
