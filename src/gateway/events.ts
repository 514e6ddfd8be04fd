/**
 * What the gateway tells observers (CONVENTIONS 10): one `ferry:gateway:request` event per
 * finished inference or metadata request, published on node:diagnostics_channel. Metrics, the
 * series ring buffers and inference tables subscribe; the gateway knows none of them. When nobody
 * subscribes, publishing costs one `hasSubscribers` check per request.
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import type { ReplicaSpan } from '../channel/index.js';
import type { EntityRoute } from './routing.js';

export const GATEWAY_REQUEST_CHANNEL = 'ferry:gateway:request';

/** The channel the gateway publishes `GatewayRequestEvent`s on. */
export const gatewayRequests = diagnosticsChannel.channel(GATEWAY_REQUEST_CHANNEL);

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

/**
 * What `forward` learns while handling a request, read when it ends (event, debug line, spans).
 * Only allocated when one of those is wanted.
 */
export interface Observation {
  servedEntity: string;
  modelName: string;
  modelVersion: string;
  queueMs: number;
  requestBody: Buffer | undefined;
  responseBody: Buffer | undefined;
  requestHeaderBytes: number | undefined;
  responseHeaderBytes: number | undefined;
  /** The spans replicas sent back, with the entity and status of each answer; undefined when spans are not exported. */
  replicaSpans: Array<ReplicaSpan & { entity: EntityRoute; status: number }> | undefined;
}

export function newObservation(withSpans: boolean): Observation {
  return { servedEntity: '', modelName: '', modelVersion: '', queueMs: 0, requestBody: undefined, responseBody: undefined, requestHeaderBytes: undefined, responseHeaderBytes: undefined, replicaSpans: withSpans ? [] : undefined };
}

export const GATEWAY_STREAM_CHANNEL = 'ferry:gateway:stream';

/**
 * The channel the gateway publishes one `GatewayStreamEvent` on per streamed answer (LLM token
 * streams), when it ends. Nothing subscribes yet: Prometheus histograms of time to first token and
 * tokens/s would (docs/observability.md).
 */
export const gatewayStreams = diagnosticsChannel.channel(GATEWAY_STREAM_CHANNEL);

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
