/**
 * Every `node:diagnostics_channel` name Ferry publishes on, with the shape of what it publishes: a
 * leaf module with no imports, so a subscriber (metrics, series, inference tables, a test) names a
 * channel without loading the plane that publishes it, and a replica that imports a name loads
 * no control plane. Publishers create their channel objects from these names (`channel(NAME)`);
 * when nobody subscribes, publishing costs one `hasSubscribers` check.
 *
 * | channel | published by | payload |
 * | --- | --- | --- |
 * | `ferry:gateway:request` | gateway, per finished request | `GatewayRequestEvent` |
 * | `ferry:gateway:stream` | gateway, per streamed answer at its end | `GatewayStreamEvent` |
 * | `ferry:replica:ready` | controller | `ReplicaReadyEvent` |
 * | `ferry:replica:exit` | controller | `ReplicaExitEvent` |
 * | `ferry:endpoint:deleted` | controller | `EndpointDeletedEvent` |
 * | `ferry:autoscaler:decision` | controller, per changed decision | the decision and its inputs |
 * | `ferry:inference-table:drop` | inference-table writer, per dropped row(s) | `InferenceTableDropEvent` |
 */

export const GATEWAY_REQUEST_CHANNEL = 'ferry:gateway:request';
export const GATEWAY_STREAM_CHANNEL = 'ferry:gateway:stream';
export const REPLICA_READY_CHANNEL = 'ferry:replica:ready';
export const REPLICA_EXIT_CHANNEL = 'ferry:replica:exit';
export const ENDPOINT_DELETED_CHANNEL = 'ferry:endpoint:deleted';
export const AUTOSCALER_DECISION_CHANNEL = 'ferry:autoscaler:decision';
export const INFERENCE_TABLE_DROP_CHANNEL = 'ferry:inference-table:drop';

/** `ferry:gateway:request`: one finished inference or metadata request. */
export interface GatewayRequestEvent {
  /** The route pattern, e.g. "POST /serving-endpoints/:name/invocations". */
  route: string;
  /** True for scoring calls (invocations, OIP v2 infer); false for metadata and readiness. */
  inference: boolean;
  endpoint: string;
  /** The served entity that answered; '' when the request ended before one was chosen. */
  servedEntity: string;
  /** Its model name and version ('' when no entity). */
  modelName: string;
  modelVersion: string;
  /** Who called (the authenticated principal). */
  principal: string;
  status: number;
  /** The error code of an error answer produced by Ferry (not by the model), else undefined. */
  errorCode: string | undefined;
  /** Wall-clock start (ms since the epoch) and duration of the whole request in the gateway. */
  startMs: number;
  durationMs: number;
  /** Time spent waiting in the entity's buffer for a replica with room. */
  queueMs: number;
  /** The request's id: the client's sane `x-request-id`, else a generated one ('' outside the server). */
  requestId: string;
  /** The request and response bodies as they crossed the gateway (undefined when none). */
  requestBody: Buffer | undefined;
  responseBody: Buffer | undefined;
  /**
   * For an OIP v2 body with binary tensor data: the length of its JSON header (the rest is raw
   * tensor bytes); undefined for a body that is all JSON (or text).
   */
  requestHeaderBytes: number | undefined;
  responseHeaderBytes: number | undefined;
}

/** `ferry:gateway:stream`: one streamed answer (LLM token stream), when it ends. */
export interface GatewayStreamEvent {
  endpoint: string;
  servedEntity: string;
  /** From the gateway's start of the request to the first chunk written to the client (time to first token for an LLM stream), ms. */
  firstChunkMs: number | undefined;
  /** Chunks relayed: one per generated text piece for an llm replica, so about one per token. */
  chunks: number;
  /** From the first chunk to the end of the stream, ms (chunks ÷ this ≈ tokens/s). */
  streamMs: number;
  outcome: 'complete' | 'failed' | 'cancelled';
}

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
   * 'crashed' (exited on its own), 'oom' (killed by the runtime for exceeding its memory limit),
   * 'processes' (killed because its sandbox reached its process limit) or 'protocol' (killed by the
   * runtime for sending something that is not a valid control message).
   */
  reason: 'crashed' | 'oom' | 'processes' | 'protocol';
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

/** `ferry:inference-table:drop`: rows the writer dropped. */
export interface InferenceTableDropEvent {
  endpoint: string;
  /** 'queue_full': the writer could not keep up; 'write_failed': the storage refused a batch. */
  reason: 'queue_full' | 'write_failed';
  /** Rows dropped by this event (1 for a full queue, the batch's size for a failed write). */
  rows: number;
}
