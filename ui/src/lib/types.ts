/**
 * The JSON the console reads from the REST API (docs/api.md). The API's shapes come from
 * `src/api` (Node-free, shared with the server's views and the typed client), under the names the
 * pages use; the metrics series and inference table rows, which `src/api` does not declare, are
 * declared here.
 */
export type {
  AutoscalingDecisionView as AutoscalingDecision, AutoscalingTunables, DeploymentState, EndpointConfigInput, EndpointConfigView,
  ModelFamilyView as ModelFamily, ModelVersion, RegisteredModel, ScalingFields, ServedEntityInput, ServedEntityView, SimulateAnswer,
  SimulationResult, ServingEndpoint as Endpoint, TensorSpecJson as TensorSpec, TrafficRouteSpec as Route, Run, Tag as KeyValue, VersionEnvironment,
} from '../../../src/api/index.js';

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
