/**
 * What the gateway tells observers: one `ferry:gateway:request` event per finished inference or
 * metadata request, published on node:diagnostics_channel (names and payloads:
 * src/diagnostics.ts). Metrics, the
 * series ring buffers and inference tables subscribe; the gateway knows none of them. When nobody
 * subscribes, publishing costs one `hasSubscribers` check per request.
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import type { ReplicaSpan } from '../channel/index.js';
import { GATEWAY_REQUEST_CHANNEL, GATEWAY_STREAM_CHANNEL } from '../diagnostics.js';
import type { EntityRoute } from './routing.js';

export { GATEWAY_REQUEST_CHANNEL, GATEWAY_STREAM_CHANNEL, type GatewayRequestEvent, type GatewayStreamEvent } from '../diagnostics.js';

/** The channel the gateway publishes `GatewayRequestEvent`s on. */
export const gatewayRequests = diagnosticsChannel.channel(GATEWAY_REQUEST_CHANNEL);

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

/**
 * The channel the gateway publishes one `GatewayStreamEvent` on per streamed answer (LLM token
 * streams), when it ends. Nothing subscribes yet: Prometheus histograms of time to first token and
 * tokens/s would (docs/observability.md).
 */
export const gatewayStreams = diagnosticsChannel.channel(GATEWAY_STREAM_CHANNEL);

