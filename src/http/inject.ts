/**
 * In-process requests to a request listener (as Fastify's `inject`): a real `IncomingMessage`
 * carrying the method, URL, headers and body, and a `ServerResponse` whose head and body are
 * collected instead of written to a socket. Another front end (the gRPC one) uses it to run
 * requests through exactly the middlewares and routes HTTP requests take, with no second copy
 * of auth, limits, routing or observability.
 */
import http from 'node:http';
import net from 'node:net';

export interface InjectedRequest {
  method: 'GET' | 'POST';
  /** Path and query, e.g. "/v2/models/m/infer". */
  url: string;
  /** Lower-case names. */
  headers: Record<string, string>;
  body: Buffer | undefined;
  /** The caller's address, for the audit log. */
  remoteAddress: string;
}

export interface InjectedResponse {
  status: number;
  headers: http.OutgoingHttpHeaders;
  body: Buffer;
  /** False when the handler destroyed the response instead of ending it (a failure after the head). */
  complete: boolean;
}

/** A caller that went away: the response is closed unfinished, as when a client disconnects. */
export interface Injection {
  response: Promise<InjectedResponse>;
  cancel(): void;
}

/** A socket that is never connected: only its address is read. */
function peerSocket(remoteAddress: string): net.Socket {
  const socket = new net.Socket();
  Object.defineProperty(socket, 'remoteAddress', { value: remoteAddress });
  return socket;
}

/** Collects what the handler writes. `writableFinished` and `headersSent` behave as on a socket that took every byte. */
class CollectingResponse extends http.ServerResponse {
  private readonly chunks: Buffer[] = [];
  private ended = false;

  constructor(req: http.IncomingMessage, private readonly done: (r: InjectedResponse) => void) {
    super(req);
    // Read by handlers to tell a finished answer from a client that went away.
    Object.defineProperty(this, 'writableFinished', { get: () => this.ended });
  }

  /** Headers given to `writeHead` (node keeps those out of `getHeaders()`), lower-case names. */
  private headHeaders: http.OutgoingHttpHeaders = {};

  override writeHead(statusCode: number, reason?: unknown, headers?: unknown): this {
    const given = typeof reason === 'string' ? headers : reason;
    if (given !== undefined && given !== null && typeof given === 'object' && !Array.isArray(given)) {
      for (const [k, v] of Object.entries(given as http.OutgoingHttpHeaders)) this.headHeaders[k.toLowerCase()] = v;
    }
    return super.writeHead(statusCode, given as http.OutgoingHttpHeaders | undefined);
  }

  override write(chunk: unknown, encoding?: unknown, cb?: unknown): boolean {
    if (!this.headersSent) this.writeHead(this.statusCode);
    this.chunks.push(toBuffer(chunk, encoding));
    if (typeof cb === 'function') queueMicrotask(cb as () => void);
    return true;
  }

  override end(chunk?: unknown, encoding?: unknown, cb?: unknown): this {
    if (this.ended) return this;
    if (!this.headersSent) this.writeHead(this.statusCode);
    if (chunk !== undefined && chunk !== null && typeof chunk !== 'function') this.chunks.push(toBuffer(chunk, encoding));
    const callback = [chunk, encoding, cb].find((x) => typeof x === 'function') as (() => void) | undefined;
    this.finish(true);
    this.emit('finish');
    this.emit('close');
    if (callback !== undefined) queueMicrotask(callback);
    return this;
  }

  override destroy(): this {
    if (!this.ended) {
      this.finish(false);
      this.emit('close');
    }
    return this;
  }

  private finish(complete: boolean): void {
    this.ended = true;
    this.done({ status: this.statusCode, headers: { ...this.getHeaders(), ...this.headHeaders }, body: this.chunks.length === 1 ? this.chunks[0] as Buffer : Buffer.concat(this.chunks), complete });
  }
}

function toBuffer(chunk: unknown, encoding: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  return Buffer.from(String(chunk), typeof encoding === 'string' ? encoding as BufferEncoding : 'utf8');
}

/**
 * Runs one request through `handle` (a node:http request listener). Resolves with the answer the
 * handler wrote; `cancel` closes the response unfinished (the handler sees its client go away).
 */
export function inject(handle: (req: http.IncomingMessage, res: http.ServerResponse) => void, r: InjectedRequest): Injection {
  const req = new http.IncomingMessage(peerSocket(r.remoteAddress));
  req.method = r.method;
  req.url = r.url;
  req.httpVersionMajor = 1;
  req.httpVersionMinor = 1;
  req.httpVersion = '1.1';
  const headers: Record<string, string> = { ...r.headers };
  if (r.body !== undefined) headers['content-length'] = String(r.body.length);
  req.headers = headers;
  if (r.body !== undefined && r.body.length > 0) req.push(r.body);
  req.push(null);
  req.complete = true;
  let res!: CollectingResponse;
  const response = new Promise<InjectedResponse>((resolve) => {
    res = new CollectingResponse(req, resolve);
  });
  handle(req, res);
  return {
    response,
    cancel: () => {
      if (!res.writableFinished) res.emit('close');
    },
  };
}
