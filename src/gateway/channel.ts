/**
 * ReplicaChannel: how the gateway talks to one replica. An interface so the transport can change
 * (the performance work replaces HTTP with a framed, multiplexed channel). This first
 * implementation is HTTP/1.1 with a keep-alive agent over the replica's Unix socket (or TCP).
 */
import http from 'node:http';
import { FerryError } from '../errors.js';
import type { ReplicaAddress } from '../runtime/index.js';

export interface ChannelRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
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

export function openChannel(address: ReplicaAddress): ReplicaChannel {
  return new HttpChannel(address);
}

class HttpChannel implements ReplicaChannel {
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 256 });

  constructor(private readonly address: ReplicaAddress) {}

  request(req: ChannelRequest, timeoutMs: number): Promise<ChannelResponse> {
    return new Promise((resolve, reject) => {
      const target = this.address.kind === 'unix' ? { socketPath: this.address.socketPath } : { host: this.address.host, port: this.address.port };
      const r = http.request({ ...target, agent: this.agent, method: req.method, path: req.path, headers: req.headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 502, contentType: res.headers['content-type'], body: chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks) });
        });
        res.on('error', (err) => fail(new ChannelError(`Replica connection failed mid-response: ${err.message}`, true)));
      });
      const fail = (err: FerryError): void => {
        clearTimeout(timer);
        r.destroy();
        reject(err);
      };
      const timer = setTimeout(() => fail(new FerryError('DEADLINE_EXCEEDED', `The model did not answer within ${timeoutMs} ms.`)), timeoutMs);
      r.on('error', (err: NodeJS.ErrnoException) => {
        // Never reached a replica: no process listens (refused, socket file gone), or a kept-alive
        // socket the replica had already closed (reset on reuse). Anything else may have been
        // processed.
        const never = err.code === 'ECONNREFUSED' || err.code === 'ENOENT' || (r.reusedSocket && err.code === 'ECONNRESET');
        fail(new ChannelError(`Replica unreachable: ${err.code ?? err.message}`, !never));
      });
      r.end(req.body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
