/**
 * The JSON the console reads from the REST API (docs/api.md), as much of it as the pages use.
 * Declared here rather than imported from src/client: that module is Node code, and the console
 * runs in a browser.
 */

export interface TensorSpec {
  name: string;
  dtype: string;
  shape?: number[];
}

export interface ModelVersion {
  name: string;
  version: string;
  creation_timestamp: number;
  description: string;
  source: string;
  /** The MLflow run the version was logged by ('' when none). */
  run_id?: string;
  status: 'PENDING_REGISTRATION' | 'FAILED_REGISTRATION' | 'READY';
  status_message: string;
  aliases: string[];
  flavor?: string;
  signature?: { inputs: TensorSpec[]; outputs: TensorSpec[] };
  input_example?: unknown;
  artifact_size_bytes?: number;
}

/** An MLflow run (`GET /api/2.0/mlflow/runs/get`), the parts the console shows. */
export interface Run {
  info: { run_id: string; run_name: string; experiment_id: string; status: string; start_time: number; user_id: string };
  data: { params: KeyValue[]; metrics: Array<{ key: string; value: number; step: number }>; tags: KeyValue[] };
}

export interface KeyValue {
  key: string;
  value: string;
}

export interface RegisteredModel {
  name: string;
  description: string;
  last_updated_timestamp: number;
  latest_versions?: ModelVersion[];
  aliases?: Array<{ alias: string; version: string }>;
}

export interface AutoscalingDecision {
  timestamp: number;
  desired_replicas: number;
  panic: boolean;
  reason: string;
  stable_concurrency: number;
  panic_concurrency: number;
  ready_replicas: number;
  starting_replicas: number;
}

export type DeploymentState = 'DEPLOYMENT_CREATING' | 'DEPLOYMENT_READY' | 'DEPLOYMENT_RECOVERING' | 'DEPLOYMENT_FAILED' | 'DEPLOYMENT_ABORTED';

/** A served entity as the endpoint describes it: its config, then live state. */
/** A family entity's members and cache (docs/multi-model.md). */
export interface ModelFamily {
  name_prefix?: string;
  tag?: string;
  cache_size: number;
  session_fallback: boolean;
}

export interface ServedEntityView {
  name: string;
  /** Absent on a family entity, which has `model_family` instead. */
  entity_name?: string;
  entity_version?: string;
  entity_alias?: string;
  /** Set with `entity_alias`: whether moving the alias rolls the endpoint forward. */
  follow_alias?: boolean;
  model_family?: ModelFamily;
  workload_size: string;
  workload_type: string;
  scale_to_zero_enabled: boolean;
  min_provisioned_concurrency?: number;
  max_provisioned_concurrency?: number;
  batching?: { enabled: boolean; max_batch_size: number; max_queue_delay_us: number; preferred_batch_sizes: number[] };
  validation_request?: Record<string, unknown>;
  autoscaling?: AutoscalingTunables & {
    min_replicas: number;
    max_replicas: number;
    desired_replicas: number;
    ready_replicas: number;
    starting_replicas: number;
    in_flight_requests: number;
    queued_requests: number;
    last_decisions: AutoscalingDecision[];
  };
  state: {
    deployment: DeploymentState; deployment_state_message: string; replicas: { ready: number; total: number; desired: number };
    family?: { replicas: Array<{ replica: string; models_loaded: number; bytes: number; budget_bytes: number }>; hit_rate: number | null; loads: number; evictions: number };
  };
}

export interface Route {
  served_entity_name: string;
  traffic_percentage: number;
}

export interface EndpointConfigView {
  config_version: number;
  served_entities: ServedEntityView[];
  traffic_config: { routes: Route[]; shadow_routes?: Array<{ served_entity_name: string; mirror_percentage: number }> };
  request_timeout_ms?: number;
  rollout?: Record<string, unknown>;
}

export interface Endpoint {
  name: string;
  creator: string;
  creation_timestamp: number;
  last_updated_timestamp: number;
  state: { ready: 'READY' | 'NOT_READY'; config_update: 'NOT_UPDATING' | 'IN_PROGRESS' | 'UPDATE_FAILED' | 'UPDATE_CANCELED'; config_update_message?: string };
  config?: EndpointConfigView;
  pending_config?: EndpointConfigView & { start_time?: number };
  ai_gateway?: { inference_table_config?: { enabled?: boolean } };
}

/** One point of `GET .../metrics/series` (one interval). */
export interface SeriesPoint {
  timestamp_ms: number;
  qps: number;
  p50_ms: number | null;
  p99_ms: number | null;
  error_rate: number;
  replicas_ready: number;
  replicas_desired: number;
  in_flight: number;
  queued: number;
}

export interface Series {
  endpoint: string;
  interval_s: number;
  points: SeriesPoint[];
}

export interface InferenceRow {
  request_id: string;
  client_request_id?: string;
  timestamp_ms: number;
  status_code: number;
  execution_time_ms: number;
  served_entity: string;
  model_name: string;
  model_version: string;
  request: unknown;
  response: unknown;
}

/** A served entity as a config input (`PUT .../config`). */
export interface ServedEntityInput {
  name?: string;
  entity_name?: string;
  entity_version?: string;
  follow_alias?: boolean;
  model_family?: ModelFamily;
  workload_size?: string;
  workload_type?: string;
  scale_to_zero_enabled?: boolean;
  min_provisioned_concurrency?: number;
  max_provisioned_concurrency?: number;
  autoscaling?: AutoscalingTunables;
  batching?: ServedEntityView['batching'];
  validation_request?: Record<string, unknown>;
}

export interface EndpointConfigInput {
  served_entities: ServedEntityInput[];
  traffic_config?: { routes: Route[]; shadow_routes?: Array<{ served_entity_name: string; mirror_percentage: number }> };
  request_timeout_ms?: number;
  rollout?: Record<string, unknown>;
}

/** A served entity's autoscaling settings (docs/api.md), as the endpoint view reports them in effect. */
export interface AutoscalingTunables {
  target_concurrency: number;
  stable_window_ms: number;
  panic_window_ms: number;
  panic_threshold: number;
  scale_down_delay_ms: number;
  scale_to_zero_grace_ms: number;
  max_scale_up_rate: number;
}

/** One simulated config's numbers (`POST .../simulate`, docs/simulator.md). */
export interface SimulationResult {
  requests: number;
  served: number;
  refused_buffer_full: number;
  refused_deadline: number;
  waited: number;
  mean_wait_ms: number;
  max_wait_ms: number;
  p50_ms: number | null;
  p99_ms: number | null;
  replica_seconds: number;
  cost: number | null;
  replica_starts: number;
  cold_starts: number;
  cold_starts_per_hour: number;
  max_replicas: number;
  duration_s: number;
  interval_s: number;
  timeline: Array<{ t_s: number; replicas: number; ready: number; concurrency: number; rps: number; p99_ms: number | null }>;
}

/** The served-entity fields a simulation varies, in API shape. */
export interface ScalingFields {
  workload_size?: string;
  workload_type?: string;
  scale_to_zero_enabled?: boolean;
  min_provisioned_concurrency?: number;
  max_provisioned_concurrency?: number;
  autoscaling?: Partial<AutoscalingTunables>;
}

/** The answer of `POST /api/2.0/serving-endpoints/{name}/simulate`. */
export interface SimulateAnswer {
  endpoint: string;
  served_entity_name: string;
  trace: { source: string; requests: number; duration_s: number };
  replica_model: { service_time_source: string; cold_start_ms: number[]; cold_start_source: string; max_concurrency_per_replica: number };
  current: { config: ScalingFields; result: SimulationResult } | null;
  candidate: { config: ScalingFields; result: SimulationResult };
  recommendation: null | {
    goal: { target_p99_ms: number };
    setting: { target_concurrency: number; scale_to_zero_enabled: boolean; stable_window_ms: number; scale_down_delay_ms: number } | null;
    config: ScalingFields | null;
    result: SimulationResult | null;
    static_peak: { replicas: number; result: SimulationResult } | null;
    knative_defaults: SimulationResult;
    savings_vs_static_peak: number | null;
  };
}
