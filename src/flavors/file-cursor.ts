/**
 * A forward cursor over a file read synchronously in 1 MiB chunks, for the artifact parsers (GGUF
 * header, ONNX wire format). They run in the inspector process (src/registry/inspector.ts), where
 * blocking reads cost nothing: one awaited read per value made a 32 MiB GGUF header cost 7 s of
 * CPU; a chunked synchronous read makes it ~0.1 s. Skipped bytes (tensor data, node lists) are
 * never read.
 */
import fs from 'node:fs';

/** Thrown when a value runs past the end of the file; parsers turn it into "truncated". */
export class OutOfData extends Error {}

const CHUNK_BYTES = 1024 * 1024;

export class FileCursor {
  /** Sized to the file when it is smaller than a chunk: most models of a bulk import are a few KB. */
  private readonly chunk: Buffer;
  /** The file offset of `chunk[0]`, and how many bytes of it are valid. */
  private base = 0;
  private filled = 0;
  /** The next byte to read. */
  pos = 0;

  /** `whole`: the file's bytes, all in memory (`over`); no file is read then. */
  private constructor(private readonly fd: number, readonly size: number, whole?: Buffer) {
    this.chunk = whole ?? Buffer.allocUnsafe(Math.min(CHUNK_BYTES, size));
    if (whole !== undefined) this.filled = whole.length;
  }

  /** Opens `file` and runs `use` on a cursor at its start; the file is closed afterwards. */
  static read<T>(file: string, use: (c: FileCursor) => T): T {
    const fd = fs.openSync(file, 'r');
    try {
      return use(new FileCursor(fd, fs.fstatSync(fd).size));
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Runs `use` on a cursor at the start of a file held in memory (a bulk-registered model's bytes). */
  static over<T>(bytes: Buffer, use: (c: FileCursor) => T): T {
    return use(new FileCursor(-1, bytes.length, bytes));
  }

  /** Bytes left after the cursor. */
  get left(): number {
    return this.size - this.pos;
  }

  /**
   * The next `n` bytes, advancing past them. The view is valid until the next call (it may share
   * the chunk buffer); callers bound `n` (a length read from the file is checked before this).
   */
  bytes(n: number): Buffer {
    if (n > this.left) throw new OutOfData();
    const start = this.pos;
    this.pos += n;
    if (start >= this.base && start + n <= this.base + this.filled) return this.chunk.subarray(start - this.base, start - this.base + n);
    if (n > this.chunk.length) {
      const out = Buffer.allocUnsafe(n);
      fs.readSync(this.fd, out, 0, n, start);
      return out;
    }
    this.base = start;
    this.filled = fs.readSync(this.fd, this.chunk, 0, Math.min(this.chunk.length, this.size - start), start);
    if (this.filled < n) throw new OutOfData();
    return this.chunk.subarray(0, n);
  }

  /** Moves past `n` bytes without reading them. */
  skip(n: number): void {
    if (n > this.left) throw new OutOfData();
    this.pos += n;
  }

  u8(): number {
    return this.bytes(1)[0] as number;
  }

  /** A protobuf base-128 varint as a number; values past 2^53 are refused (lengths and counts only). */
  varint(): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      const b = this.u8();
      value += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) {
        if (!Number.isSafeInteger(value)) throw new RangeError(`varint ${value} at offset ${this.pos} is past 2^53`);
        return value;
      }
      scale *= 128;
    }
    throw new RangeError(`varint longer than 10 bytes at offset ${this.pos}`);
  }
}
