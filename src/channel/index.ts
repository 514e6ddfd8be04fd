/**
 * The gateway ↔ replica channel: the `ReplicaChannel` interface the gateway programs against, and
 * the framed, multiplexed protocol that implements it (wire format: docs/channel.md; why:
 * notes/data-path.md, 25 µs of CPU per request on both ends instead of ~115 µs for HTTP).
 *
 * - gateway side: `new FramedChannel(address, { maxPayloadBytes })`
 * - replica side: `listenShared(httpServer, (socket) => serveFrames(socket, handler, opts))`
 */
export { ChannelError, type ReplicaAddress, type ChannelRequest, type ChannelResponse, type ReplicaChannel, type ReplicaSpan, type RequestMeta, type ResponseStream } from './types.js';
export { FramedChannel, type FramedChannelOptions } from './client.js';
export {
  serveFrames, listenShared, type FrameHandler, type FramedRequest, type FramedResponse, type FramedConnection,
  type ServeFramesOptions, type ListenSharedOptions,
} from './server.js';
export {
  FrameDecoder, ProtocolError, encodeRequestFrame, encodeResponseFrame, readRequestMeta, readResponseMeta, FrameFlag, FrameType, MethodCode, PREFACE,
  HEADER_BYTES, type FrameSink,
} from './codec.js';

export { CONTROL_FD, CONTROL_PREFIX_BYTES, ControlDecoder, encodeControlFrame, type ControlFrame, type ControlLimits } from './control.js';

/** Largest frame payload for a body limit: the body plus room for its path (≤ 64 KiB). */
export function framePayloadLimit(maxBodyBytes: number): number {
  return maxBodyBytes + 64 * 1024;
}
