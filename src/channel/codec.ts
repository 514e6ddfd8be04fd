/**
 * The frame codec of the gateway ↔ replica channel (wire format: docs/channel.md).
 *
 * Frame = 12-byte header `u32 BE payloadLength | u32 BE id | u8 type | u8 flags | u16 BE code`
 * + payload. A request (type 1) carries `[metadata] u16 BE pathLength | path | body` with
 * code = method; a response (type 2) carries `[metadata] body` with code = HTTP status. The
 * metadata section (`u16 BE length | entries`) is there only when flag META is set: frames without
 * it are the frames of before it existed, byte for byte.
 *
 * Worked example: `POST /invocations` with body `{}` as request id 7 is 28 bytes:
 * `00000010 00000007 01 00 0001` + `000c` + "/invocations" + "{}"
 * (payload 2 + 12 + 2 = 16 = 0x10 bytes). With request id "r1" it is 35 bytes: flags 01, and
 * `0005` + `01 0002` + "r1" before the path (payload 7 + 16 = 23 = 0x17 bytes).
 */
import type { ReplicaSpan, RequestMeta } from './types.js';

/** First bytes a client sends: magic "FERRY\0", version, reserved. */
export const PREFACE = Buffer.from([0x46, 0x45, 0x52, 0x52, 0x59, 0x00, 0x01, 0x00]);
/** The magic part of the preface: what protocol sniffing looks for. */
export const MAGIC_BYTES = 6;
export const PROTOCOL_VERSION = 1;
export const HEADER_BYTES = 12;
/** Request payloads start with the u16 path length. */
export const PATH_LENGTH_BYTES = 2;
export const MAX_PATH_BYTES = 0xffff;

/**
 * Frame types. A request is answered by one RESPONSE, or by a stream: STREAM_HEAD (code = HTTP
 * status, payload = the content type), STREAM_CHUNK frames (payload = bytes), then STREAM_END
 * (code 0 = complete, 1 = failed with a `{"error_code","message"}` payload). CANCEL (client →
 * replica, empty payload) asks the replica to stop working on a request; it answers nothing more.
 */
export const FrameType = { REQUEST: 1, RESPONSE: 2, STREAM_HEAD: 3, STREAM_CHUNK: 4, STREAM_END: 5, CANCEL: 6 } as const;
/** STREAM_END codes. */
export const StreamEnd = { COMPLETE: 0, FAILED: 1 } as const;
export const MethodCode = { GET: 0, POST: 1 } as const;
/**
 * Bits of the header's flags byte. META: a metadata section leads the payload. SPAN_WANTED
 * (requests): the replica should answer with its span in the response's metadata. Other bits are
 * sent 0 and ignored.
 */
export const FrameFlag = { META: 0x01, SPAN_WANTED: 0x02 } as const;
/** Keys of request metadata entries; values are ASCII text. MEMBER: a family member's artifact (`RequestMeta.member`). */
export const RequestMetaKey = { REQUEST_ID: 1, TRACEPARENT: 2, TRACESTATE: 3, MEMBER: 4 } as const;
/** Keys of response metadata entries. */
export const ResponseMetaKey = { SPAN: 1 } as const;
/** The metadata section starts with its u16 length (the bytes after it). */
export const META_LENGTH_BYTES = 2;
/** Each entry: `u8 key | u16 BE valueLength | value`. */
const META_ENTRY_BYTES = 3;
/** Longest metadata section after its length field. */
export const MAX_META_BYTES = 0xffff;
/** A span entry's value: 8-byte span id | f64 BE start (µs since the epoch) | f64 BE duration (µs). */
const SPAN_VALUE_BYTES = 24;
/** The whole metadata section of a response that carries a span. */
export const SPAN_META_BYTES = META_LENGTH_BYTES + META_ENTRY_BYTES + SPAN_VALUE_BYTES;

/** The peer broke the protocol; the connection is closed (never resynchronised). */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/** Called once per complete frame; `payload` may be a view of the read buffer (copy to keep it past reuse). */
export type FrameSink = (type: number, id: number, flags: number, code: number, payload: Buffer) => void;

const EMPTY = Buffer.alloc(0);

/**
 * Streaming decoder. A frame wholly inside one read is passed on as a `subarray` of it (no copy);
 * only a frame split across reads is copied, once, into a buffer of its exact size allocated when
 * its header is complete, so a large frame in many reads costs O(size), not O(size²).
 * A declared length over `maxPayloadBytes` throws before anything of that frame is buffered.
 */
export class FrameDecoder {
  /** Header bytes of a frame split across reads. */
  private readonly head = Buffer.allocUnsafe(HEADER_BYTES);
  private headFill = 0;
  /** Payload of a split frame, allocated at its declared size. */
  private body: Buffer | undefined;
  private bodyFill = 0;
  private id = 0;
  private type = 0;
  private flags = 0;
  private code = 0;

  constructor(private readonly maxPayloadBytes: number, private readonly sink: FrameSink) {}

  /** True while part of a frame has been read and the rest has not (a close now truncates it). */
  get midFrame(): boolean {
    return this.headFill > 0;
  }

  /** Decodes `chunk`, calling the sink for each frame it completes. Throws ProtocolError. */
  push(chunk: Buffer): void {
    let off = 0;
    const end = chunk.length;
    if (this.headFill > 0) {
      off = this.continueSplit(chunk);
      if (off < 0) return;
    }
    // Fast path: whole frames inside this chunk, handed on as views.
    while (end - off >= HEADER_BYTES) {
      const length = chunk.readUInt32BE(off);
      this.checkLength(length);
      const start = off + HEADER_BYTES;
      if (end - start < length) break;
      this.sink(chunk[off + 8] as number, chunk.readUInt32BE(off + 4), chunk[off + 9] as number, chunk.readUInt16BE(off + 10), chunk.subarray(start, start + length));
      off = start + length;
    }
    if (off < end) this.startSplit(chunk, off);
  }

  /** Begins a frame whose bytes run past the end of `chunk`. */
  private startSplit(chunk: Buffer, off: number): void {
    const n = chunk.length - off;
    chunk.copy(this.head, 0, off, off + Math.min(n, HEADER_BYTES));
    this.headFill = Math.min(n, HEADER_BYTES);
    if (this.headFill === HEADER_BYTES) {
      this.parseHead();
      const body = this.body as Buffer;
      chunk.copy(body, 0, off + HEADER_BYTES);
      this.bodyFill = n - HEADER_BYTES;
    }
  }

  /** Feeds a split frame; returns the offset after it, or -1 when `chunk` ended first. */
  private continueSplit(chunk: Buffer): number {
    let off = 0;
    if (this.headFill < HEADER_BYTES) {
      const n = Math.min(HEADER_BYTES - this.headFill, chunk.length);
      chunk.copy(this.head, this.headFill, 0, n);
      this.headFill += n;
      off = n;
      if (this.headFill < HEADER_BYTES) return -1;
      const length = this.head.readUInt32BE(0);
      this.checkLength(length);
      if (chunk.length - off >= length) {
        // The header was split but the payload is all here: no copy.
        this.headFill = 0;
        this.sink(this.head[8] as number, this.head.readUInt32BE(4), this.head[9] as number, this.head.readUInt16BE(10), length === 0 ? EMPTY : chunk.subarray(off, off + length));
        return off + length;
      }
      this.parseHead();
    }
    const body = this.body as Buffer;
    const n = Math.min(body.length - this.bodyFill, chunk.length - off);
    chunk.copy(body, this.bodyFill, off, off + n);
    this.bodyFill += n;
    off += n;
    if (this.bodyFill < body.length) return -1;
    this.headFill = 0;
    this.body = undefined;
    this.sink(this.type, this.id, this.flags, this.code, body);
    return off;
  }

  private parseHead(): void {
    const length = this.head.readUInt32BE(0);
    this.checkLength(length);
    this.id = this.head.readUInt32BE(4);
    this.type = this.head[8] as number;
    this.flags = this.head[9] as number;
    this.code = this.head.readUInt16BE(10);
    this.body = Buffer.allocUnsafe(length);
    this.bodyFill = 0;
  }

  private checkLength(length: number): void {
    if (length > this.maxPayloadBytes) throw new ProtocolError(`Frame of ${length} bytes exceeds the limit of ${this.maxPayloadBytes} bytes.`);
  }
}

/**
 * Bodies of at least this many bytes are not copied into a turn's write buffer but handed to the
 * socket as chunks of their own (one `writev` together with the rest, under cork/uncork).
 * Measured (docs/channel.md, echo over a Unix socket): for small frames one concatenated buffer
 * beats cork + a write per frame (64 in flight: 590–620k vs 460–515k req/s); for a 1 MiB body,
 * not copying it wins (660–720 vs 860–900 µs per round trip).
 */
export const COPY_LIMIT_BYTES = 16 * 1024;

/** Writes `chunks` as one batch; `cb` (optional) runs when the kernel has taken the last one. */
export function writeChunks(socket: { cork(): void; uncork(): void; write(b: Buffer, cb?: (err?: Error | null) => void): boolean }, chunks: Buffer[], cb?: (err?: Error | null) => void): void {
  if (chunks.length === 1) {
    socket.write(chunks[0] as Buffer, cb);
    return;
  }
  socket.cork();
  const last = chunks.length - 1;
  for (let i = 0; i < last; i++) socket.write(chunks[i] as Buffer);
  socket.write(chunks[last] as Buffer, cb);
  socket.uncork();
}

/** Writes a frame header at `off`; returns the offset after it. */
export function writeHeader(buf: Buffer, off: number, payloadLength: number, id: number, type: number, code: number, flags = 0): number {
  buf.writeUInt32BE(payloadLength, off);
  buf.writeUInt32BE(id, off + 4);
  buf[off + 8] = type;
  buf[off + 9] = flags;
  buf.writeUInt16BE(code, off + 10);
  return off + HEADER_BYTES;
}

/**
 * Bytes of the metadata section that carries `meta`, length field included; 0 when it has nothing
 * to carry (the frame then goes without META). Values are ASCII: one byte per character.
 */
export function requestMetaBytes(meta: RequestMeta): number {
  let n = 0;
  if (meta.requestId !== undefined) n += META_ENTRY_BYTES + meta.requestId.length;
  if (meta.traceparent !== undefined) n += META_ENTRY_BYTES + meta.traceparent.length;
  if (meta.tracestate !== undefined) n += META_ENTRY_BYTES + meta.tracestate.length;
  if (meta.member !== undefined) n += META_ENTRY_BYTES + meta.member.length;
  return n === 0 ? 0 : META_LENGTH_BYTES + n;
}

/** Writes the metadata section of `meta` (`sectionBytes` from `requestMetaBytes`) at `off`; returns the offset after it. */
export function writeRequestMeta(buf: Buffer, off: number, meta: RequestMeta, sectionBytes: number): number {
  off = buf.writeUInt16BE(sectionBytes - META_LENGTH_BYTES, off);
  if (meta.requestId !== undefined) off = writeEntry(buf, off, RequestMetaKey.REQUEST_ID, meta.requestId);
  if (meta.traceparent !== undefined) off = writeEntry(buf, off, RequestMetaKey.TRACEPARENT, meta.traceparent);
  if (meta.tracestate !== undefined) off = writeEntry(buf, off, RequestMetaKey.TRACESTATE, meta.tracestate);
  if (meta.member !== undefined) off = writeEntry(buf, off, RequestMetaKey.MEMBER, meta.member);
  return off;
}

function writeEntry(buf: Buffer, off: number, key: number, value: string): number {
  buf[off] = key;
  off = buf.writeUInt16BE(value.length, off + 1);
  return off + buf.write(value, off, 'latin1');
}

/**
 * Reads the metadata section at the start of a request payload into `meta`; returns its length
 * (where the path length starts). Unknown keys are skipped. Throws ProtocolError when the section
 * or an entry runs past its end.
 */
export function readRequestMeta(payload: Buffer, meta: RequestMeta): number {
  const end = metaSectionEnd(payload);
  let off = META_LENGTH_BYTES;
  while (off < end) {
    if (end - off < META_ENTRY_BYTES) throw new ProtocolError('Metadata entry runs past the end of its section.');
    const key = payload[off] as number;
    const valueEnd = off + META_ENTRY_BYTES + payload.readUInt16BE(off + 1);
    if (valueEnd > end) throw new ProtocolError('Metadata entry runs past the end of its section.');
    const value = payload.toString('latin1', off + META_ENTRY_BYTES, valueEnd);
    if (key === RequestMetaKey.REQUEST_ID) meta.requestId = value;
    else if (key === RequestMetaKey.TRACEPARENT) meta.traceparent = value;
    else if (key === RequestMetaKey.TRACESTATE) meta.tracestate = value;
    else if (key === RequestMetaKey.MEMBER) meta.member = value;
    off = valueEnd;
  }
  return end;
}

/** Writes the metadata section carrying `span` (SPAN_META_BYTES) at `off`; returns the offset after it. */
export function writeSpanMeta(buf: Buffer, off: number, span: ReplicaSpan): number {
  off = buf.writeUInt16BE(SPAN_META_BYTES - META_LENGTH_BYTES, off);
  buf[off] = ResponseMetaKey.SPAN;
  off = buf.writeUInt16BE(SPAN_VALUE_BYTES, off + 1);
  buf.write(span.spanId, off, 8, 'hex');
  off = buf.writeDoubleBE(span.startUnixUs, off + 8);
  return buf.writeDoubleBE(span.durationUs, off);
}

/**
 * Reads the metadata section at the start of a response payload; returns the span it carries
 * (undefined when none) and the section's length (where the body starts). Throws ProtocolError
 * when it runs past its end.
 */
export function readResponseMeta(payload: Buffer): { span: ReplicaSpan | undefined; bodyStart: number } {
  const end = metaSectionEnd(payload);
  let span: ReplicaSpan | undefined;
  let off = META_LENGTH_BYTES;
  while (off < end) {
    if (end - off < META_ENTRY_BYTES) throw new ProtocolError('Metadata entry runs past the end of its section.');
    const key = payload[off] as number;
    const length = payload.readUInt16BE(off + 1);
    const valueStart = off + META_ENTRY_BYTES;
    if (valueStart + length > end) throw new ProtocolError('Metadata entry runs past the end of its section.');
    if (key === ResponseMetaKey.SPAN && length >= SPAN_VALUE_BYTES) {
      span = { spanId: payload.toString('hex', valueStart, valueStart + 8), startUnixUs: payload.readDoubleBE(valueStart + 8), durationUs: payload.readDoubleBE(valueStart + 16) };
    }
    off = valueStart + length;
  }
  return { span, bodyStart: end };
}

function metaSectionEnd(payload: Buffer): number {
  if (payload.length < META_LENGTH_BYTES) throw new ProtocolError('Frame shorter than its metadata length.');
  const end = META_LENGTH_BYTES + payload.readUInt16BE(0);
  if (end > payload.length) throw new ProtocolError('Metadata runs past the end of its frame.');
  return end;
}

/** A whole request frame (for tests and tools; the channel writes frames straight into its flush buffer). */
export function encodeRequestFrame(id: number, method: number, path: string, body: Buffer | undefined, meta?: RequestMeta): Buffer {
  const metaBytes = meta === undefined ? 0 : requestMetaBytes(meta);
  const flags = (metaBytes > 0 ? FrameFlag.META : 0) | (meta?.wantSpan === true ? FrameFlag.SPAN_WANTED : 0);
  const pathBytes = Buffer.byteLength(path);
  const bodyBytes = body?.length ?? 0;
  const payloadBytes = metaBytes + PATH_LENGTH_BYTES + pathBytes + bodyBytes;
  const buf = Buffer.allocUnsafe(HEADER_BYTES + payloadBytes);
  let off = writeHeader(buf, 0, payloadBytes, id, FrameType.REQUEST, method, flags);
  if (meta !== undefined && metaBytes > 0) off = writeRequestMeta(buf, off, meta, metaBytes);
  off = buf.writeUInt16BE(pathBytes, off);
  off += buf.write(path, off, 'utf8');
  if (body) body.copy(buf, off);
  return buf;
}

/** A whole response frame (for tests and tools). */
export function encodeResponseFrame(id: number, status: number, body: Buffer | string, span?: ReplicaSpan): Buffer {
  const metaBytes = span === undefined ? 0 : SPAN_META_BYTES;
  const bodyBytes = typeof body === 'string' ? Buffer.byteLength(body) : body.length;
  const buf = Buffer.allocUnsafe(HEADER_BYTES + metaBytes + bodyBytes);
  let off = writeHeader(buf, 0, metaBytes + bodyBytes, id, FrameType.RESPONSE, status, span === undefined ? 0 : FrameFlag.META);
  if (span !== undefined) off = writeSpanMeta(buf, off, span);
  if (typeof body === 'string') buf.write(body, off, 'utf8');
  else body.copy(buf, off);
  return buf;
}
