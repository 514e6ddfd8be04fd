/**
 * The JSON the console reads from the REST API (docs/api.md). The API's shapes come from
 * `src/api` (Node-free, shared with the server's views and the typed client), under the names the
 * pages use.
 */
export type {
  AutoscalingDecisionView as AutoscalingDecision, AutoscalingTunables, CreateModelVersionRequest, DeploymentState, EndpointConfigInput, EndpointConfigView,
  InferenceTablePage, MetricsSeries as Series, ModelFamilyView as ModelFamily, ModelVersion, ModelVersionResponse, Principal,
  RegisteredModelResponse, RunResponse, ScalingFields, SearchModelVersionsResponse, SearchRegisteredModelsResponse, SeriesPoint, ServedEntityInput,
  ServedEntityView, SimulateAnswer, SimulationResult, ServingEndpoint as Endpoint, TensorSpecJson as TensorSpec, TrafficRouteSpec as Route,
  Tag as KeyValue, VersionEnvironment,
} from '../../../src/api/index.js';
