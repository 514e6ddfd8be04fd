/**
 * The replica ↔ Python worker link: length-prefixed binary frames over a Unix socketpair (the
 * worker's fd 3). Layout (both directions, little endian):
 *
 *   u32 frame length (bytes after this field) | u32 header length | header JSON (UTF-8)
 *   | zero padding to a multiple of 8 from the frame start | payload
 *
 * Numeric tensors travel in the payload as their raw bytes, each at an 8-byte aligned offset the
 * header names with dtype and shape: the replica writes views of its typed arrays (no copy), the
 * worker reads them as numpy views of the received buffer (no copy). Strings, params and outputs
 * that are not tensors travel in the header. Example: a [2, 3] float64 input is one header entry
 * `{"name":"x","dtype":"float64","shape":[2,3],"offset":0,"bytes":48}` and 48 payload bytes.
 * The worker's side is python/ferry_worker.py.
 */
import { FerryError } from '../../errors.js';
import { allocate, elementCount, isDType, type DType, type OutputValue, type Tensor, type TensorData } from '../../tensor/index.js';

/** A tensor as the header describes it: bytes in the payload, or string values inline. */
export type TensorEntry =
  | { name: string; dtype: Exclude<DType, 'string'>; shape: number[]; offset: number; bytes: number }
  | { name: string; dtype: 'string'; shape: number[]; values: string[] };

/** An output that is one JSON value per row (records of a DataFrame, a list of labels). */
export interface RowsEntry {
  name: string;
  rows: unknown[];
}

/** A decoded frame: its JSON header and the payload the header's offsets point into. */
export interface Frame {
  header: Record<string, unknown>;
  payload: Buffer;
}

/** Frames above this size are refused on both sides (a corrupted length must not allocate gigabytes). */
export const MAX_FRAME_BYTES = 2 ** 31 - 1;
const PAD = Buffer.alloc(8);

function align8(n: number): number {
  return (n + 7) & ~7;
}

/**
 * A frame as a list of buffers to write in one `writev`: the prefix with the header, then each
 * tensor's bytes (views of the tensors' own storage) with padding.
 */
export function encodeFrame(header: Record<string, unknown>, tensors: Record<string, Tensor> = {}): Buffer[] {
  const entries: TensorEntry[] = [];
  const parts: Buffer[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    if (t.dtype === 'string') {
      entries.push({ name, dtype: 'string', shape: t.shape, values: t.data as string[] });
      continue;
    }
    const bytes = bytesOf(t.data);
    entries.push({ name, dtype: t.dtype, shape: t.shape, offset, bytes: bytes.length });
    parts.push(bytes);
    const pad = align8(bytes.length) - bytes.length;
    if (pad > 0) parts.push(PAD.subarray(0, pad));
    offset += bytes.length + pad;
  }
  const head = Buffer.from(JSON.stringify(entries.length > 0 ? { ...header, inputs: entries } : header));
  const padded = align8(8 + head.length);
  const prefix = Buffer.alloc(padded);
  prefix.writeUInt32LE(padded - 4 + offset, 0);
  prefix.writeUInt32LE(head.length, 4);
  head.copy(prefix, 8);
  return [prefix, ...parts];
}

/** The raw bytes of a tensor's storage, as a view (booleans become one byte each: a copy). */
function bytesOf(data: TensorData): Buffer {
  if (Array.isArray(data)) return Buffer.from((data as boolean[]).map((b) => (b ? 1 : 0)));
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * Reassembles frames from a byte stream. `push` returns every frame completed by the chunk;
 * a frame's bytes are joined once, when it is complete.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private need = -1;

  push(chunk: Buffer): Frame[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const frames: Frame[] = [];
    for (;;) {
      if (this.need < 0) {
        if (this.buffered < 4) break;
        const length = this.take(4).readUInt32LE(0);
        if (length < 4 || length > MAX_FRAME_BYTES) throw new Error(`bad frame length ${length} from the Python worker`);
        this.need = length;
      }
      if (this.buffered < this.need) break;
      const frame = this.take(this.need);
      this.need = -1;
      const headLength = frame.readUInt32LE(0);
      if (4 + headLength > frame.length) throw new Error(`bad header length ${headLength} from the Python worker`);
      const header = JSON.parse(frame.toString('utf8', 4, 4 + headLength)) as unknown;
      if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new Error('a frame header from the Python worker is not an object');
      frames.push({ header: header as Record<string, unknown>, payload: frame.subarray(align8(8 + headLength) - 4) });
    }
    return frames;
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
    this.chunks = all.length > n ? [all.subarray(n)] : [];
    this.buffered -= n;
    return all.subarray(0, n);
  }
}

/**
 * The outputs of a worker's predict answer: tensors copied out of the payload into aligned typed
 * arrays, row values as a JsonSequence.
 * @throws FerryError MODEL_ERROR when an entry is malformed.
 */
export function decodeOutputs(entries: unknown, payload: Buffer): Record<string, OutputValue> {
  if (!Array.isArray(entries)) throw malformed('outputs is not a list');
  const out: Record<string, OutputValue> = {};
  for (const e of entries as unknown[]) {
    if (typeof e !== 'object' || e === null) throw malformed('an output is not an object');
    const o = e as Record<string, unknown>;
    if (typeof o.name !== 'string') throw malformed('an output has no name');
    if (Array.isArray(o.rows)) {
      out[o.name] = { dtype: 'json', data: o.rows as unknown[] };
      continue;
    }
    const { dtype, shape, offset, bytes } = o;
    if (!isDType(dtype) || dtype === 'string' || dtype === 'float16') throw malformed(`output '${o.name}' has dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) throw malformed(`output '${o.name}' has shape ${JSON.stringify(shape)}`);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(bytes) || (offset as number) < 0 || (offset as number) + (bytes as number) > payload.length) {
      throw malformed(`output '${o.name}' lies outside the payload`);
    }
    const count = elementCount(shape as number[]);
    const data = allocate(dtype, count);
    const src = payload.subarray(offset as number, (offset as number) + (bytes as number));
    if (Array.isArray(data)) {
      if (src.length !== count) throw malformed(`output '${o.name}' has ${src.length} bytes for ${count} booleans`);
      for (let i = 0; i < count; i++) data[i] = src[i] !== 0;
    } else {
      if (src.length !== data.byteLength) throw malformed(`output '${o.name}' has ${src.length} bytes for ${count} ${dtype} values`);
      Buffer.from(data.buffer, data.byteOffset, data.byteLength).set(src);
    }
    out[o.name] = { dtype, shape: shape as number[], data };
  }
  return out;
}

function malformed(what: string): FerryError {
  return new FerryError('MODEL_ERROR', `The Python worker sent a malformed answer: ${what}.`);
}
