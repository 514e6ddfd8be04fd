/**
 * What the controller knows about each endpoint: its stored record (desired state), the replicas
 * of each served entity (observed state) and the update rolling out. The controller's parts
 * (./lifecycle.ts, ./replicas.ts, ./rollout.ts, ./scaling.ts, ./views.ts) share these objects and
 * nothing else; each part changes only the fields of its own job.
 */
import type { Decision, ScalerState } from '../autoscaler/index.js';
import { newScalerState } from '../autoscaler/index.js';
import { EntityTraffic, type Backend, type RateLimiter, type TrafficOptions } from '../gateway/index.js';
import { FamilyResolver } from '../multi/index.js';
import type { ReplicaHandle } from '../runtime/index.js';
import type { EndpointRecord, MetadataStore } from '../store/index.js';
import type { DeploymentState } from '../api/index.js';
import type { EndpointConfig, ServedEntityConfig } from './config.js';
import { aiGatewayOf, rateLimiterFor } from './routes.js';

export type { DeploymentState } from '../api/index.js';

/** An endpoint as the metadata store keeps it, with its configs compiled. */
export type StoredEndpoint = EndpointRecord<EndpointConfig>;

/** Decisions and cold starts kept per entity for the endpoint view. */
export const HISTORY = 10;

/** One replica of a served entity: asked of the runtime, then (once ready) a backend of the gateway. */
export interface ReplicaSlot {
  id: string;
  handle: ReplicaHandle | undefined;
  backend: Backend | undefined;
  readyAtMs: number;
}

/**
 * The running replicas of one served entity of one config, with their gateway traffic and their
 * scaling state. A config update that keeps the entity (same version, same workload) keeps this
 * object; any other change makes a new one.
 */
/**
 * Gateway workers: their requests in flight and queued for a served entity (as of their last load
 * reports), added to this process's own in the gauges and the endpoint view.
 */
export type WorkerLoad = (endpoint: string, servedEntity: string) => { inFlight: number; queued: number };

export class EntityReplicas {
  readonly traffic: EntityTraffic;
  readonly replicas = new Map<string, ReplicaSlot>();
  state: DeploymentState = 'DEPLOYMENT_CREATING';
  message = '';
  desiredReplicas: number;
  readonly scaler: ScalerState;
  /** The last decisions that changed the desired count, newest last (for the endpoint view). */
  readonly decisions: Array<Decision & { timeMs: number }> = [];
  /** Durations of the last starts from zero ready replicas, ms (cold starts). */
  readonly coldStartsMs: number[] = [];
  /**
   * How the entity was validated before it got traffic ("Validated: ..."), shown while `message`
   * (the last problem) is empty; empty until a validation passed.
   */
  validationNote = '';
  failedStarts = 0;
  restartTimer: NodeJS.Timeout | undefined;
  stopped = false;
  /** When its replicas broke the runtime's control protocol, within the quarantine window. */
  readonly violationsMs: number[] = [];
  /** Set once quarantined: nothing starts it again (a config update makes a new object). */
  quarantined = false;

  /** A family entity's member lookup (the gateway's, shared by its replicas' staging requests). */
  readonly family: FamilyResolver | undefined;

  constructor(
    readonly endpoint: string, readonly entity: ServedEntityConfig, traffic: Omit<TrafficOptions, 'name' | 'onDemand'>,
    onDemand: (d: EntityReplicas) => void, store: MetadataStore, ownerReads: (model: string) => Promise<boolean>,
    private readonly workerLoad?: WorkerLoad,
  ) {
    this.traffic = new EntityTraffic({ ...traffic, name: `${endpoint}/${entity.name}`, onDemand: () => onDemand(this) });
    this.family = entity.family === undefined ? undefined : new FamilyResolver(entity.family, store, ownerReads);
    this.desiredReplicas = Math.max(entity.scaling.minReplicas, 1);
    this.scaler = newScalerState(entity.scaling);
  }

  /** Requests in flight for this entity in every gateway of this server (its workers' as last reported). */
  get inFlight(): number {
    return this.traffic.inFlight + (this.workerLoad?.(this.endpoint, this.entity.name).inFlight ?? 0);
  }

  /** Requests waiting in the activator buffers of every gateway of this server. */
  get queued(): number {
    return this.traffic.queued + (this.workerLoad?.(this.endpoint, this.entity.name).queued ?? 0);
  }

  /** Replicas asked for and not ready yet. */
  get startingReplicas(): number {
    return this.replicas.size - this.traffic.backends.length;
  }

  get readyReplicas(): number {
    return this.traffic.backends.length;
  }

  /** Same model version and workload: replicas can be kept across configs. */
  sameAs(entity: ServedEntityConfig): boolean {
    const a = this.entity;
    return a.name === entity.name && a.entityName === entity.entityName && a.entityVersion === entity.entityVersion
      && a.workloadType === entity.workloadType && a.workloadSize === entity.workloadSize && a.artifactPath === entity.artifactPath
      && JSON.stringify(a.batching) === JSON.stringify(entity.batching) && JSON.stringify(a.scaling) === JSON.stringify(entity.scaling)
      && JSON.stringify(a.family) === JSON.stringify(entity.family);
  }
}

/** Makes the replicas object of a served entity of an endpoint (wired to the scaling loop's poke). */
export type NewEntityReplicas = (st: EndpointState, entity: ServedEntityConfig) => EntityReplicas;

/** One update in progress: the config it rolls out and what it started. */
export interface RolloutRun {
  target: EndpointConfig;
  /** Entities this update started (kept ones are not here): they go if it fails. */
  started: EntityReplicas[];
  /** Aborted by a cancel, a delete, or the server closing. */
  abort: AbortController;
  /** A canary step has published a route with old and new entities side by side. */
  shifted: boolean;
  /** Settles once the rollout has finished or unwound. */
  done: Promise<void>;
}

export class EndpointState {
  /** Replicas of the serving config, by served-entity name. */
  current = new Map<string, EntityReplicas>();
  /** Replicas of the pending config while it rolls out (or after it failed). */
  pending = new Map<string, EntityReplicas>();
  /** The update rolling out now. */
  run: RolloutRun | undefined;
  deleted = false;
  /**
   * The endpoint's rate-limit buckets, kept across route swaps (a config update must not refill
   * them); replaced when the AI gateway settings change. Undefined when it has no limits.
   */
  rateLimiter: RateLimiter | undefined;
  constructor(public record: StoredEndpoint) {
    this.rateLimiter = rateLimiterFor(record.name, aiGatewayOf(record));
  }
}

/** The controller's log function (the server's JSON lines). */
export type ControlLog = (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

/** "iris version 3", or "family ads-*" for a family entity. */
export function describeEntity(e: ServedEntityConfig): string {
  return e.family === undefined ? `${e.entityName} version ${e.entityVersion}` : e.entityName;
}
