/** Records and the `MetadataStore` interface; see index.ts for what the store is. */
import type { TrackingStore } from './tracking.js';
import type { Signature } from '../tensor/index.js';
import type { FlavorName } from '../flavors/index.js';

export type ModelVersionStatus = 'PENDING_REGISTRATION' | 'FAILED_REGISTRATION' | 'READY';
export type ModelVersionStage = 'None' | 'Staging' | 'Production' | 'Archived';

export interface RegisteredModelRecord {
  name: string;
  description: string;
  createdMs: number;
  updatedMs: number;
  tags: Record<string, string>;
  /** alias → version number */
  aliases: Record<string, number>;
}

export interface ModelVersionRecord {
  name: string;
  version: number;
  createdMs: number;
  updatedMs: number;
  description: string;
  /** Where the user said the model came from (an mlflow-artifacts: URI or a server-side path). */
  source: string;
  runId: string;
  status: ModelVersionStatus;
  statusMessage: string;
  /** MLflow's (deprecated) stage; 'None' until a transition. */
  stage: ModelVersionStage;
  tags: Record<string, string>;
  /** Set once the artifact is copied into the artifact store and inspected. */
  artifact: VersionArtifact | undefined;
}

/** One version of a bulk registration: already copied and inspected, written READY. */
export interface BulkVersionEntry {
  name: string;
  source: string;
  artifact: VersionArtifact;
  /** Gets CAN_MANAGE on the registered model when the bulk call creates it. */
  creator?: string;
  /**
   * Set for a caller who is not an admin: the grantees that stand for the caller (the principal
   * and `group:users`). An existing model then takes the version only when one of them holds
   * CAN_EDIT or CAN_MANAGE on it, checked inside the transaction, so a model someone else
   * created since the caller's permission check is refused, not written to.
   */
  editors?: readonly string[];
}

/** What Ferry learnt about a version's artifact at registration. */
export interface VersionArtifact {
  /** Artifact-store path of the version's directory, e.g. "models/iris/3". */
  path: string;
  flavor: FlavorName;
  /** Model file inside the directory, e.g. "model.onnx". */
  modelFile: string;
  signature: Signature;
  inputExample: unknown;
  /** sha256 over the directory's files (see artifacts.digestTree), hex. */
  sha256: string;
  sizeBytes: number;
}

export interface TokenRecord {
  id: string;
  principal: string;
  /** sha256 of the secret, hex. The secret itself is never stored. */
  hash: string;
  createdMs: number;
  expiresMs: number | undefined;
  description: string;
}

export type PrincipalKind = 'user' | 'service_principal';

/** A user or a service principal; tokens and grants belong to one. */
export interface PrincipalRecord {
  /** Unique across users and service principals, e.g. "alice@example.com" or "ci-deployer". */
  name: string;
  kind: PrincipalKind;
  /** Admins may do everything, on every object. */
  admin: boolean;
  createdMs: number;
  /** Who created it ('' for the bootstrap admin). */
  createdBy: string;
}

/** Objects that carry permissions (an experiment's object name is its id). */
export type ObjectType = 'serving-endpoint' | 'registered-model' | 'experiment';

/**
 * One grant on one object. `grantee` is a principal name or a group as `group:<name>`
 * (only `group:users`, every authenticated principal, exists). Levels are the control plane's
 * (CAN_VIEW/CAN_QUERY/CAN_MANAGE for endpoints, CAN_READ/CAN_EDIT/CAN_MANAGE for models and
 * experiments).
 */
export interface Grant {
  grantee: string;
  level: string;
}

/** One control-plane change (or attempt) as recorded in the audit log. */
export interface AuditRecord {
  id: number;
  timeMs: number;
  /** Who ('' when the caller was not authenticated). */
  principal: string;
  /** The client's address. */
  sourceAddress: string;
  method: string;
  /** The request path (no query string, no body: secrets never reach the log). */
  path: string;
  /** The route, e.g. "PUT /api/2.0/serving-endpoints/:name/config". */
  action: string;
  status: number;
  /** The error code of a failed change ('' on success). */
  errorCode: string;
  /**
   * How many calls the row stands for: 1, or more for the row that sums up the anonymous calls
   * over the per-minute cap (see src/auth/audit.ts).
   */
  count: number;
}

export interface AuditQuery {
  /** Only entries at or after this time. */
  sinceMs?: number;
  principal?: string;
  maxResults: number;
  /** Cursor from a previous page: entries older than it. */
  pageToken: string | undefined;
}

/** Structured filter, parsed from MLflow's filter strings by the registry. */
export interface ModelFilter {
  name?: { op: '=' | '!=' | 'LIKE' | 'ILIKE'; value: string };
  tags?: Array<{ key: string; value: string }>;
  runId?: string;
}

/** A registered-model search's order: by name or by last update, either way. */
export interface ModelOrder {
  by: 'name' | 'updated';
  descending: boolean;
}

export interface Page {
  maxResults: number;
  /** Opaque cursor from a previous page (an offset). */
  pageToken: string | undefined;
}

export interface PageResult<T> {
  items: T[];
  nextPageToken: string | undefined;
}

/** Databricks `state.config_update`. */
export type ConfigUpdateState = 'NOT_UPDATING' | 'IN_PROGRESS' | 'UPDATE_FAILED' | 'UPDATE_CANCELED';

/**
 * A serving endpoint's desired state. `config` is what serves now; `pendingConfig` is a config
 * being rolled out. The config objects are owned by the control plane (stored as JSON).
 */
export interface EndpointRecord<C = unknown> {
  name: string;
  id: string;
  creator: string;
  createdMs: number;
  updatedMs: number;
  description: string;
  tags: Record<string, string>;
  config: C | undefined;
  pendingConfig: C | undefined;
  configUpdate: ConfigUpdateState;
  /** Why the last update failed or was cancelled ('' otherwise). */
  updateMessage: string;
  /** AI gateway settings (Databricks `ai_gateway`), owned by the control plane. */
  aiGateway: unknown;
}

/** One served entity's load on one server's gateway (see `GatewayLoadReport`). */
export interface EntityLoad {
  endpoint: string;
  servedEntity: string;
  /** Requests the gateway held for the entity (waiting or on a replica), averaged over time since the previous report. */
  concurrency: number;
  /** Requests waiting in the gateway's buffer when the report was taken. */
  queued: number;
}

/**
 * What one server's gateway carried, as it last reported it to the shared store (Kubernetes,
 * several servers): the leader's autoscaler adds the fresh reports of the others to its own load.
 */
export interface GatewayLoadReport {
  /** The reporting server's name (its pod name). */
  server: string;
  /** When the report was taken, ms since the epoch (the reporting server's clock). */
  reportedMs: number;
  entities: EntityLoad[];
}

export interface MetadataStore {
  /** MLflow tracking: experiments and runs (tracking.ts). */
  readonly tracking: TrackingStore;

  /** With `creator`, the creator gets CAN_MANAGE on it in the same transaction. */
  createRegisteredModel(m: { name: string; description: string; tags: Record<string, string>; creator?: string }, nowMs: number): Promise<RegisteredModelRecord>;
  getRegisteredModel(name: string): Promise<RegisteredModelRecord | undefined>;
  updateRegisteredModel(name: string, patch: { description: string }, nowMs: number): Promise<RegisteredModelRecord>;
  /** Deletes the model with its versions, tags, aliases and grants; returns the deleted versions. */
  deleteRegisteredModel(name: string): Promise<ModelVersionRecord[]>;
  searchRegisteredModels(filter: ModelFilter, order: ModelOrder, page: Page): Promise<PageResult<RegisteredModelRecord>>;
  setRegisteredModelTag(name: string, key: string, value: string, nowMs: number): Promise<void>;
  deleteRegisteredModelTag(name: string, key: string, nowMs: number): Promise<void>;

  /** Allocates the next version number (never reused, even after deletes), status PENDING_REGISTRATION. */
  createModelVersion(v: { name: string; source: string; runId: string; description: string; tags: Record<string, string> }, nowMs: number): Promise<ModelVersionRecord>;
  /**
   * Bulk registration (Ferry extension): registers every entry as a READY version with its
   * artifact already in place, in ONE transaction: all entries or none. A missing model is
   * created first (its `creator` gets CAN_MANAGE); each entry takes its model's next version.
   * Returns the versions in entry order; undefined for an entry refused because its model exists
   * and none of its `editors` may edit it (the other entries are written).
   */
  createReadyModelVersions(entries: readonly BulkVersionEntry[], nowMs: number): Promise<Array<number | undefined>>;
  getModelVersion(name: string, version: number): Promise<ModelVersionRecord | undefined>;
  latestModelVersion(name: string): Promise<ModelVersionRecord | undefined>;
  updateModelVersion(name: string, version: number, patch: ModelVersionPatch, nowMs: number): Promise<ModelVersionRecord>;
  deleteModelVersion(name: string, version: number): Promise<ModelVersionRecord | undefined>;
  searchModelVersions(filter: ModelFilter, page: Page): Promise<PageResult<ModelVersionRecord>>;
  /** Versions still PENDING_REGISTRATION (their registration was interrupted by a crash). */
  pendingModelVersions(): Promise<ModelVersionRecord[]>;
  /** Whether any version's artifact path starts with `prefix` (a pack's: is it still in use?); indexed. */
  artifactPathInUse(prefix: string): Promise<boolean>;
  setModelVersionTag(name: string, version: number, key: string, value: string, nowMs: number): Promise<void>;
  deleteModelVersionTag(name: string, version: number, key: string, nowMs: number): Promise<void>;

  /**
   * Renames a model with its versions, tags, aliases and grants (RESOURCE_ALREADY_EXISTS when
   * `newName` is taken). Artifact paths are left as they are: they are recorded per version.
   */
  renameRegisteredModel(name: string, newName: string, nowMs: number): Promise<RegisteredModelRecord>;

  setAlias(name: string, alias: string, version: number, nowMs: number): Promise<void>;
  deleteAlias(name: string, alias: string, nowMs: number): Promise<boolean>;

  /** RESOURCE_ALREADY_EXISTS when the name is taken. The creator gets CAN_MANAGE in the same transaction. */
  createEndpoint(e: EndpointRecord): Promise<void>;
  getEndpoint(name: string): Promise<EndpointRecord | undefined>;
  listEndpoints(): Promise<EndpointRecord[]>;
  /** Replaces the stored record (RESOURCE_DOES_NOT_EXIST when absent). */
  putEndpoint(e: EndpointRecord): Promise<void>;
  /** Deletes the endpoint and its grants. */
  deleteEndpoint(name: string): Promise<boolean>;

  /** RESOURCE_ALREADY_EXISTS when the name is taken. */
  createPrincipal(p: PrincipalRecord): Promise<void>;
  getPrincipal(name: string): Promise<PrincipalRecord | undefined>;
  listPrincipals(): Promise<PrincipalRecord[]>;
  /** RESOURCE_DOES_NOT_EXIST when absent. */
  setPrincipalAdmin(name: string, admin: boolean): Promise<PrincipalRecord>;
  /** Deletes the principal with its tokens and grants, at once; false when absent. */
  deletePrincipal(name: string): Promise<boolean>;

  /** Inserts, or replaces the token with the same id (rotating its secret). */
  putToken(t: TokenRecord): Promise<void>;
  findTokenByHash(hash: string): Promise<TokenRecord | undefined>;
  /** Tokens of one principal, or all, oldest first. */
  listTokens(principal?: string): Promise<TokenRecord[]>;
  /** Deletes one token; returns it, or undefined when absent. */
  deleteToken(id: string): Promise<TokenRecord | undefined>;
  deleteTokensOf(principal: string): Promise<void>;

  /** The grants on one object. */
  getGrants(type: ObjectType, name: string): Promise<Grant[]>;
  /** Replaces the grants on one object. */
  setGrants(type: ObjectType, name: string, grants: Grant[]): Promise<void>;
  /** Objects of `type` on which any of `grantees` holds a grant: name → the grants. */
  grantsOf(type: ObjectType, grantees: string[]): Promise<Map<string, Grant[]>>;

  /**
   * Replaces one server's gateway load report (one row per server: a follower writes it about
   * once a second with all its entities).
   */
  putGatewayLoad(r: GatewayLoadReport): Promise<void>;
  /** Every server's latest report, by server name. */
  listGatewayLoad(): Promise<GatewayLoadReport[]>;
  /** Deletes the reports older than `beforeMs` (servers gone); returns how many. */
  deleteGatewayLoad(beforeMs: number): Promise<number>;

  /** Appends a row; resolves with its id once it is durable. */
  appendAudit(e: Omit<AuditRecord, 'id'>): Promise<number>;
  /** Sets the outcome of a row written before its call ran. */
  finishAudit(id: number, status: number, errorCode: string): Promise<void>;
  /** Deletes the rows older than `beforeMs` (retention); resolves with how many went. */
  deleteAuditBefore(beforeMs: number): Promise<number>;
  /** Newest first. */
  searchAudit(q: AuditQuery): Promise<PageResult<AuditRecord>>;

  close(): Promise<void>;
}

export interface ModelVersionPatch {
  description?: string;
  status?: ModelVersionStatus;
  statusMessage?: string;
  stage?: ModelVersionStage;
  artifact?: VersionArtifact;
}

