/**
 * The gateway's view of one replica, whatever the transport: `ReplicaChannel`, implemented by
 * `FramedChannel` (./client.ts, the framed protocol of docs/channel.md). An interface so a
 * transport can change without the gateway noticing.
 */
import { FerryError } from '../errors.js';

/** How to reach a replica. */
export type ReplicaAddress = { kind: 'unix'; socketPath: string } | { kind: 'tcp'; host: string; port: number };

export interface ChannelRequest {
  method: string;
  path: string;
  body: Buffer | undefined;
  /** Request id and trace context for the replica; nothing is sent for it when absent. */
  meta?: RequestMeta | undefined;
  /**
   * Aborting it cancels the request: a queued request is dropped, a sent one gets a CANCEL frame
   * (the replica stops generating), and the call or its stream fails with REQUEST_TIMEOUT.
   */
  signal?: AbortSignal | undefined;
}

export interface ChannelResponse {
  status: number;
  contentType: string | undefined;
  body: Buffer;
  /** The replica's span, when the request asked for it (`meta.wantSpan`) and the replica sent it. */
  span?: ReplicaSpan | undefined;
  /**
   * Present when the replica streams its answer (docs/channel.md, "Streaming"): `body` is then
   * empty and the chunks arrive here as they are sent. Iteration ends when the replica ends the
   * stream and throws when it fails, the connection drops, or no chunk came for `timeoutMs`.
   */
  stream?: ResponseStream | undefined;
}

/** The chunks of a streamed answer (docs/channel.md, "Streaming"). */
export interface ResponseStream extends AsyncIterable<Buffer> {
  /** Stops it: the replica gets a CANCEL frame, iteration throws REQUEST_TIMEOUT. No-op once ended. */
  cancel(): void;
  /** Resolves once the stream has ended, however (complete, failed, cancelled, connection lost). */
  readonly ended: Promise<void>;
}

/**
 * Request-scoped context passed to the replica (docs/channel.md, "Metadata"). Values are ASCII
 * (the gateway checks what clients send) and together at most 65,535 bytes.
 */
export interface RequestMeta {
  /** The request's id (`x-request-id`), for the replica's log lines. */
  requestId: string | undefined;
  /** W3C traceparent naming the gateway's span as the parent. */
  traceparent: string | undefined;
  tracestate: string | undefined;
  /**
   * On a request to a family replica: the member's artifact (key, tree sha256, model file), for a
   * replica that fetches members from the artifact store itself (a pod). Encoded by
   * `encodeMemberArtifact` (src/multi/member.ts); absent on every other request.
   */
  member?: string | undefined;
  /** Ask the replica to send its span back: only when spans are exported. */
  wantSpan: boolean;
}

/** The replica's own span of one request (its handler, model call included), sent back when asked. */
export interface ReplicaSpan {
  /** 16 hex digits. */
  spanId: string;
  /** Microseconds since the epoch, by the replica's clock. */
  startUnixUs: number;
  durationUs: number;
}

export interface ReplicaChannel {
  /**
   * Sends one request. Rejects with BAD_GATEWAY when the replica cannot be reached or drops the
   * connection (`sent: false` on the error when nothing reached it, so a retry is safe), and with
   * DEADLINE_EXCEEDED after `timeoutMs`.
   */
  request(req: ChannelRequest, timeoutMs: number): Promise<ChannelResponse>;
  close(): void;
}

/** A FerryError that also says whether the request may have reached the replica. */
export class ChannelError extends FerryError {
  constructor(message: string, readonly sent: boolean) {
    super('BAD_GATEWAY', message);
  }
}
