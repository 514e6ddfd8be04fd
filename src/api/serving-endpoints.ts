/**
 * The serving-endpoints API's shapes (`/api/2.0/serving-endpoints`, Databricks' names), as they
 * travel: what a client sends (`...Input`) and what the server answers (`...View`). A view's
 * `config` is the spec a client may send back unchanged with `PUT .../config`; the status fields
 * mixed into it (`state`, the live counters of `autoscaling`, `config_version`, `start_time`) are
 * read-only: listed in `READ_ONLY_CONFIG_FIELDS`, accepted in a PUT and ignored.
 */

export interface Tag {
  key: string;
  value: string;
}

/** The answer of a call that changes something and returns nothing: `{}`. */
export type EmptyResponse = Record<string, never>;

export type WorkloadSizeName = 'Small' | 'Medium' | 'Large';
export type WorkloadTypeName = 'CPU' | 'GPU_SMALL' | 'GPU_MEDIUM' | 'GPU_LARGE';

/** A served entity's deployment state (`served_entities[].state.deployment`). */
export type DeploymentState = 'DEPLOYMENT_CREATING' | 'DEPLOYMENT_READY' | 'DEPLOYMENT_RECOVERING' | 'DEPLOYMENT_FAILED' | 'DEPLOYMENT_ABORTED';

/** Where the endpoint's last config update is (`state.config_update`). */
export type ConfigUpdateState = 'NOT_UPDATING' | 'IN_PROGRESS' | 'UPDATE_FAILED' | 'UPDATE_CANCELED';

// ---- spec: what a config says --------------------------------------------------------------

/** A served entity that serves many registered models, each request naming one (Ferry extension). */
export interface ModelFamilyInput {
  name_prefix?: string;
  /** "key=value": models carrying this tag. */
  tag?: string;
  /** Bytes of models each replica keeps loaded: "64MiB" or a byte count. */
  cache_size?: string | number;
  session_fallback?: boolean;
}

/** A family as the view shows it: the cache size in bytes. */
export interface ModelFamilyView {
  name_prefix?: string;
  tag?: string;
  cache_size: number;
  session_fallback: boolean;
}

/** Dynamic batching in the replica (Ferry extension). */
export interface BatchingSpec {
  enabled: boolean;
  max_batch_size: number;
  max_queue_delay_us: number;
  preferred_batch_sizes: number[];
}

/** A served entity's autoscaling tunables (Ferry extension); the view shows those in effect. */
export interface AutoscalingTunables {
  target_concurrency: number;
  stable_window_ms: number;
  panic_window_ms: number;
  panic_threshold: number;
  scale_down_delay_ms: number;
  scale_to_zero_grace_ms: number;
  max_scale_up_rate: number;
}

/** One served entity of a config input: a model version (`entity_name` + `entity_version`) or a `model_family`. */
export interface ServedEntityInput {
  name?: string;
  entity_name?: string;
  entity_version?: string | number;
  /**
   * With a numeric `entity_version`: the alias that version was resolved from (as a view shows
   * it); it must still point to that version.
   */
  entity_alias?: string;
  /** With an alias (in `entity_version`, or `entity_alias`): roll forward when the alias moves (Ferry extension). */
  follow_alias?: boolean;
  model_family?: ModelFamilyInput;
  workload_size?: WorkloadSizeName;
  workload_type?: WorkloadTypeName;
  scale_to_zero_enabled?: boolean;
  min_provisioned_concurrency?: number;
  max_provisioned_concurrency?: number;
  autoscaling?: Partial<AutoscalingTunables>;
  batching?: Partial<BatchingSpec>;
  /** An MLflow scoring body a new replica must answer with 200 before it gets traffic. */
  validation_request?: Record<string, unknown>;
}

export interface TrafficRouteSpec {
  served_entity_name: string;
  traffic_percentage: number;
}

/** Mirrors a share of the requests to an entity; its answers are discarded (Ferry extension). */
export interface ShadowRouteSpec {
  served_entity_name: string;
  mirror_percentage: number;
}

export interface CanaryStepSpec {
  traffic_percentage: number;
  duration_ms: number;
}

/** How an update that replaces served entities moves traffic (Ferry extension). */
export interface RolloutSpec {
  canary_steps: CanaryStepSpec[];
  max_error_rate?: number;
  max_p99_latency_ratio?: number;
}

/** The body of `PUT .../config`, and `config` of a create. */
export interface EndpointConfigInput {
  /** The endpoint's own name (Databricks SDKs send it); optional. */
  name?: string;
  served_entities: ServedEntityInput[];
  traffic_config?: {
    routes: Array<{ served_entity_name?: string; served_model_name?: string; traffic_percentage: number }>;
    shadow_routes?: ShadowRouteSpec[];
  };
  request_timeout_ms?: number;
  rollout?: RolloutSpec;
}

/** Databricks `ai_gateway` settings, as sent and as answered (unset parts are left out of answers). */
export interface AiGatewaySettings {
  fallback_config?: { enabled: boolean };
  rate_limits?: Array<{ calls?: number; tokens?: number; renewal_period: 'minute'; key?: 'user' | 'endpoint' }>;
  input_limits?: { max_body_bytes?: number };
  inference_table_config?: { enabled: boolean; sample_fraction?: number };
}

/** The body of `POST /api/2.0/serving-endpoints`. */
export interface CreateEndpointRequest {
  name: string;
  config: EndpointConfigInput;
  ai_gateway?: AiGatewaySettings;
  description?: string;
  tags?: Tag[];
}

/** The body of `PATCH .../tags`: tags to add (or overwrite) and keys to delete. */
export interface PatchTagsRequest {
  add_tags?: Tag[];
  delete_tags?: string[];
}

// ---- status: what is running ---------------------------------------------------------------

/** An autoscaling decision that changed the desired count. */
export interface AutoscalingDecisionView {
  timestamp: number;
  desired_replicas: number;
  panic: boolean;
  reason: string;
  stable_concurrency: number;
  panic_concurrency: number;
  ready_replicas: number;
  starting_replicas: number;
}

/** The live part of a served entity's `autoscaling` (read-only). */
export interface AutoscalingStatus {
  /** Bounds from the workload size or the provisioned concurrency. */
  min_replicas: number;
  max_replicas: number;
  desired_replicas: number;
  ready_replicas: number;
  starting_replicas: number;
  in_flight_requests: number;
  queued_requests: number;
  /** Durations of the last starts from zero ready replicas, ms, newest last. */
  cold_starts_ms: number[];
  last_decisions: AutoscalingDecisionView[];
}

/** A family entity's model caches, read from its replicas when the endpoint is read. */
export interface FamilyCacheView {
  replicas: Array<{ replica: string; models_loaded: number; bytes: number; budget_bytes: number }>;
  hits: number;
  misses: number;
  /** hits / (hits + misses); null before the first request. */
  hit_rate: number | null;
  loads: number;
  load_failures: number;
  evictions: number;
  load_seconds_avg: number | null;
  load_seconds_max: number;
}

export interface ServedEntityState {
  deployment: DeploymentState;
  deployment_state_message: string;
  replicas: { ready: number; total: number; desired: number };
  family?: FamilyCacheView;
}

/** A served entity as the endpoint view shows it: its spec with versions resolved, then its status. */
export interface ServedEntityView {
  name: string;
  /** Absent on a family entity (which has `model_family`). */
  entity_name?: string;
  entity_version?: string;
  /** The alias the config named, when it named one (resolved once, at config time). */
  entity_alias?: string;
  /** Set with `entity_alias`: whether moving the alias rolls the endpoint forward. */
  follow_alias?: boolean;
  model_family?: ModelFamilyView;
  workload_size: WorkloadSizeName;
  workload_type: WorkloadTypeName;
  scale_to_zero_enabled: boolean;
  min_provisioned_concurrency?: number;
  max_provisioned_concurrency?: number;
  batching: BatchingSpec;
  validation_request?: Record<string, unknown>;
  /** The tunables in effect and the live counters; absent until the entity's replicas exist. */
  autoscaling?: AutoscalingTunables & AutoscalingStatus;
  /** Read-only. */
  state: ServedEntityState;
}

export interface EndpointConfigView {
  /** Read-only. */
  config_version: number;
  served_entities: ServedEntityView[];
  traffic_config: {
    routes: Array<TrafficRouteSpec & { served_model_name: string }>;
    shadow_routes?: ShadowRouteSpec[];
  };
  request_timeout_ms?: number;
  rollout?: Required<RolloutSpec>;
}

export interface EndpointStateView {
  ready: 'READY' | 'NOT_READY';
  config_update: ConfigUpdateState;
  config_update_message?: string;
}

/** `GET /api/2.0/serving-endpoints/{name}` (and the answer of every write). */
export interface ServingEndpoint {
  name: string;
  id: string;
  creator: string;
  creation_timestamp: number;
  last_updated_timestamp: number;
  description?: string;
  tags: Tag[];
  ai_gateway: AiGatewaySettings;
  state: EndpointStateView;
  config?: EndpointConfigView;
  /** The config rolling out (or the one that failed or was canceled); `start_time` is read-only. */
  pending_config?: EndpointConfigView & { start_time: number };
}

/** `GET /api/2.0/serving-endpoints`. */
export interface ListEndpointsResponse {
  endpoints: ServingEndpoint[];
}

/**
 * The read-only fields of a config view, by where they sit. A `PUT .../config` accepts them (so
 * a client can send a view's `config` back unchanged) and ignores their values.
 */
export const READ_ONLY_CONFIG_FIELDS = Object.freeze({
  config: ['config_version', 'start_time'],
  servedEntity: ['state'],
  autoscaling: ['min_replicas', 'max_replicas', 'desired_replicas', 'ready_replicas', 'starting_replicas', 'in_flight_requests', 'queued_requests', 'cold_starts_ms', 'last_decisions'],
} as const);
