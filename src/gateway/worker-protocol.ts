/**
 * The messages between a server's primary process and its gateway workers (`gatewayWorkers` ≥ 2),
 * sent over node:cluster's IPC channel with the "advanced" (structured clone) serialization, so
 * that request and response bodies travel as bytes.
 *
 * Primary → worker: the routing table as data (`RouteSpec`: what the primary's own table holds,
 * replicas by socket address), sent whole after each change; answers to rate-limit admissions and
 * family lookups; "drop your caches" after a control-plane change; drain.
 * Worker → primary: rate-limit admissions and token charges, family lookups, batches of
 * finished-request events and canary samples, its load per served entity every second, and the
 * replicas it no longer sends to.
 */
import type { ErrorCode } from '../errors.js';
import type { FamilyMember } from '../multi/index.js';
import type { ReplicaAddress } from '../runtime/index.js';
import type { GatewayRequestEvent, GatewayStreamEvent } from './events.js';

/** One ready replica of a served entity; `key` is the primary's name for this backend. */
export interface BackendSpec {
  key: number;
  id: string;
  address: ReplicaAddress;
}

/** One served entity of a route; `key` names its traffic state (the same in every route that shares it). */
export interface EntitySpec {
  key: number;
  name: string;
  modelName: string;
  modelVersion: string;
  trafficPercentage: number;
  statsKey: string;
  /** A family entity: the worker asks the primary which member a request names. */
  family: boolean;
  backends: BackendSpec[];
}

/** One endpoint's route, as the primary's routing table holds it. */
export interface RouteSpec {
  name: string;
  timeoutMs: number;
  entities: EntitySpec[];
  /** `entity` is an index into `entities`. */
  shadows: Array<{ entity: number; mirrorPercentage: number }>;
  fallback: boolean;
  maxBodyBytes: number | undefined;
  /** Undefined: the endpoint has no rate limits (nothing is asked per request). */
  rateLimits: { countsTokens: boolean } | undefined;
  /** The endpoint logs requests to its inference table: request events carry the bodies. */
  inferenceTable: boolean;
}

/** A Ferry error as data (name, message, Retry-After). */
export interface ErrorSpec {
  code: ErrorCode;
  message: string;
  retryAfterS: number | undefined;
}

/** One canary sample: `GatewayStats.record`'s arguments. */
export type StatsSample = [key: string, status: number, latencyMs: number];

/** A served entity's load in one report, as `EntityLoad` of the load reports between servers. */
export interface WorkerEntityLoad {
  endpoint: string;
  servedEntity: string;
  /** Time-weighted requests in flight since the previous report (the autoscaler's input). */
  concurrency: number;
  queued: number;
  /** Requests in flight at the report (the in-flight gauge). */
  inFlight: number;
}

export type PrimaryToWorker =
  | {
    type: 'routes';
    routes: RouteSpec[];
    /** Backends that left the table since the previous message: acknowledge each with `released` once nothing is sent to it. */
    removed: number[];
  }
  /** Answers to one `admit` message, in its order (undefined: admitted). */
  | { type: 'admitted'; answers: Array<{ id: number; error: ErrorSpec | undefined }> }
  | { type: 'member'; id: number; member: FamilyMember | undefined; error: ErrorSpec | undefined }
  | { type: 'authz-changed' }
  | { type: 'drain' };

export type WorkerToPrimary =
  /** The worker's code is loaded: it waits for its init message (one sent earlier could be lost). */
  | { type: 'loaded' }
  | { type: 'listening'; address: string; family: string; port: number }
  /** The worker could not start (e.g. its listen failed: `code` is the errno code); it exits. */
  | { type: 'failed'; message: string; code: string | undefined }
  /** A log line of the worker, written by the primary's log. */
  | { type: 'log'; level: 'debug' | 'info' | 'warn' | 'error'; msg: string; fields: Record<string, unknown> | undefined }
  /** The rate-limit admissions of one event-loop turn, decided in this order. */
  | { type: 'admit'; calls: Array<{ id: number; endpoint: string; principal: string }> }
  | { type: 'charge'; endpoint: string; principal: string; tokens: number }
  | { type: 'resolve'; id: number; endpoint: string; servedEntity: string; raw: string; field: string }
  | { type: 'telemetry'; requests: GatewayRequestEvent[]; streams: GatewayStreamEvent[]; stats: StatsSample[] }
  | { type: 'load'; entities: WorkerEntityLoad[] }
  | { type: 'released'; backends: number[] };
