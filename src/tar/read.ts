/**
 * Reading the regular files of a tar archive as a stream: the archive is never held whole, only
 * one wanted file at a time, of a bounded size; other files stream past. Used by `ferry models
 * import <archive>` (client) and by the bulk registration API's tar body (server). ustar names
 * (prefix + name), GNU long names (`L` entries) and pax `path` records are honoured; directories,
 * links and other entries are skipped. Format: POSIX.1-1988 ustar with the pax (POSIX.1-2001)
 * and GNU extensions.
 */

const BLOCK = 512;

/** Why an archive was refused: malformed, or a wanted file larger than `TarFilter.maxFileBytes`. */
export class TarError extends Error {
  constructor(readonly kind: 'format' | 'too-large', message: string) {
    super(message);
    this.name = 'TarError';
  }
}

/** Which files `readTar` returns, and how big one may be. */
export interface TarFilter {
  /** Whether to return the regular file at `path` (others are streamed past, never buffered). */
  want(path: string): boolean;
  /** A wanted file declaring more bytes is an error (a gzip bomb can declare gigabytes in 30 KB). */
  maxFileBytes: number;
}

/**
 * The regular files of the archive read from `input` that `filter` wants, in archive order: their
 * paths inside the archive and their bytes. `file` names the archive in errors. Throws a TarError
 * for a malformed or truncated archive or a wanted file over the limit.
 */
export async function* readTar(input: AsyncIterable<Buffer>, file: string, filter: TarFilter): AsyncGenerator<{ path: string; content: Buffer }> {
  const pending = new Chunks();
  /** Pending: the header being read, then its data (padded to whole blocks). */
  let header: { path: string; size: number; type: string } | undefined;
  let longName: string | undefined;
  /** Bytes of an unwanted entry still to stream past. */
  let skipping = 0;
  /** Bytes of the archive consumed (for error messages: where a bad header starts). */
  let offset = 0;
  for await (const chunk of input) {
    pending.push(chunk);
    for (;;) {
      if (skipping > 0) {
        const n = Math.min(skipping, pending.length);
        pending.take(n);
        offset += n;
        skipping -= n;
        if (skipping > 0) break;
      }
      if (header === undefined) {
        if (pending.length < BLOCK) break;
        const block = pending.take(BLOCK);
        offset += BLOCK;
        if (block.every((b) => b === 0)) continue; // end-of-archive blocks
        header = parseHeader(block, file, offset - BLOCK);
        if (longName !== undefined) {
          header.path = longName;
          longName = undefined;
        }
      }
      const padded = Math.ceil(header.size / BLOCK) * BLOCK;
      const h = header;
      const regular = h.type === '0' || h.type === '\0';
      // Long names (GNU 'L', pax 'x') are metadata of the next entry: small, always read.
      if (regular && !filter.want(h.path)) {
        header = undefined;
        skipping = padded;
        continue;
      }
      if (h.size > filter.maxFileBytes) throw new TarError('too-large', `${file}: '${h.path}' declares ${h.size} bytes, more than the ${filter.maxFileBytes} allowed.`);
      if (pending.length < padded) break;
      const data = Buffer.from(pending.take(padded).subarray(0, h.size));
      offset += padded;
      header = undefined;
      if (h.type === 'L') longName = cString(data);
      else if (h.type === 'x') longName = paxPath(data) ?? longName;
      else if (regular) yield { path: h.path, content: data };
    }
  }
  if (header !== undefined || skipping > 0) throw new TarError('format', `${file}: the archive ends inside '${header?.path ?? 'an entry'}'.`);
}

/**
 * The bytes read but not yet consumed, as a list of chunks: an entry of N bytes arriving in 64 KiB
 * chunks is joined once when whole (O(N)), not once per chunk (a 32 MiB entry: 512 joins of up to
 * 32 MiB each, ~23 s, before this).
 */
class Chunks {
  private chunks: Buffer[] = [];
  /** Bytes held. */
  length = 0;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** The first `n` bytes (n <= length), removed. */
  take(n: number): Buffer {
    const first = this.chunks[0];
    if (first !== undefined && first.length >= n) {
      // The common case for headers: no copy.
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.length -= n;
      return out;
    }
    const whole = Buffer.concat(this.chunks, this.length);
    this.chunks = whole.length > n ? [whole.subarray(n)] : [];
    this.length -= n;
    return whole.subarray(0, n);
  }
}

function parseHeader(block: Buffer, file: string, offset: number): { path: string; size: number; type: string } {
  const sum = block.reduce((a, b, i) => a + (i >= 148 && i < 156 ? 32 : b), 0);
  if (sum !== parseInt(cString(block.subarray(148, 156)).trim(), 8)) throw new TarError('format', `${file}: not a tar archive (bad header checksum at byte ${offset}).`);
  const name = cString(block.subarray(0, 100));
  const prefix = block.subarray(257, 263).toString('latin1').startsWith('ustar') ? cString(block.subarray(345, 500)) : '';
  const size = parseInt(cString(block.subarray(124, 136)).trim() || '0', 8);
  if (!Number.isSafeInteger(size) || size < 0) throw new TarError('format', `${file}: bad size in the header of '${name}'.`);
  return { path: prefix === '' ? name : `${prefix}/${name}`, size, type: String.fromCharCode(block[156] ?? 0) };
}

/** Text up to the first NUL. */
function cString(b: Buffer): string {
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? b.length : end).toString('utf8');
}

/** The `path` record of a pax extended header ("<len> path=<value>\n" records). */
function paxPath(data: Buffer): string | undefined {
  for (const line of data.toString('utf8').split('\n')) {
    const m = /^\d+ path=(.*)$/.exec(line);
    if (m !== null) return m[1];
  }
  return undefined;
}
