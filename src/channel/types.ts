/**
 * The gateway's view of one replica, whatever the transport: `ReplicaChannel`, implemented by
 * `FramedChannel` (./client.ts, the framed protocol of docs/channel.md). An interface so a
 * transport can change without the gateway noticing.
 */
import { FerryError } from '../errors.js';

export interface ChannelRequest {
  method: string;
  path: string;
  body: Buffer | undefined;
}

export interface ChannelResponse {
  status: number;
  contentType: string | undefined;
  body: Buffer;
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
