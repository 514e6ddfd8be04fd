/**
 * The inspector's message framing over its stdin/stdout pipes: a 4-byte big-endian length of the
 * message, a 4-byte big-endian length of its attachment, the message (UTF-8 JSON), then the
 * attachment (raw bytes: the models a bulk registration sends to be inspected from memory). Each
 * side refuses a frame past its bounds before buffering it, so a misbehaving peer costs at most
 * that much memory. Shared by the server side (inspector.ts) and the inspector process
 * (inspector-main.ts).
 */

/**
 * Largest message: an answer carries a signature (at most 10,000 tensor specs) and an input example
 * (at most 1 MiB of JSON on disk, a little more re-serialised).
 */
export const MAX_INSPECTOR_FRAME_BYTES = 8 * 1024 * 1024;
/** Largest attachment the inspector process takes (the server sends at most this much per frame). */
export const MAX_INSPECTOR_ATTACHMENT_BYTES = 64 * 1024 * 1024;

const HEAD_BYTES = 8;

export interface Frame {
  message: unknown;
  attachment: Buffer;
}

export function encodeFrame(message: unknown, attachment: readonly Uint8Array[] = []): Buffer {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  if (body.length > MAX_INSPECTOR_FRAME_BYTES) throw new RangeError(`an inspector message of ${body.length} bytes is over the ${MAX_INSPECTOR_FRAME_BYTES}-byte frame limit`);
  const attached = attachment.reduce((n, a) => n + a.byteLength, 0);
  if (attached > MAX_INSPECTOR_ATTACHMENT_BYTES) throw new RangeError(`an inspector attachment of ${attached} bytes is over the ${MAX_INSPECTOR_ATTACHMENT_BYTES}-byte limit`);
  const head = Buffer.allocUnsafe(HEAD_BYTES);
  head.writeUInt32BE(body.length, 0);
  head.writeUInt32BE(attached, 4);
  return Buffer.concat([head, body, ...attachment]);
}

/**
 * Splits a byte stream into frames. `push` throws (RangeError, SyntaxError) on a bad frame,
 * including one with an attachment over `maxAttachmentBytes` (0: none allowed).
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private held = 0;
  /** Bytes of the frame at the front (header included), once its header was read. */
  private need: number | undefined;

  constructor(private readonly maxAttachmentBytes: number) {}

  push(chunk: Buffer): Frame[] {
    this.chunks.push(chunk);
    this.held += chunk.length;
    const out: Frame[] = [];
    for (;;) {
      if (this.need === undefined) {
        if (this.held < HEAD_BYTES) return out;
        if ((this.chunks[0] as Buffer).length < HEAD_BYTES) this.chunks = [Buffer.concat(this.chunks, this.held)];
        const head = this.chunks[0] as Buffer;
        const len = head.readUInt32BE(0);
        const attached = head.readUInt32BE(4);
        if (len > MAX_INSPECTOR_FRAME_BYTES) throw new RangeError(`an inspector frame of ${len} bytes is over the ${MAX_INSPECTOR_FRAME_BYTES}-byte limit`);
        if (attached > this.maxAttachmentBytes) throw new RangeError(`an inspector attachment of ${attached} bytes is over the ${this.maxAttachmentBytes}-byte limit`);
        this.need = HEAD_BYTES + len + attached;
      }
      // The chunks are joined once the whole frame is here, not on every chunk (a 64 MiB frame comes in ~1,000).
      if (this.held < this.need) return out;
      const buf = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks, this.held);
      const len = buf.readUInt32BE(0);
      out.push({ message: JSON.parse(buf.toString('utf8', HEAD_BYTES, HEAD_BYTES + len)) as unknown, attachment: buf.subarray(HEAD_BYTES + len, this.need) });
      const rest = buf.subarray(this.need);
      this.chunks = rest.length === 0 ? [] : [rest];
      this.held = rest.length;
      this.need = undefined;
    }
  }
}
