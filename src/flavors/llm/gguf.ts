/**
 * Reads a GGUF file's header and metadata in pure JS (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md),
 * without llama.cpp: registration inspects models in the inspector process (src/registry/inspector.ts),
 * which never loads native model code. Tensor data is not read. Arrays are kept only when short (a vocabulary of
 * 150k tokens is counted, not copied).
 */
import { FerryError } from '../../errors.js';
import { FileCursor, OutOfData } from '../file-cursor.js';

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
/** Most metadata keys (real models: ~20-50). */
const MAX_KV_COUNT = 65_536;
/** Longest string value or key (a chat template is a few KiB). */
const MAX_STRING_BYTES = 16 * 1024 * 1024;
/** Longest array (a vocabulary: ~150-260k tokens). */
const MAX_ARRAY_LENGTH = 16 * 1024 * 1024;

function refuse(problem: string): FerryError {
  return new FerryError('INVALID_PARAMETER_VALUE', `The GGUF file ${problem}.`);
}

/** Little-endian GGUF values over a FileCursor, with the header's bounds. */
class Reader {
  constructor(private readonly c: FileCursor) {}

  private take(n: number): Buffer {
    if (this.c.pos + n > MAX_METADATA_BYTES) throw refuse(`has more than ${MAX_METADATA_BYTES} bytes of metadata`);
    return this.c.bytes(n);
  }

  u8(): number { return this.take(1).readUInt8(0); }
  i8(): number { return this.take(1).readInt8(0); }
  u16(): number { return this.take(2).readUInt16LE(0); }
  i16(): number { return this.take(2).readInt16LE(0); }
  u32(): number { return this.take(4).readUInt32LE(0); }
  i32(): number { return this.take(4).readInt32LE(0); }
  f32(): number { return this.take(4).readFloatLE(0); }
  f64(): number { return this.take(8).readDoubleLE(0); }
  u64(): bigint { return this.take(8).readBigUInt64LE(0); }
  i64(): bigint { return this.take(8).readBigInt64LE(0); }

  /** A u64 count or length, at most `max` (`what` names it in the error). */
  count(max: number, what: string): number {
    const v = this.u64();
    if (v > BigInt(max)) throw refuse(`declares ${what} of ${v} (at most ${max} are read)`);
    return Number(v);
  }

  str(): string {
    const n = this.count(MAX_STRING_BYTES, 'a string length');
    return this.take(n).toString('utf8');
  }

  skipStr(): void {
    this.skip(this.count(MAX_STRING_BYTES, 'a string length'));
  }

  skip(n: number): void {
    if (this.c.pos + n > MAX_METADATA_BYTES) throw refuse(`has more than ${MAX_METADATA_BYTES} bytes of metadata`);
    this.c.skip(n);
  }
}

/** Value type ids of the spec's `gguf_metadata_value_type`. */
const ARRAY = 9;
const STRING = 8;
/** Sizes of the fixed-size value types, by type id. */
const FIXED_BYTES: Partial<Record<number, number>> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

function readValue(r: Reader, type: number): GgufValue {
  switch (type) {
    case 0: return r.u8();
    case 1: return r.i8();
    case 2: return r.u16();
    case 3: return r.i16();
    case 4: return r.u32();
    case 5: return r.i32();
    case 6: return r.f32();
    case 7: return r.u8() !== 0;
    case STRING: return r.str();
    case ARRAY: {
      const itemType = r.u32();
      const n = r.count(MAX_ARRAY_LENGTH, 'an array length');
      if (itemType === ARRAY) throw refuse('nests arrays, which Ferry does not read');
      if (n <= MAX_KEPT_ARRAY) return Array.from({ length: n }, () => readValue(r, itemType));
      // Long arrays are counted: strings are skipped by their lengths, fixed-size items at once.
      const size = FIXED_BYTES[itemType];
      if (itemType === STRING) for (let i = 0; i < n; i++) r.skipStr();
      else if (size !== undefined) r.skip(n * size);
      else throw refuse(`has a metadata value of unknown type ${itemType}`);
      return { arrayLength: n };
    }
    case 10: return r.u64();
    case 11: return r.i64();
    case 12: return r.f64();
    default: throw refuse(`has a metadata value of unknown type ${type}`);
  }
}

/**
 * Reads the header and metadata of the GGUF file at `file`, synchronously (see FileCursor). Throws
 * INVALID_PARAMETER_VALUE naming the problem; counts and lengths past the bounds above are refused
 * before anything is allocated for them.
 */
export function readGgufHeader(file: string): GgufHeader {
  return FileCursor.read(file, (c) => {
    const r = new Reader(c);
    try {
      if (c.size < 4 || r.u32() !== 0x46554747) throw new FerryError('INVALID_PARAMETER_VALUE', `'${file.split('/').pop() ?? file}' is not a GGUF file (its first bytes are not "GGUF").`);
      const version = r.u32();
      if (version !== 2 && version !== 3) throw new FerryError('INVALID_PARAMETER_VALUE', `GGUF version ${version} is not supported (expected 2 or 3).`);
      const tensorCount = r.count(Number.MAX_SAFE_INTEGER, 'a tensor count');
      const kvCount = r.count(MAX_KV_COUNT, 'a metadata key count');
      const metadata = new Map<string, GgufValue>();
      for (let i = 0; i < kvCount; i++) {
        const key = r.str();
        metadata.set(key, readValue(r, r.u32()));
      }
      return { version, tensorCount, metadata };
    } catch (err) {
      if (err instanceof OutOfData) throw new FerryError('INVALID_PARAMETER_VALUE', 'The GGUF file ends inside its metadata (truncated?).');
      throw err;
    }
  });
}
