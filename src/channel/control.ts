/**
 * The control channel's codec: the frames the local runtime and its replica processes exchange
 * over the replica's descriptor 3 (a socketpair the runtime creates at spawn), for the warm pool
 * (`warm`, `start`), readiness hints (`listening`), a family's model bytes (`stage`, `staged`) and
 * a graceful stop (`drain`). Both ends use this module; what each message means lives with each
 * end (`src/replica/control.ts`, `src/runtime/local/control.ts`).
 *
 * Why not Node's 'ipc' channel: its reader lives in the server and throws on a line that is not
 * JSON, and a replica runs a user's model, which can write anything to any descriptor it
 * inherited (the permission model does not cover open descriptors). Here every frame is bounded
 * and the decoder never throws: it reports what was wrong, and the runtime kills the sender.
 *
 * Frame: `u32 headerBytes | u32 payloadBytes | header (UTF-8 JSON object with a string "type") |
 * payload (raw bytes)`, lengths big-endian. Example: `{"type":"listening"}` is 20 header bytes, so
 * the frame is 00 00 00 14 · 00 00 00 00 · the 20 bytes: 28 bytes in all. A family member's model
 * file travels as the payload of `staged`, not as base64 inside the JSON.
 */

/** The replica's descriptor that carries the control channel. */
export const CONTROL_FD = 3;
/** Bytes before the header: its length and the payload's. */
export const CONTROL_PREFIX_BYTES = 8;

/** Largest frame a side accepts; anything bigger is a protocol violation, refused before it is buffered. */
export interface ControlLimits {
  maxHeaderBytes: number;
  maxPayloadBytes: number;
}

/** A decoded frame: a JSON object with a string `type`, and its payload (empty when none). */
export interface ControlFrame {
  header: { type: string } & Record<string, unknown>;
  payload: Buffer;
}

const EMPTY = Buffer.alloc(0);

/** One frame's bytes. */
export function encodeControlFrame(header: Record<string, unknown> & { type: string }, payload: Buffer = EMPTY): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const prefix = Buffer.allocUnsafe(CONTROL_PREFIX_BYTES);
  prefix.writeUInt32BE(json.length, 0);
  prefix.writeUInt32BE(payload.length, 4);
  return Buffer.concat([prefix, json, payload]);
}

/**
 * Splits a byte stream into frames. `push` never throws: it returns the whole frames the bytes
 * completed and, at the first malformed one (a length over the limits, a header that is not a JSON
 * object with a string `type`), `error` saying what it was; from then on every push returns that
 * error and no frames (a stream that lost its framing cannot be trusted again). Memory is bounded
 * by the limits: a partial frame is kept only once its prefix proved it allowed.
 */
export class ControlDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private failure: string | undefined;

  constructor(private readonly limits: ControlLimits) {}

  /** The first violation seen, if any. */
  get error(): string | undefined {
    return this.failure;
  }

  push(chunk: Buffer): { frames: ControlFrame[]; error: string | undefined } {
    const frames: ControlFrame[] = [];
    if (this.failure !== undefined) return { frames, error: this.failure };
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    while (this.buffered >= CONTROL_PREFIX_BYTES) {
      const prefix = this.peek(CONTROL_PREFIX_BYTES);
      const headerBytes = prefix.readUInt32BE(0);
      const payloadBytes = prefix.readUInt32BE(4);
      if (headerBytes === 0 || headerBytes > this.limits.maxHeaderBytes) {
        return this.fail(frames, `a frame header of ${headerBytes} bytes (allowed: 1 to ${this.limits.maxHeaderBytes})`);
      }
      if (payloadBytes > this.limits.maxPayloadBytes) {
        return this.fail(frames, `a frame payload of ${payloadBytes} bytes (allowed: at most ${this.limits.maxPayloadBytes})`);
      }
      const total = CONTROL_PREFIX_BYTES + headerBytes + payloadBytes;
      if (this.buffered < total) break;
      const frame = this.take(total);
      const header = parseHeader(frame.subarray(CONTROL_PREFIX_BYTES, CONTROL_PREFIX_BYTES + headerBytes));
      if (typeof header === 'string') return this.fail(frames, header);
      frames.push({ header, payload: frame.subarray(CONTROL_PREFIX_BYTES + headerBytes) });
    }
    return { frames, error: undefined };
  }

  private fail(frames: ControlFrame[], what: string): { frames: ControlFrame[]; error: string } {
    this.failure = what;
    this.chunks = [];
    this.buffered = 0;
    return { frames, error: what };
  }

  /** The first `n` buffered bytes (n ≤ buffered), without consuming them. */
  private peek(n: number): Buffer {
    const first = this.chunks[0] as Buffer;
    if (first.length >= n) return first.subarray(0, n);
    const joined = Buffer.concat(this.chunks);
    this.chunks = [joined];
    return joined.subarray(0, n);
  }

  /** Consumes the first `n` buffered bytes (n ≤ buffered). */
  private take(n: number): Buffer {
    const joined = this.peek(n);
    const first = this.chunks[0] as Buffer;
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
    return joined;
  }
}

/** The header as an object with a string `type`, or what is wrong with it. */
function parseHeader(bytes: Buffer): ControlFrame['header'] | string {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    return `a frame header that is not JSON (${JSON.stringify(bytes.subarray(0, 40).toString('latin1'))}…)`;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'a frame header that is not a JSON object';
  const type = (value as Record<string, unknown>).type;
  if (typeof type !== 'string') return 'a frame header without a string "type"';
  return value as ControlFrame['header'];
}
