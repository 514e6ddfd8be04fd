/**
 * Reads a GGUF file's header and metadata in pure JS (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md),
 * without llama.cpp: registration inspects models inside the server process, which never loads
 * native model code. Tensor data is not read. Arrays are kept only when short (a vocabulary of
 * 150k tokens is counted, not copied).
 */
import fsp from 'node:fs/promises';
import { FerryError } from '../../errors.js';

/** A metadata value; long arrays are summarised as their element count. */
export type GgufValue = number | bigint | boolean | string | GgufValue[] | { arrayLength: number };

export interface GgufHeader {
  version: number;
  tensorCount: number;
  metadata: Map<string, GgufValue>;
}

/** Arrays longer than this are counted, not kept. */
const MAX_KEPT_ARRAY = 64;
/** Metadata past this many bytes is refused (real models: a few MiB, mostly the vocabulary). */
const MAX_METADATA_BYTES = 256 * 1024 * 1024;
const READ_CHUNK_BYTES = 1024 * 1024;

class OutOfData extends Error {}

/** A cursor over a file read in chunks as it advances. */
class Reader {
  private buf = Buffer.alloc(0);
  private base = 0;
  off = 0;

  constructor(private readonly fh: fsp.FileHandle, private readonly size: number) {}

  /** Makes `n` bytes from the cursor available. */
  async need(n: number): Promise<void> {
    const end = this.off + n;
    if (end - this.base <= this.buf.length) return;
    if (end > this.size) throw new OutOfData();
    if (end > MAX_METADATA_BYTES) throw new FerryError('INVALID_PARAMETER_VALUE', `The GGUF metadata is larger than ${MAX_METADATA_BYTES} bytes.`);
    const keep = this.buf.subarray(this.off - this.base);
    const want = Math.max(n, READ_CHUNK_BYTES);
    const fresh = Buffer.alloc(Math.min(want, this.size - this.off - keep.length) + keep.length);
    keep.copy(fresh);
    await this.fh.read(fresh, keep.length, fresh.length - keep.length, this.off + keep.length);
    this.buf = fresh;
    this.base = this.off;
  }

  private at(n: number): number {
    const p = this.off - this.base;
    this.off += n;
    return p;
  }

  async u8(): Promise<number> { await this.need(1); return this.buf.readUInt8(this.at(1)); }
  async i8(): Promise<number> { await this.need(1); return this.buf.readInt8(this.at(1)); }
  async u16(): Promise<number> { await this.need(2); return this.buf.readUInt16LE(this.at(2)); }
  async i16(): Promise<number> { await this.need(2); return this.buf.readInt16LE(this.at(2)); }
  async u32(): Promise<number> { await this.need(4); return this.buf.readUInt32LE(this.at(4)); }
  async i32(): Promise<number> { await this.need(4); return this.buf.readInt32LE(this.at(4)); }
  async f32(): Promise<number> { await this.need(4); return this.buf.readFloatLE(this.at(4)); }
  async f64(): Promise<number> { await this.need(8); return this.buf.readDoubleLE(this.at(8)); }
  async u64(): Promise<bigint> { await this.need(8); return this.buf.readBigUInt64LE(this.at(8)); }
  async i64(): Promise<bigint> { await this.need(8); return this.buf.readBigInt64LE(this.at(8)); }

  /** A u64 that must fit a JS number (counts and lengths). */
  async count(): Promise<number> {
    const v = await this.u64();
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new FerryError('INVALID_PARAMETER_VALUE', `The GGUF file declares a length of ${v}.`);
    return Number(v);
  }

  async str(): Promise<string> {
    const n = await this.count();
    await this.need(n);
    const p = this.at(n);
    return this.buf.toString('utf8', p, p + n);
  }
}

/** Value type ids of the spec's `gguf_metadata_value_type`. */
const ARRAY = 9;
const STRING = 8;

async function readValue(r: Reader, type: number): Promise<GgufValue> {
  switch (type) {
    case 0: return r.u8();
    case 1: return r.i8();
    case 2: return r.u16();
    case 3: return r.i16();
    case 4: return r.u32();
    case 5: return r.i32();
    case 6: return r.f32();
    case 7: return (await r.u8()) !== 0;
    case STRING: return r.str();
    case ARRAY: {
      const itemType = await r.u32();
      const n = await r.count();
      if (itemType === ARRAY) throw new FerryError('INVALID_PARAMETER_VALUE', 'The GGUF file nests arrays, which Ferry does not read.');
      const keep = n <= MAX_KEPT_ARRAY;
      const items: GgufValue[] = [];
      for (let i = 0; i < n; i++) {
        const v = await readValue(r, itemType);
        if (keep) items.push(v);
      }
      return keep ? items : { arrayLength: n };
    }
    case 10: return r.u64();
    case 11: return r.i64();
    case 12: return r.f64();
    default: throw new FerryError('INVALID_PARAMETER_VALUE', `The GGUF file has a metadata value of unknown type ${type}.`);
  }
}

/** Reads the header and metadata of the GGUF file at `file`. Throws INVALID_PARAMETER_VALUE naming the problem. */
export async function readGgufHeader(file: string): Promise<GgufHeader> {
  const fh = await fsp.open(file, 'r');
  try {
    const r = new Reader(fh, (await fh.stat()).size);
    await r.need(4);
    if ((await r.u32()) !== 0x46554747) throw new FerryError('INVALID_PARAMETER_VALUE', `'${file.split('/').pop() ?? file}' is not a GGUF file (its first bytes are not "GGUF").`);
    const version = await r.u32();
    if (version !== 2 && version !== 3) throw new FerryError('INVALID_PARAMETER_VALUE', `GGUF version ${version} is not supported (expected 2 or 3).`);
    const tensorCount = await r.count();
    const kvCount = await r.count();
    const metadata = new Map<string, GgufValue>();
    for (let i = 0; i < kvCount; i++) {
      const key = await r.str();
      metadata.set(key, await readValue(r, await r.u32()));
    }
    return { version, tensorCount, metadata };
  } catch (err) {
    if (err instanceof OutOfData) throw new FerryError('INVALID_PARAMETER_VALUE', 'The GGUF file ends inside its metadata (truncated?).');
    throw err;
  } finally {
    await fh.close();
  }
}
