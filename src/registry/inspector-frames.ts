/**
 * The inspector's message framing over its stdin/stdout pipes: a 4-byte big-endian length, then
 * that many bytes of UTF-8 JSON. Both sides refuse a frame past `MAX_INSPECTOR_FRAME_BYTES` before
 * buffering it, so a misbehaving peer costs at most that much memory. Shared by the server side
 * (inspector.ts) and the inspector process (inspector-main.ts).
 */

/**
 * Largest frame: an answer carries a signature (at most 10,000 tensor specs) and an input example
 * (at most 1 MiB of JSON on disk, a little more re-serialised).
 */
export const MAX_INSPECTOR_FRAME_BYTES = 8 * 1024 * 1024;

export function encodeFrame(message: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  if (body.length > MAX_INSPECTOR_FRAME_BYTES) throw new RangeError(`an inspector message of ${body.length} bytes is over the ${MAX_INSPECTOR_FRAME_BYTES}-byte frame limit`);
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

/** Splits a byte stream into parsed frames. `push` throws (RangeError, SyntaxError) on a bad frame. */
export class FrameReader {
  private chunks: Buffer[] = [];
  private held = 0;

  push(chunk: Buffer): unknown[] {
    this.chunks.push(chunk);
    this.held += chunk.length;
    const out: unknown[] = [];
    for (;;) {
      if (this.held < 4) return out;
      const buf = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks, this.held);
      this.chunks = [buf];
      const len = buf.readUInt32BE(0);
      if (len > MAX_INSPECTOR_FRAME_BYTES) throw new RangeError(`an inspector frame of ${len} bytes is over the ${MAX_INSPECTOR_FRAME_BYTES}-byte limit`);
      if (this.held < 4 + len) return out;
      out.push(JSON.parse(buf.toString('utf8', 4, 4 + len)) as unknown);
      const rest = buf.subarray(4 + len);
      this.chunks = rest.length === 0 ? [] : [rest];
      this.held = rest.length;
    }
  }
}
