/**
 * The OIP v2 binary tensor extension (KServe / Triton): a request or response body is a JSON
 * header followed by raw tensor bytes, the header's length in the `Inference-Header-Content-Length`
 * HTTP header. A tensor in the binary part has `parameters.binary_data_size` (its byte count) and
 * no `data`; tensors follow one another in the order the header lists them. Element encodings
 * (little-endian, as numpy's `tobytes()` on the hosts clients run on):
 * - numbers: their fixed-size values (FP16 as IEEE half, INT64 as 8 bytes, ...);
 * - BOOL: one byte per element, 0 or 1;
 * - BYTES: per element a u32 length, then that many bytes (strings as UTF-8).
 *
 * Decoding makes the same tensors the JSON path makes, without copying numbers when their bytes
 * are aligned for their type (a typed-array view of the request's buffer); FP16, BOOL and BYTES
 * are converted (Ferry keeps FP16 as float32 values, BOOL as booleans, BYTES as strings).
 */
import { FerryError, invalidParameter } from '../errors.js';
import { elementCount, float32ToHalfBits, halfBitsToFloat32, type DType, type Tensor, type TensorData, type TensorSpec } from '../tensor/index.js';

/** The binary part of a request, handed out tensor by tensor. */
export class BinaryCursor {
  private offset = 0;
  constructor(private readonly bytes: Buffer) {}

  /** The next `size` bytes (a view, not a copy); 400 at `field` when fewer are left. */
  take(size: number, field: string): Buffer {
    if (size > this.bytes.length - this.offset) {
      throw invalidParameter(field, size, `at most the ${this.bytes.length - this.offset} bytes left in the binary part of the request`);
    }
    const out = this.bytes.subarray(this.offset, this.offset + size);
    this.offset += size;
    return out;
  }

  /** 400 when bytes are left over after the last binary tensor. */
  checkConsumed(): void {
    const left = this.bytes.length - this.offset;
    if (left > 0) {
      throw invalidParameter('Inference-Header-Content-Length', this.offset, `a header length that leaves exactly the binary tensors' bytes (${left} bytes follow the last one)`);
    }
  }
}

type NumberArrayCtor = new (buffer: ArrayBufferLike, byteOffset: number, length: number) => TensorData;

/** Typed storage of the fixed-size dtypes whose bytes are used as they are. */
const VIEWS: Partial<Record<DType, { ctor: NumberArrayCtor; bytes: number }>> = {
  float32: { ctor: Float32Array, bytes: 4 },
  float64: { ctor: Float64Array, bytes: 8 },
  int8: { ctor: Int8Array, bytes: 1 },
  int16: { ctor: Int16Array, bytes: 2 },
  int32: { ctor: Int32Array, bytes: 4 },
  int64: { ctor: BigInt64Array, bytes: 8 },
  uint8: { ctor: Uint8Array, bytes: 1 },
  uint16: { ctor: Uint16Array, bytes: 2 },
  uint32: { ctor: Uint32Array, bytes: 4 },
  uint64: { ctor: BigUint64Array, bytes: 8 },
};

/** Bytes per element of a fixed-size dtype (BYTES has none). */
function elementBytes(dtype: DType): number | undefined {
  if (dtype === 'bool') return 1;
  if (dtype === 'float16') return 2;
  return VIEWS[dtype]?.bytes;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * One input's binary bytes as the tensor for `spec` of `shape`; `field` names the input
 * (`inputs[0]`) in errors. Byte counts must match the shape exactly.
 */
export function binaryTensor(bytes: Buffer, spec: TensorSpec, shape: number[], field: string): Tensor {
  const n = elementCount(shape);
  const sizeField = `${field}.parameters.binary_data_size`;
  const width = elementBytes(spec.dtype);
  if (width !== undefined && bytes.length !== n * width) {
    throw invalidParameter(sizeField, bytes.length, `${n * width} bytes: ${n} elements of ${width} byte${width > 1 ? 's' : ''} for shape [${shape.join(', ')}]`);
  }
  return { dtype: spec.dtype, shape, data: binaryData(bytes, spec, n, field) };
}

function binaryData(bytes: Buffer, spec: TensorSpec, n: number, field: string): TensorData {
  switch (spec.dtype) {
    case 'bool': {
      const out = new Array<boolean>(n);
      for (let i = 0; i < n; i++) {
        const b = bytes[i] as number;
        if (b > 1) throw invalidParameter(`${field} byte ${i}`, b, `0 or 1 (BOOL input '${spec.name}')`);
        out[i] = b === 1;
      }
      return out;
    }
    case 'float16': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = halfBitsToFloat32(bytes.readUInt16LE(i * 2));
      return out;
    }
    case 'string':
      return byteStrings(bytes, n, spec, field);
    default: {
      const view = VIEWS[spec.dtype] as { ctor: NumberArrayCtor; bytes: number };
      // A view when the bytes sit at a multiple of the element size; else one aligned copy.
      if (bytes.byteOffset % view.bytes === 0) return new view.ctor(bytes.buffer, bytes.byteOffset, n);
      const copy = new Uint8Array(bytes);
      return new view.ctor(copy.buffer, 0, n);
    }
  }
}

/** BYTES elements: u32 little-endian length + bytes, `n` of them filling `bytes` exactly; UTF-8 text. */
function byteStrings(bytes: Buffer, n: number, spec: TensorSpec, field: string): string[] {
  const out = new Array<string>(n);
  let off = 0;
  for (let i = 0; i < n; i++) {
    if (off + 4 > bytes.length) throw invalidParameter(`${field}.parameters.binary_data_size`, bytes.length, `room for ${n} length-prefixed BYTES elements (element ${i} is cut off)`);
    const len = bytes.readUInt32LE(off);
    off += 4;
    if (len > bytes.length - off) throw invalidParameter(`${field} element ${i}`, len, `a length within the ${bytes.length - off} bytes left`);
    try {
      out[i] = utf8.decode(bytes.subarray(off, off + len));
    } catch {
      throw invalidParameter(`${field} element ${i}`, '<bytes>', `UTF-8 text (input '${spec.name}' is a string tensor)`);
    }
    off += len;
  }
  if (off !== bytes.length) throw invalidParameter(`${field}.parameters.binary_data_size`, bytes.length, `${off} bytes: ${n} length-prefixed BYTES elements`);
  return out;
}

/**
 * A tensor's elements as binary-extension bytes. Numbers (FP16 excepted) are a view of the
 * tensor's storage; BOOL, FP16 and BYTES (strings, or one JSON text per row of a map or json
 * output) are encoded.
 */
export function tensorBytes(dtype: DType, data: TensorData | readonly unknown[]): Buffer {
  switch (dtype) {
    case 'bool':
      return Buffer.from((data as boolean[]).map((b) => (b ? 1 : 0)));
    case 'float16': {
      const values = data as Float32Array;
      const out = Buffer.allocUnsafe(values.length * 2);
      for (let i = 0; i < values.length; i++) out.writeUInt16LE(float32ToHalfBits(values[i] as number), i * 2);
      return out;
    }
    case 'string': {
      const texts = (data as readonly unknown[]).map((s) => Buffer.from(typeof s === 'string' ? s : JSON.stringify(s), 'utf8'));
      const out = Buffer.allocUnsafe(texts.reduce((sum, t) => sum + 4 + t.length, 0));
      let off = 0;
      for (const t of texts) {
        off = out.writeUInt32LE(t.length, off);
        off += t.copy(out, off);
      }
      return out;
    }
    default: {
      const a = data as Exclude<TensorData, boolean[] | string[]>;
      return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
    }
  }
}

/**
 * How a replica answers a v2 inference in binary to the gateway, on the frame channel (whose
 * responses carry only a status and a body): byte 0, the JSON header's length as a big-endian
 * u32, the header, then the tensors' bytes. A JSON answer starts with `{`, never with 0, so the
 * gateway tells them apart by the first byte and passes the rest on without copying it, with the
 * length as `Inference-Header-Content-Length`.
 */
export const BINARY_ANSWER_MARK = 0;
const ANSWER_PREFIX_BYTES = 5;

/** The binary answer frame for a JSON header and the tensors' bytes that follow it. */
export function binaryAnswer(header: string, parts: readonly Buffer[]): Buffer {
  const head = Buffer.from(header, 'utf8');
  const prefix = Buffer.allocUnsafe(ANSWER_PREFIX_BYTES);
  prefix[0] = BINARY_ANSWER_MARK;
  prefix.writeUInt32BE(head.length, 1);
  return Buffer.concat([prefix, head, ...parts]);
}

/**
 * A replica's binary answer as the client gets it: the header length and the body (header +
 * tensors, a view). Undefined for a JSON answer.
 * @throws FerryError BAD_GATEWAY for a binary answer whose header length runs past its end.
 */
export function readBinaryAnswer(body: Buffer): { headerBytes: number; body: Buffer } | undefined {
  if (body.length === 0 || body[0] !== BINARY_ANSWER_MARK) return undefined;
  const headerBytes = body.length >= ANSWER_PREFIX_BYTES ? body.readUInt32BE(1) : -1;
  if (headerBytes < 0 || headerBytes > body.length - ANSWER_PREFIX_BYTES) throw new FerryError('BAD_GATEWAY', 'The replica sent a malformed binary inference answer.');
  return { headerBytes, body: body.subarray(ANSWER_PREFIX_BYTES) };
}
