/**
 * The routes of a follower: a Ferry server that is not the elected leader (Kubernetes, several
 * servers side by side) runs no controller, yet its gateway serves every endpoint. It builds each
 * endpoint's route from the stored record's serving config (traffic split, request timeout, AI
 * gateway policies; the same `buildEndpointRoute` the leader uses) and the replicas the cluster's
 * EndpointSlices list as ready (one `EntityTraffic` per served entity, a `FramedChannel` per pod),
 * so requests take the same gateway path as on the leader: routing, buffering, retries.
 *
 * Routes follow the store every `refreshIntervalMs` (a config the leader activated, an endpoint
 * created or deleted) and the replicas at each discovery change. What a follower does not see:
 * a canary's intermediate traffic split (it serves the serving config until the leader activates
 * the new one).
 *
 * Scaling is the leader's: every `reportIntervalMs` the follower writes its load per served
 * entity to the store (./load.ts), which the leader's autoscaler adds to its own. A request that
 * has to wait for an entity with no replica here is reported at once, so the leader wakes an
 * entity scaled to zero without waiting for the next report.
 */
import { FramedChannel, framePayloadLimit } from '../channel/index.js';
import type { Authorizer } from '../auth/index.js';
import { drainAndClose, EntityTraffic, type Backend, type EndpointRoute, type RateLimiter, type RoutingTable, type TrafficOptions } from '../gateway/index.js';
import { FamilyResolver } from '../multi/index.js';
import type { DiscoveredReplica } from '../runtime/index.js';
import type { EndpointRecord, EntityLoad, MetadataStore } from '../store/index.js';
import type { AiGatewayConfig } from './ai-gateway.js';
import type { EndpointConfig, ServedEntityConfig } from './config.js';
import { aiGatewayOf, buildEndpointRoute, creatorReads, inferenceTableSettings, rateLimiterFor } from './routes.js';

type StoredEndpoint = EndpointRecord<EndpointConfig>;

/**
 * The least time between a report and an early one for a waiting request: a burst of requests
 * for an entity at zero replicas writes one report, not one per request.
 */
const EARLY_REPORT_GAP_MS = 250;

export interface FollowerOptions {
  store: MetadataStore;
  /** For a family entity's members (served only when the endpoint's creator can read them). */
  authz: Pick<Authorizer, 'require'>;
  table: RoutingTable;
  /** Ready replicas of a served entity (the cluster's EndpointSlices). */
  replicas: { addresses(endpoint: string, servedEntity: string): DiscoveredReplica[] };
  defaultRequestTimeoutMs: number;
  maxBodyBytes: number;
  /** How long a replica that left the EndpointSlices may take to answer the requests it has. */
  drainTimeoutMs: number;
  traffic: Omit<TrafficOptions, 'name' | 'onDemand'>;
  /** How often the stored endpoints are read again, e.g. 2000. */
  refreshIntervalMs: number;
  /** This server's name in its load reports (its pod name). */
  server: string;
  /** How often the load is reported, e.g. `LOAD_REPORT_INTERVAL_MS`. */
  reportIntervalMs: number;
  now: () => number;
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

interface FollowedEntity {
  entity: ServedEntityConfig;
  traffic: EntityTraffic;
  family: FamilyResolver | undefined;
  /** By "host:port". */
  backends: Map<string, Backend>;
}

interface FollowedEndpoint {
  record: StoredEndpoint;
  /** The serving config and AI gateway settings the route was built from (JSON). */
  builtFrom: string;
  aiGateway: AiGatewayConfig;
  rateLimiter: RateLimiter | undefined;
  /** By served-entity name. */
  entities: Map<string, FollowedEntity>;
  route: EndpointRoute;
}

export class RouteFollower {
  private readonly endpoints = new Map<string, FollowedEndpoint>();
  private timer: NodeJS.Timeout | undefined;
  private reportTimer: NodeJS.Timeout | undefined;
  /** A load report is being written (one at a time). */
  private reporting = false;
  /** The last report written had no entity in it (an idle follower writes nothing more). */
  private reportedIdle = false;
  /** When the last report was taken. */
  private reportedAtMs = -Infinity;
  private stopped = false;

  constructor(private readonly options: FollowerOptions) {}

  /** Builds the routes of the stored endpoints, then keeps them current until `handOver` or `close`. */
  async start(): Promise<void> {
    await this.refresh();
    if (this.stopped) return;
    this.timer = setInterval(() => {
      this.refresh().catch((err: unknown) => this.options.log('error', 'reading the stored endpoints failed', { error: String(err) }));
    }, this.options.refreshIntervalMs);
    this.timer.unref();
    this.reportTimer = setInterval(() => this.reportLoad(), this.options.reportIntervalMs);
    this.reportTimer.unref();
  }

  /** The discovered replicas changed: adds and removes backends of every followed entity. */
  syncReplicas(): void {
    if (this.stopped) return;
    for (const [name, fe] of this.endpoints) for (const e of fe.entities.values()) this.syncEntity(name, e);
  }

  /** The endpoint's inference table settings (undefined: no such endpoint), as the leader answers them. */
  inferenceTableOf(name: string): ReturnType<typeof inferenceTableSettings> | undefined {
    const r = this.endpoints.get(name)?.record;
    return r === undefined ? undefined : inferenceTableSettings(r);
  }

  /**
   * This server became leader: stop following. The routes stay in the table, serving, until the
   * controller publishes its own; the backends of each replaced route then drain and close.
   */
  handOver(): void {
    this.stopped = true;
    clearInterval(this.timer);
    clearInterval(this.reportTimer); // the controller counts this gateway's load now; the last report ages out
    this.timer = setInterval(() => {
      for (const [name, fe] of this.endpoints) {
        if (this.options.table.get(name) === fe.route) continue;
        this.endpoints.delete(name);
        this.retireEndpoint(fe);
      }
      if (this.endpoints.size === 0) clearInterval(this.timer);
    }, 1000);
    this.timer.unref();
  }

  /** Stops following and closes every replica channel. */
  close(): void {
    this.stopped = true;
    clearInterval(this.timer);
    clearInterval(this.reportTimer);
    for (const fe of this.endpoints.values()) for (const e of fe.entities.values()) for (const b of e.backends.values()) b.channel.close();
    this.endpoints.clear();
  }

  private async refresh(): Promise<void> {
    const records = (await this.options.store.listEndpoints()) as StoredEndpoint[];
    if (this.stopped) return;
    const serving = new Set<string>();
    for (const record of records) {
      if (record.config === undefined) continue; // not serving yet: its first config is rolling out on the leader
      serving.add(record.name);
      this.follow(record, record.config);
    }
    for (const [name, fe] of this.endpoints) {
      if (serving.has(name)) continue;
      this.endpoints.delete(name);
      if (this.options.table.get(name) === fe.route) this.options.table.delete(name);
      this.retireEndpoint(fe);
    }
  }

  /** Publishes the route of a serving config unless it is the one already published. */
  private follow(record: StoredEndpoint, config: EndpointConfig): void {
    const name = record.name;
    const prev = this.endpoints.get(name);
    const aiGateway = aiGatewayOf(record);
    const builtFrom = JSON.stringify([config, aiGateway]);
    if (prev !== undefined) prev.record = record;
    if (prev?.builtFrom === builtFrom) return;
    // Rate-limit buckets survive a config change, not a change of the limits (as on the leader).
    const rateLimiter = prev !== undefined && JSON.stringify(prev.aiGateway.rateLimits) === JSON.stringify(aiGateway.rateLimits)
      ? prev.rateLimiter : rateLimiterFor(name, aiGateway);
    const entities = new Map<string, FollowedEntity>();
    for (const entity of config.servedEntities) {
      const kept = prev?.entities.get(entity.name);
      entities.set(entity.name, kept !== undefined && JSON.stringify(kept.entity) === JSON.stringify(entity) ? kept : this.newEntity(record, entity));
    }
    const weighted = config.routes.flatMap((r) => {
      const e = entities.get(r.servedEntityName);
      return e === undefined ? [] : [{ endpoint: name, entity: e.entity, trafficPercentage: r.trafficPercentage, traffic: e.traffic, family: e.family }];
    });
    const route = buildEndpointRoute(name, config, weighted, this.options.defaultRequestTimeoutMs, aiGateway, rateLimiter);
    for (const e of entities.values()) this.syncEntity(name, e);
    this.endpoints.set(name, { record, builtFrom, aiGateway, rateLimiter, entities, route });
    this.options.table.set(route);
    for (const e of prev?.entities.values() ?? []) if (![...entities.values()].includes(e)) this.retireEntity(e);
  }

  private newEntity(record: StoredEndpoint, entity: ServedEntityConfig): FollowedEntity {
    return {
      entity,
      // A request waits: with no replica here, tell the leader now (see the module comment).
      traffic: new EntityTraffic({ ...this.options.traffic, name: `${record.name}/${entity.name}`, onDemand: () => this.onDemand(record.name, entity.name) }),
      family: entity.family === undefined ? undefined : new FamilyResolver(entity.family, this.options.store, creatorReads(this.options.store, this.options.authz, record.creator)),
      backends: new Map(),
    };
  }

  /** A request waits: with no replica of its entity here, reports at once (at most every `EARLY_REPORT_GAP_MS`, however many wait). */
  private onDemand(endpoint: string, servedEntity: string): void {
    if (this.endpoints.get(endpoint)?.entities.get(servedEntity)?.backends.size !== 0) return;
    if (this.options.now() - this.reportedAtMs >= EARLY_REPORT_GAP_MS) this.reportLoad();
  }

  /**
   * Writes this gateway's load per served entity: the time-weighted in-flight concurrency since
   * the previous report and the requests waiting now. Entities without load are left out; an
   * idle follower writes one empty report, then nothing until it has load again.
   */
  private reportLoad(): void {
    if (this.stopped || this.reporting) return;
    const entities: EntityLoad[] = [];
    for (const [endpoint, fe] of this.endpoints) {
      for (const [servedEntity, e] of fe.entities) {
        const concurrency = e.traffic.takeAverageConcurrency();
        const queued = e.traffic.queued;
        if (concurrency > 0 || queued > 0) entities.push({ endpoint, servedEntity, concurrency, queued });
      }
    }
    if (entities.length === 0 && this.reportedIdle) return;
    this.reporting = true;
    this.reportedAtMs = this.options.now();
    this.options.store.putGatewayLoad({ server: this.options.server, reportedMs: this.reportedAtMs, entities }).then(
      () => {
        this.reportedIdle = entities.length === 0;
      },
      (err: unknown) => this.options.log('warn', 'reporting the gateway load failed', { error: String(err) }),
    ).finally(() => {
      this.reporting = false;
    });
  }

  /** Makes the entity's backends the discovered ready replicas: new ones added, gone ones drained. */
  private syncEntity(endpoint: string, e: FollowedEntity): void {
    const found = new Map(this.options.replicas.addresses(endpoint, e.entity.name).map((a) => [`${a.host}:${a.port}`, a]));
    for (const [key, b] of e.backends) {
      if (found.has(key)) continue;
      e.backends.delete(key);
      void this.retireBackend(e, b);
    }
    for (const [key, a] of found) {
      if (e.backends.has(key)) continue;
      const backend: Backend = {
        id: a.pod ?? key, outstanding: 0,
        channel: new FramedChannel({ kind: 'tcp', host: a.host, port: a.port }, { maxPayloadBytes: framePayloadLimit(this.options.maxBodyBytes) }),
      };
      e.backends.set(key, backend);
      e.traffic.addBackend(backend);
    }
  }

  private retireEndpoint(fe: FollowedEndpoint): void {
    for (const e of fe.entities.values()) this.retireEntity(e);
  }

  private retireEntity(e: FollowedEntity): void {
    for (const b of e.backends.values()) void this.retireBackend(e, b);
    e.backends.clear();
  }

  /** Out of rotation at once; the channel closes once its requests are answered (or the drain time is up). */
  private async retireBackend(e: FollowedEntity, b: Backend): Promise<void> {
    e.traffic.removeBackend(b);
    await drainAndClose([b], this.options.drainTimeoutMs);
  }
}
