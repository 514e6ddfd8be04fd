/**
 * FramedChannel: the gateway side of the framed protocol. One connection per replica, opened on
 * the first request and again on the first request after a loss; requests are multiplexed on it
 * by id and the frames of one event-loop turn leave in one `socket.write`.
 */
import net from 'node:net';
import { FerryError } from '../errors.js';
import {
  COPY_LIMIT_BYTES, FrameDecoder, FrameFlag, FrameType, HEADER_BYTES, MAX_META_BYTES, MAX_PATH_BYTES, META_LENGTH_BYTES, MethodCode, PATH_LENGTH_BYTES,
  PREFACE, ProtocolError, readResponseMeta, requestMetaBytes, StreamEnd, writeChunks, writeHeader, writeRequestMeta,
} from './codec.js';
import { ChannelError, type ReplicaAddress, type ChannelRequest, type ChannelResponse, type ReplicaChannel, type RequestMeta, type ResponseStream } from './types.js';

export interface FramedChannelOptions {
  /**
   * Largest payload either way. A request over it is refused here (PAYLOAD_TOO_LARGE, nothing
   * sent); a response declaring more is a protocol error: the connection closes and every request
   * on it fails. Give the replica the same limit: it answers an over-limit response with a 500
   * instead of sending it. E.g. `maxBodyBytes + 64 KiB`.
   */
  maxPayloadBytes: number;
}

const cancelled = (): FerryError => new FerryError('REQUEST_TIMEOUT', 'The request was cancelled by its caller.');

/** The responses of the framed protocol are JSON by definition (a streamed one names its own). */
const CONTENT_TYPE = 'application/json';

const QUEUED = 0;
const FLUSHED = 1;
const SETTLED = 2;

/** One request in flight: all the channel keeps per request. */
interface Pending {
  id: number;
  state: typeof QUEUED | typeof FLUSHED | typeof SETTLED;
  /** Which write of its connection carried it (1, 2, …; 0 while queued). */
  write: number;
  method: number;
  path: string;
  pathBytes: number;
  /** Header flags (FrameFlag) and the metadata section's bytes (0: none). */
  flags: number;
  meta: RequestMeta | undefined;
  metaBytes: number;
  body: Buffer | undefined;
  timer: NodeJS.Timeout | undefined;
  timeoutMs: number;
  resolve: (res: ChannelResponse) => void;
  reject: (err: Error) => void;
  /** The chunks of a streamed answer, once its head arrived. */
  stream: ChunkQueue | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/**
 * The chunks of one streamed answer, pushed by the connection and pulled by one consumer. Unbounded
 * on purpose: a replica's chunks are tokens, produced far slower than a socket drains them, and the
 * per-request idle deadline ends a stream nobody reads.
 */
class ChunkQueue implements ResponseStream {
  private readonly chunks: Buffer[] = [];
  private done = false;
  private error: Error | undefined;
  private wake: (() => void) | undefined;
  private onEnded: (() => void) | undefined;
  readonly ended = new Promise<void>((resolve) => (this.onEnded = resolve));

  constructor(readonly cancel: () => void) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.wake?.();
  }

  end(error?: Error): void {
    if (this.done) return;
    this.done = true;
    this.error = error;
    this.wake?.();
    this.onEnded?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    for (;;) {
      const chunk = this.chunks.shift();
      if (chunk !== undefined) {
        yield chunk;
        continue;
      }
      if (this.error !== undefined) throw this.error;
      if (this.done) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }
}

/** One connection attempt and what happened to it. */
interface Connection {
  socket: net.Socket;
  decoder: FrameDecoder;
  /** `socket.write` calls made, and those the kernel accepted (they complete in order). */
  writes: number;
  written: number;
  /** Why it failed, when it did ('error' comes before 'close'). */
  failure: Error | undefined;
  /** The one write callback of this connection: counts accepted writes. */
  onWritten: (err: Error | null | undefined) => void;
}

/** A `ReplicaChannel` over the framed protocol (docs/channel.md). */
export class FramedChannel implements ReplicaChannel {
  private conn: Connection | undefined;
  private readonly pending = new Map<number, Pending>();
  /** Requests not yet handed to the socket, in id order. */
  private queue: Pending[] = [];
  private flushScheduled = false;
  /** A new connection's first flush starts with the preface. */
  private queuePreface = false;
  /** Ids of sent requests to cancel in the next flush. */
  private cancels: number[] = [];
  private nextId = 0;
  private closed = false;

  constructor(readonly address: ReplicaAddress, private readonly opts: FramedChannelOptions) {}

  /** Requests sent or queued and not yet answered (for diagnostics and tests). */
  get inFlight(): number {
    return this.pending.size;
  }

  request(req: ChannelRequest, timeoutMs: number): Promise<ChannelResponse> {
    if (this.closed) return Promise.reject(new ChannelError('Replica channel is closed.', false));
    const method = req.method === 'POST' ? MethodCode.POST : req.method === 'GET' ? MethodCode.GET : -1;
    if (method < 0) return Promise.reject(new FerryError('METHOD_NOT_ALLOWED', `The replica channel carries GET and POST, not ${req.method}.`));
    const pathBytes = Buffer.byteLength(req.path);
    if (pathBytes > MAX_PATH_BYTES) return Promise.reject(new FerryError('BAD_REQUEST', `Replica path of ${pathBytes} bytes exceeds ${MAX_PATH_BYTES}.`));
    const meta = req.meta;
    const metaBytes = meta === undefined ? 0 : requestMetaBytes(meta);
    if (metaBytes > META_LENGTH_BYTES + MAX_META_BYTES) return Promise.reject(new FerryError('BAD_REQUEST', `Request metadata of ${metaBytes} bytes exceeds ${MAX_META_BYTES}.`));
    const flags = (metaBytes > 0 ? FrameFlag.META : 0) | (meta?.wantSpan === true ? FrameFlag.SPAN_WANTED : 0);
    // The replica would close the connection on it, failing every other request in flight too.
    const payloadBytes = metaBytes + PATH_LENGTH_BYTES + pathBytes + (req.body?.length ?? 0);
    if (payloadBytes > this.opts.maxPayloadBytes) {
      return Promise.reject(new FerryError('PAYLOAD_TOO_LARGE', `Request of ${payloadBytes} bytes exceeds the replica channel limit of ${this.opts.maxPayloadBytes} bytes.`));
    }
    // A socket destroyed this turn (protocol error, reset) emits 'close' only on the next tick.
    if (this.conn?.socket.destroyed === true) this.lose(this.conn);
    if (req.signal?.aborted === true) return Promise.reject(cancelled());
    if (this.conn === undefined) this.connect();
    let id = this.nextId;
    while (this.pending.has(id)) id = (id + 1) >>> 0; // only after 2^32 ids, with one still pending
    this.nextId = (id + 1) >>> 0;
    return new Promise<ChannelResponse>((resolve, reject) => {
      const p: Pending = {
        id, state: QUEUED, write: 0, method, path: req.path, pathBytes, flags, meta, metaBytes, body: req.body, timer: undefined, timeoutMs, resolve, reject,
        stream: undefined, signal: req.signal, onAbort: undefined,
      };
      p.timer = setTimeout(this.onTimeout, timeoutMs, p);
      if (req.signal !== undefined) {
        p.onAbort = () => this.cancel(p, cancelled());
        req.signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.pending.set(id, p);
      this.queue.push(p);
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(this.flush);
      }
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const conn = this.conn;
    this.conn = undefined;
    this.failAll(conn, 'Replica channel closed with the request in flight.');
    conn?.socket.destroy();
  }

  private connect(): void {
    const socket = this.address.kind === 'unix' ? net.connect(this.address.socketPath) : net.connect(this.address.port, this.address.host);
    socket.setNoDelay(true);
    const conn: Connection = {
      socket,
      decoder: new FrameDecoder(this.opts.maxPayloadBytes, this.onFrame),
      writes: 0,
      written: 0,
      failure: undefined,
      onWritten: (err) => {
        if (err == null) conn.written++;
      },
    };
    this.conn = conn;
    socket.on('data', (chunk: Buffer) => {
      try {
        conn.decoder.push(chunk);
      } catch (err) {
        socket.destroy(err as Error);
      }
    });
    socket.on('end', () => {
      if (conn.decoder.midFrame) socket.destroy(new ProtocolError('Replica closed the connection in the middle of a frame.'));
    });
    socket.on('error', (err) => {
      conn.failure ??= err;
    });
    socket.on('close', () => this.lose(conn));
    // The preface leads the first flush; a socket buffers writes until it connects.
    this.queuePreface = true;
  }

  /** Forgets a lost connection and fails what was on it; later requests open a new one. */
  private lose(conn: Connection): void {
    if (this.conn !== conn) return; // close() or an earlier call already failed everything
    this.conn = undefined;
    const f = conn.failure;
    const why = f === undefined ? 'closed by the replica' : (f as NodeJS.ErrnoException).code ?? f.message;
    this.failAll(conn, conn.written > 0 ? `Replica connection lost: ${why}.` : `Replica unreachable: ${why}.`);
  }

  /**
   * Writes every frame queued this turn in one write (one syscall, whatever the load). Scheduled
   * with setImmediate so that requests from every socket read in one poll phase go together.
   */
  private readonly flush = (): void => {
    this.flushScheduled = false;
    const queue = this.queue;
    const cancels = this.cancels;
    if (queue.length === 0 && cancels.length === 0) return;
    this.queue = [];
    this.cancels = [];
    const conn = this.conn;
    if (conn === undefined) return; // lost meanwhile: failAll already rejected them
    if (conn.socket.destroyed) {
      this.lose(conn);
      return;
    }
    // Headers, paths and small bodies are copied into one buffer; big bodies go as their own chunks.
    let copied = (this.queuePreface ? PREFACE.length : 0) + cancels.length * HEADER_BYTES;
    let any = cancels.length > 0;
    for (const p of queue) {
      if (p.state !== QUEUED) continue;
      any = true;
      const bodyBytes = p.body?.length ?? 0;
      copied += HEADER_BYTES + p.metaBytes + PATH_LENGTH_BYTES + p.pathBytes + (bodyBytes < COPY_LIMIT_BYTES ? bodyBytes : 0);
    }
    if (!any) return;
    const buf = Buffer.allocUnsafe(copied);
    const chunks: Buffer[] = [];
    let start = 0;
    let off = 0;
    if (this.queuePreface) {
      off = PREFACE.copy(buf, 0);
      this.queuePreface = false;
    }
    const write = ++conn.writes;
    for (const id of cancels) off = writeHeader(buf, off, 0, id, FrameType.CANCEL, 0);
    for (const p of queue) {
      if (p.state !== QUEUED) continue;
      const body = p.body;
      const bodyBytes = body?.length ?? 0;
      off = writeHeader(buf, off, p.metaBytes + PATH_LENGTH_BYTES + p.pathBytes + bodyBytes, p.id, FrameType.REQUEST, p.method, p.flags);
      if (p.meta !== undefined && p.metaBytes > 0) off = writeRequestMeta(buf, off, p.meta, p.metaBytes);
      off = buf.writeUInt16BE(p.pathBytes, off);
      off += buf.write(p.path, off, 'utf8');
      if (body !== undefined) {
        if (bodyBytes < COPY_LIMIT_BYTES) {
          off += body.copy(buf, off);
        } else {
          chunks.push(buf.subarray(start, off), body);
          start = off;
        }
      }
      p.state = FLUSHED;
      p.write = write;
      p.body = undefined;
      p.meta = undefined;
    }
    if (off > start) chunks.push(buf.subarray(start, off));
    writeChunks(conn.socket, chunks, conn.onWritten);
  };

  private readonly onFrame = (type: number, id: number, flags: number, code: number, payload: Buffer): void => {
    if (type === FrameType.RESPONSE) {
      let res: ChannelResponse;
      if ((flags & FrameFlag.META) === 0) {
        res = { status: code, contentType: CONTENT_TYPE, body: payload, span: undefined };
      } else {
        const { span, bodyStart } = readResponseMeta(payload);
        res = { status: code, contentType: CONTENT_TYPE, body: payload.subarray(bodyStart), span };
      }
      const p = this.pending.get(id);
      if (p === undefined || p.stream !== undefined) return; // answered after its deadline (or cancelled): dropped
      this.settle(p);
      p.resolve(res);
      return;
    }
    if (type !== FrameType.STREAM_HEAD && type !== FrameType.STREAM_CHUNK && type !== FrameType.STREAM_END) {
      throw new ProtocolError(`Unexpected frame type ${type} from the replica.`);
    }
    const p = this.pending.get(id);
    if (p === undefined) return; // a stream past its deadline, or cancelled: the rest is dropped
    if (type === FrameType.STREAM_HEAD) {
      if (p.stream !== undefined) throw new ProtocolError(`Second stream head for request ${id}.`);
      p.stream = new ChunkQueue(() => this.cancel(p, cancelled()));
      // From here the deadline is an idle one: renewed by every chunk.
      p.timer?.refresh();
      p.resolve({ status: code, contentType: payload.toString('utf8'), body: Buffer.alloc(0), span: undefined, stream: p.stream });
      return;
    }
    const stream = p.stream;
    if (stream === undefined) throw new ProtocolError(`Stream frame before the stream head of request ${id}.`);
    if (type === FrameType.STREAM_CHUNK) {
      p.timer?.refresh();
      // The payload may be a view of the read buffer, which is reused.
      stream.push(Buffer.from(payload));
      return;
    }
    this.settle(p);
    if (code === StreamEnd.COMPLETE) {
      stream.end();
    } else {
      let message = 'The replica failed the stream.';
      try {
        message = (JSON.parse(payload.toString('utf8')) as { message?: string }).message ?? message;
      } catch {
        // The default message says enough.
      }
      stream.end(new FerryError('MODEL_ERROR', message));
    }
  };

  /** Forgets a request that got its last frame (or gave up). */
  private settle(p: Pending): void {
    this.pending.delete(p.id);
    p.state = SETTLED;
    p.body = undefined;
    clearTimeout(p.timer);
    if (p.onAbort !== undefined) p.signal?.removeEventListener('abort', p.onAbort);
  }

  /** Ends a request early: its caller (or stream) fails with `err`; a replica working on it is told to stop. */
  private cancel(p: Pending, err: FerryError): void {
    if (p.state === SETTLED) return;
    const sent = p.state === FLUSHED;
    this.settle(p);
    if (sent && this.conn !== undefined) {
      this.cancels.push(p.id);
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(this.flush);
      }
    }
    if (p.stream !== undefined) p.stream.end(err);
    else p.reject(err);
  }

  private readonly onTimeout = (p: Pending): void => {
    this.cancel(p, new FerryError('DEADLINE_EXCEEDED', p.stream === undefined ? `The model did not answer within ${p.timeoutMs} ms.` : `The model sent nothing for ${p.timeoutMs} ms.`));
  };

  /**
   * Rejects every pending request. `sent` only for frames in a write the kernel accepted: a frame
   * still queued, or in a write that failed (EPIPE, ECONNREFUSED, ENOENT) surely never arrived.
   */
  private failAll(conn: Connection | undefined, message: string): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    this.queue = [];
    this.queuePreface = false;
    this.cancels = [];
    for (const p of all) {
      const sent = conn !== undefined && p.state === FLUSHED && p.write <= conn.written;
      this.settle(p);
      const err = new ChannelError(message, sent);
      if (p.stream !== undefined) p.stream.end(err);
      else p.reject(err);
    }
  }
}
