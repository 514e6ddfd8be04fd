/**
 * The replica side of the framed protocol: `serveFrames` answers the request frames of one
 * connection, and `listenShared` lets one listening socket carry both the framed channel and the
 * replica's HTTP routes (health probes, debugging) by looking at each connection's first bytes.
 */
import type http from 'node:http';
import type net from 'node:net';
import { clientError, FerryError, toFerryError } from '../errors.js';
import {
  COPY_LIMIT_BYTES, FrameDecoder, FrameFlag, FrameType, HEADER_BYTES, MAGIC_BYTES, MethodCode, PATH_LENGTH_BYTES, PREFACE, PROTOCOL_VERSION, ProtocolError,
  readRequestMeta, SPAN_META_BYTES, StreamEnd, writeChunks, writeHeader, writeSpanMeta,
} from './codec.js';
import type { ReplicaSpan, RequestMeta } from './types.js';

export interface FramedRequest {
  method: 'GET' | 'POST';
  /** e.g. "/invocations" or "/v2/models/iris/infer". */
  path: string;
  /** A view of the read buffer; empty for a GET. */
  body: Buffer;
  /** Request id and trace context, when the gateway sent them. */
  meta: RequestMeta | undefined;
  /**
   * Aborted when the gateway cancels the request (a CANCEL frame: its client went away) or the
   * connection closes. Created on first access: a handler that never looks cannot be cancelled,
   * and costs nothing for it.
   */
  readonly signal: AbortSignal;
}

export interface FramedResponse {
  status: number;
  /** JSON text or bytes; ignored when `stream` is given. */
  body: Buffer | string;
  /**
   * A streamed answer: sent as STREAM_HEAD (`status`, `contentType`), one STREAM_CHUNK per
   * non-empty item as it comes, then STREAM_END (FAILED with the error's body when the iteration
   * throws). Each chunk must fit `maxPayloadBytes`.
   */
  stream?: AsyncIterable<Buffer | string> | undefined;
  /** The streamed answer's content type, e.g. "text/event-stream". */
  contentType?: string | undefined;
  /** The handler's span, sent back when the request asked for it (`meta.wantSpan`); else ignored. */
  span?: ReplicaSpan | undefined;
}

export type FrameHandler = (req: FramedRequest) => Promise<FramedResponse>;

export interface ServeFramesOptions {
  /**
   * Largest request payload (`2 + path + body` bytes) accepted; a larger declared length closes
   * the connection before anything of it is buffered. Responses over it are answered with a 500
   * instead, so a gateway with the same limit never sees one. E.g. `maxBodyBytes + 64 KiB`.
   */
  maxPayloadBytes: number;
  /**
   * Reading pauses while this many requests are in the handler (TCP backpressure to the gateway),
   * and resumes below it. Requests already read in the same chunk still run, so it may be exceeded
   * by one read's worth. Default 1024: far above a replica's useful concurrency, it only bounds
   * what a misbehaving peer can pile up.
   */
  maxInFlightRequests?: number;
  /** Told about protocol errors and socket errors (the connection is closed either way), for logs. */
  onError?: (err: Error) => void;
  /**
   * Told about an unexpected error of the handler (a bug: not a FerryError), for logs; the
   * peer is answered a generic 500 naming the request id (`clientError`).
   */
  onHandlerError?: (err: unknown, meta: RequestMeta | undefined) => void;
}

export interface FramedConnection {
  /** Requests read and not yet answered. */
  readonly inFlight: number;
  /** Resolves once the connection has closed, for whatever reason. */
  readonly closed: Promise<void>;
  /**
   * Answers what is in flight (and whatever else arrives meanwhile), then closes the connection
   * once nothing is. Resolves when it has closed. The caller bounds it with its own deadline and
   * `destroy()`.
   */
  drain(): Promise<void>;
  /** Closes at once; unanswered requests get nothing (the gateway sees `sent: true`). */
  destroy(): void;
}

const DEFAULT_MAX_IN_FLIGHT_REQUESTS = 1024;
const METHODS: Readonly<Record<number, 'GET' | 'POST'>> = { [MethodCode.GET]: 'GET', [MethodCode.POST]: 'POST' };

interface Answer {
  id: number;
  /** FrameType of the frame. */
  type: number;
  /** Header code: the HTTP status, or StreamEnd for STREAM_END. */
  status: number;
  body: Buffer | string;
  bodyBytes: number;
  span: ReplicaSpan | undefined;
}

/**
 * Serves the framed protocol on `socket`: checks the preface, calls `handler` for each request
 * frame (many in flight), and writes the responses of one event-loop turn in one `socket.write`.
 * A handler that throws is answered with the error's status and `{"error_code","message"}` body
 * (500 INTERNAL_ERROR for anything that is not a FerryError). Protocol errors close the connection.
 * The socket may be paused with the preface (or part of it) unshifted, as `listenShared` hands it.
 */
export function serveFrames(socket: net.Socket, handler: FrameHandler, opts: ServeFramesOptions): FramedConnection {
  return new FrameServer(socket, handler, opts);
}

class FrameServer implements FramedConnection {
  inFlight = 0;
  readonly closed: Promise<void>;
  private prefaceFill = 0;
  private readonly decoder: FrameDecoder;
  private answers: Answer[] = [];
  /** Bytes of this turn's answers that are copied into its write buffer (all but big Buffer bodies). */
  private copyBytes = 0;
  private flushScheduled = false;
  private paused = false;
  private draining = false;
  private readonly maxInFlight: number;
  /** Abort controllers of the requests in flight whose handler looked at `signal`. */
  private readonly aborts = new Map<number, AbortController>();

  constructor(private readonly socket: net.Socket, private readonly handler: FrameHandler, private readonly opts: ServeFramesOptions) {
    this.maxInFlight = opts.maxInFlightRequests ?? DEFAULT_MAX_IN_FLIGHT_REQUESTS;
    this.decoder = new FrameDecoder(opts.maxPayloadBytes, this.onFrame);
    this.closed = new Promise((resolve) => socket.once('close', () => {
      for (const c of this.aborts.values()) c.abort();
      this.aborts.clear();
      resolve();
    }));
    socket.setNoDelay(true);
    socket.on('data', this.onData);
    socket.on('end', () => {
      if (this.decoder.midFrame || (this.prefaceFill > 0 && this.prefaceFill < PREFACE.length)) this.fail(new ProtocolError('Connection ended in the middle of a frame.'));
    });
    socket.on('error', (err) => this.opts.onError?.(err));
    socket.resume();
  }

  drain(): Promise<void> {
    this.draining = true;
    this.endIfIdle();
    return this.closed;
  }

  destroy(): void {
    this.socket.destroy();
  }

  private readonly onData = (chunk: Buffer): void => {
    try {
      if (this.prefaceFill < PREFACE.length) {
        const n = Math.min(PREFACE.length - this.prefaceFill, chunk.length);
        for (let i = 0; i < n; i++) {
          const at = this.prefaceFill + i;
          // Bytes after the magic: the version must match; the reserved byte is ignored.
          if (at < MAGIC_BYTES + 1 && chunk[i] !== PREFACE[at]) {
            throw new ProtocolError(at === MAGIC_BYTES ? `Unsupported protocol version ${chunk[i]} (this side speaks ${PROTOCOL_VERSION}).` : 'Not a Ferry channel preface.');
          }
        }
        this.prefaceFill += n;
        if (n === chunk.length) return;
        chunk = chunk.subarray(n);
      }
      this.decoder.push(chunk);
    } catch (err) {
      this.fail(err as Error);
    }
  };

  private readonly onFrame = (type: number, id: number, flags: number, code: number, payload: Buffer): void => {
    if (type === FrameType.CANCEL) {
      // A request that finished meanwhile, or never looked at its signal, has nothing to abort.
      this.aborts.get(id)?.abort();
      return;
    }
    if (type !== FrameType.REQUEST) throw new ProtocolError(`Unexpected frame type ${type} from the gateway.`);
    let meta: RequestMeta | undefined;
    let off = 0;
    if ((flags & (FrameFlag.META | FrameFlag.SPAN_WANTED)) !== 0) {
      meta = { requestId: undefined, traceparent: undefined, tracestate: undefined, wantSpan: (flags & FrameFlag.SPAN_WANTED) !== 0 };
      if ((flags & FrameFlag.META) !== 0) off = readRequestMeta(payload, meta);
    }
    if (payload.length - off < PATH_LENGTH_BYTES) throw new ProtocolError('Request frame shorter than its path length.');
    const pathStart = off + PATH_LENGTH_BYTES;
    const pathEnd = pathStart + payload.readUInt16BE(off);
    if (payload.length < pathEnd) throw new ProtocolError('Request path runs past the end of its frame.');
    const method = METHODS[code];
    if (method === undefined) throw new ProtocolError(`Unknown method code ${code}.`);
    const req = new Request(method, payload.toString('utf8', pathStart, pathEnd), payload.subarray(pathEnd), meta, id, this.aborts);
    this.inFlight++;
    if (this.inFlight >= this.maxInFlight && !this.paused) {
      this.paused = true;
      this.socket.pause();
    }
    void this.dispatch(id, req);
  };

  /** Runs the handler and queues its answer (or streams it); never rejects. */
  private async dispatch(id: number, req: FramedRequest): Promise<void> {
    let status: number;
    let body: Buffer | string;
    let span: ReplicaSpan | undefined;
    let stream: AsyncIterable<Buffer | string> | undefined;
    let contentType: string | undefined;
    try {
      ({ status, body, span, stream, contentType } = await this.handler(req));
      if (!Number.isInteger(status) || status < 100 || status > 599) throw new Error(`Handler answered with invalid status ${status}.`);
      if (stream !== undefined) {
        await this.stream(id, req, status, contentType ?? 'application/octet-stream', stream);
        return;
      }
      const bodyBytes = typeof body === 'string' ? Buffer.byteLength(body) : body.length;
      if (req.meta?.wantSpan !== true) span = undefined;
      const payloadBytes = bodyBytes + (span === undefined ? 0 : SPAN_META_BYTES);
      if (payloadBytes > this.opts.maxPayloadBytes) throw new FerryError('INTERNAL_ERROR', `Response of ${payloadBytes} bytes exceeds the channel limit of ${this.opts.maxPayloadBytes} bytes.`);
      this.answer(id, FrameType.RESPONSE, status, body, bodyBytes, span);
    } catch (err) {
      const e = this.answerOf(err, req);
      body = JSON.stringify(e.toBody());
      this.answer(id, FrameType.RESPONSE, e.status, body, Buffer.byteLength(body), undefined);
    } finally {
      this.aborts.delete(id);
    }
  }

  /** What the peer is told of a handler's error (an unexpected one is logged through `onHandlerError`). */
  private answerOf(err: unknown, req: FramedRequest): FerryError {
    const e = toFerryError(err);
    if (e.unexpected) this.opts.onHandlerError?.(err, req.meta);
    return clientError(e, req.meta?.requestId);
  }

  /** Sends a streamed answer: head, a chunk per item as it comes, end (FAILED when the iteration throws). */
  private async stream(id: number, req: FramedRequest, status: number, contentType: string, items: AsyncIterable<Buffer | string>): Promise<void> {
    this.queue(id, FrameType.STREAM_HEAD, status, contentType, Buffer.byteLength(contentType), undefined);
    let end: number = StreamEnd.COMPLETE;
    let tail = '';
    try {
      for await (const item of items) {
        const bytes = typeof item === 'string' ? Buffer.byteLength(item) : item.length;
        if (bytes === 0) continue;
        if (bytes > this.opts.maxPayloadBytes) throw new FerryError('INTERNAL_ERROR', `Stream chunk of ${bytes} bytes exceeds the channel limit of ${this.opts.maxPayloadBytes} bytes.`);
        // A closed connection ends the stream; the handler sees its signal aborted.
        if (this.socket.destroyed) return;
        this.queue(id, FrameType.STREAM_CHUNK, 0, item, bytes, undefined);
      }
    } catch (err) {
      end = StreamEnd.FAILED;
      tail = JSON.stringify(this.answerOf(err, req).toBody());
    } finally {
      this.answer(id, FrameType.STREAM_END, end, tail, Buffer.byteLength(tail), undefined);
    }
  }

  /** Queues the last frame of a request: it is no longer in flight. */
  private answer(id: number, type: number, status: number, body: Buffer | string, bodyBytes: number, span: ReplicaSpan | undefined): void {
    this.inFlight--;
    if (this.paused && this.inFlight < this.maxInFlight) {
      this.paused = false;
      this.socket.resume();
    }
    this.queue(id, type, status, body, bodyBytes, span);
  }

  private queue(id: number, type: number, status: number, body: Buffer | string, bodyBytes: number, span: ReplicaSpan | undefined): void {
    if (this.socket.destroyed) return;
    this.answers.push({ id, type, status, body, bodyBytes, span });
    this.copyBytes += HEADER_BYTES + (span === undefined ? 0 : SPAN_META_BYTES) + (typeof body !== 'string' && bodyBytes >= COPY_LIMIT_BYTES ? 0 : bodyBytes);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flush);
    }
  }

  /** Every answer of this turn in one write (big Buffer bodies as their own chunks, see COPY_LIMIT_BYTES). */
  private readonly flush = (): void => {
    this.flushScheduled = false;
    const answers = this.answers;
    if (answers.length === 0 || this.socket.destroyed) return;
    const buf = Buffer.allocUnsafe(this.copyBytes);
    this.answers = [];
    this.copyBytes = 0;
    const chunks: Buffer[] = [];
    let start = 0;
    let off = 0;
    for (const a of answers) {
      if (a.span === undefined) {
        off = writeHeader(buf, off, a.bodyBytes, a.id, a.type, a.status);
      } else {
        off = writeHeader(buf, off, SPAN_META_BYTES + a.bodyBytes, a.id, FrameType.RESPONSE, a.status, FrameFlag.META);
        off = writeSpanMeta(buf, off, a.span);
      }
      if (typeof a.body === 'string') {
        off += buf.write(a.body, off, 'utf8');
      } else if (a.bodyBytes < COPY_LIMIT_BYTES) {
        off += a.body.copy(buf, off);
      } else {
        chunks.push(buf.subarray(start, off), a.body);
        start = off;
      }
    }
    if (off > start) chunks.push(buf.subarray(start, off));
    writeChunks(this.socket, chunks);
    this.endIfIdle();
  };

  private endIfIdle(): void {
    if (this.draining && this.inFlight === 0 && this.answers.length === 0) this.socket.end();
  }

  private fail(err: Error): void {
    this.opts.onError?.(err);
    this.socket.destroy();
  }
}

/** A request frame as the handler sees it; its abort controller exists once `signal` is read. */
class Request implements FramedRequest {
  private controller: AbortController | undefined;

  constructor(
    readonly method: 'GET' | 'POST', readonly path: string, readonly body: Buffer, readonly meta: RequestMeta | undefined,
    private readonly id: number, private readonly aborts: Map<number, AbortController>,
  ) {}

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      this.aborts.set(this.id, this.controller);
    }
    return this.controller.signal;
  }
}

export interface ListenSharedOptions {
  /**
   * A connection that has not sent enough bytes to tell its protocol within this time is closed.
   * Default 10 s: both of Ferry's clients send first, at once (the framed preface, an HTTP
   * request line), so only a stuck or hostile peer waits this long.
   */
  sniffTimeoutMs?: number;
}

const DEFAULT_SNIFF_TIMEOUT_MS = 10_000;

/**
 * Makes `httpServer` (listening as usual, e.g. on the replica's Unix socket) also accept the
 * framed protocol: each new connection is held until its first bytes show whether it starts with
 * the preface magic ("FERRY\0", possibly split over several reads). Framed connections go to
 * `onFramed` (which calls `serveFrames`); everything else goes to the HTTP server exactly as if
 * it had accepted it itself, so its timeouts, `closeIdleConnections()` and `closeAllConnections()`
 * keep working. Call it once, before or after `listen`.
 */
export function listenShared(httpServer: http.Server, onFramed: (socket: net.Socket) => void, opts: ListenSharedOptions = {}): void {
  const sniffTimeoutMs = opts.sniffTimeoutMs ?? DEFAULT_SNIFF_TIMEOUT_MS;
  // node:http attaches its own 'connection' listener in the constructor; it is what sets up the
  // parser and the connection tracking. Take it (and any other) and call it after sniffing.
  const httpListeners = httpServer.rawListeners('connection') as ((socket: net.Socket) => void)[];
  httpServer.removeAllListeners('connection');
  httpServer.on('connection', (socket: net.Socket) => {
    let seen: Buffer[] = [];
    let seenBytes = 0;
    const handOver = (framed: boolean): void => {
      socket.removeListener('data', onData);
      socket.removeListener('error', onError);
      socket.setTimeout(0);
      socket.removeListener('timeout', onTimeout);
      socket.pause();
      socket.unshift(seen.length === 1 ? seen[0] as Buffer : Buffer.concat(seen, seenBytes));
      seen = [];
      if (framed) {
        onFramed(socket);
      } else {
        for (const listener of httpListeners) listener.call(httpServer, socket);
        // node:http reads the socket's handle directly from now on; the bytes unshifted above are
        // still in the stream's buffer and reach its parser as 'data' once resumed.
        socket.resume();
      }
    };
    const onData = (chunk: Buffer): void => {
      seen.push(chunk);
      const start = seenBytes;
      seenBytes += chunk.length;
      const n = Math.min(seenBytes, MAGIC_BYTES);
      for (let i = start; i < n; i++) {
        if (chunk[i - start] !== PREFACE[i]) {
          handOver(false);
          return;
        }
      }
      if (seenBytes >= MAGIC_BYTES) handOver(true);
    };
    const onError = (): void => {
      socket.destroy();
    };
    const onTimeout = (): void => {
      socket.destroy();
    };
    socket.on('data', onData);
    socket.on('error', onError);
    socket.setTimeout(sniffTimeoutMs, onTimeout);
  });
}
