/**
 * The control plane: the serving-endpoints API, config validation, and the controller that
 * converges desired endpoint configs into running replicas and routes.
 */
export { EndpointController, type ControllerOptions, type DeploymentState, type EndpointView, type EntityGauges, type ModelCheck } from './controller.js';
export { endpointRoutes } from './api.js';
export { AliasFollower, endpointsServing, followBody, followsTo, type AliasFollowerOptions } from './alias-follow.js';
export { RouteFollower, type FollowerOptions } from './follower.js';
export { LOAD_REPORT_INTERVAL_MS, PEER_LOAD_MAX_AGE_MS, PeerLoad, peerDemand, loadKey, type PeerLoadOptions } from './load.js';
export { buildEndpointRoute, type RoutedEntity } from './routes.js';
export { compileConfig, scalingConfigOf, type CanaryStep, type ScalingFields, type EndpointConfig, type RolloutConfig, type ServedEntityConfig, type TrafficRoute, WORKLOAD_SIZES, type WorkloadSize } from './config.js';
export { ENDPOINT_DELETED_CHANNEL, REPLICA_EXIT_CHANNEL, REPLICA_READY_CHANNEL, type EndpointDeletedEvent, type ReplicaExitEvent, type ReplicaReadyEvent } from './events.js';
