/**
 * What the controller tells observers about replicas (CONVENTIONS 10), on node:diagnostics_channel:
 * metrics subscribe; the controller knows none of them. Published only when someone subscribes.
 */
import diagnosticsChannel from 'node:diagnostics_channel';

export const REPLICA_READY_CHANNEL = 'ferry:replica:ready';
export const REPLICA_EXIT_CHANNEL = 'ferry:replica:exit';
export const ENDPOINT_DELETED_CHANNEL = 'ferry:endpoint:deleted';

/** A replica of a serving entity turned ready (started by a rollout, a scale-up or a restart). */
export interface ReplicaReadyEvent {
  endpoint: string;
  servedEntity: string;
  replica: string;
  /** From asking the runtime for it to its being ready (artifact link, process or pool claim, model load). */
  durationMs: number;
  /** Whether its entity had no ready replica when it was asked for (a request may have been waiting). */
  fromZero: boolean;
}

/** A replica exited without being asked to; the controller restarts it. */
export interface ReplicaExitEvent {
  endpoint: string;
  servedEntity: string;
  replica: string;
  /**
   * 'crashed' (exited on its own), 'oom' (killed by the runtime for exceeding its memory limit) or
   * 'protocol' (killed by the runtime for sending something that is not a valid control message).
   */
  reason: 'crashed' | 'oom' | 'protocol';
  code: number | undefined;
  signal: string | undefined;
}

/**
 * An endpoint was deleted and its replicas have stopped; published before its name is free again,
 * so observers drop what they hold for it (metrics, series) before a new endpoint of the same
 * name, perhaps someone else's, can exist.
 */
export interface EndpointDeletedEvent {
  endpoint: string;
  /** The deleted endpoint's id (a new endpoint of the same name gets another). */
  id: string;
}

export const replicaReady = diagnosticsChannel.channel(REPLICA_READY_CHANNEL);
export const endpointDeleted = diagnosticsChannel.channel(ENDPOINT_DELETED_CHANNEL);
export const replicaExit = diagnosticsChannel.channel(REPLICA_EXIT_CHANNEL);
