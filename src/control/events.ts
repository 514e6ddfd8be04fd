/**
 * What the controller tells observers about replicas and endpoints on node:diagnostics_channel
 * (names and payloads: src/diagnostics.ts): metrics subscribe; the controller knows none of them.
 * Published only when someone subscribes.
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import { AUTOSCALER_DECISION_CHANNEL, ENDPOINT_DELETED_CHANNEL, REPLICA_EXIT_CHANNEL, REPLICA_READY_CHANNEL } from '../diagnostics.js';

export {
  ENDPOINT_DELETED_CHANNEL, REPLICA_EXIT_CHANNEL, REPLICA_READY_CHANNEL, type EndpointDeletedEvent, type ReplicaExitEvent, type ReplicaReadyEvent,
} from '../diagnostics.js';

export const replicaReady = diagnosticsChannel.channel(REPLICA_READY_CHANNEL);
export const endpointDeleted = diagnosticsChannel.channel(ENDPOINT_DELETED_CHANNEL);
export const replicaExit = diagnosticsChannel.channel(REPLICA_EXIT_CHANNEL);
export const autoscalerDecisions = diagnosticsChannel.channel(AUTOSCALER_DECISION_CHANNEL);
