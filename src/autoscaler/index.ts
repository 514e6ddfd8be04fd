/**
 * The autoscaler plane: a pure scaling policy (samples in, desired replica count out, time
 * injected). The controller drives it once a second per served entity and on a poke.
 */
export {
  DEFAULT_SCALING_TUNABLES,
  SAMPLE_BUCKET_MS,
  WORKLOAD_CONCURRENCY,
  decide,
  newScalerState,
  record,
  scalingSpecFor,
  type Decision,
  type ReplicaCounts,
  type ScalableEntity,
  type ScalerState,
  type ScalingSpec,
  type ScalingTunables,
} from './policy.js';
