/**
 * Writing a plain ustar archive (POSIX.1-1988) in memory, for request bodies: the bulk
 * registration API's `application/x-tar` form. Only regular files, mode 0644, mtime 0.
 */

const BLOCK = 512;
/** The two zero blocks that end an archive. */
export const TAR_END = Buffer.alloc(2 * BLOCK);

/**
 * One regular file as archive blocks: its header, its bytes, zero padding to a whole block.
 * `path` ('/'-separated) goes in ustar's 100-byte name, or is split at a '/' into the 155-byte
 * prefix and the name; a path that fits neither way is a RangeError naming it.
 * Example: tarEntry('ads-17/model.onnx', bytes of 300) → 1024 bytes (header, then 300 + 212 padding).
 */
export function tarEntry(path: string, content: Uint8Array): Buffer[] {
  const header = Buffer.alloc(BLOCK);
  const [prefix, name] = splitPath(path);
  header.write(name, 0, 100, 'utf8');
  header.write('0000644\0', 100, 'latin1');
  header.write('0000000\0', 108, 'latin1');
  header.write('0000000\0', 116, 'latin1');
  header.write(`${content.byteLength.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  header.write('00000000000\0', 136, 'latin1');
  header.write('        ', 148, 'latin1'); // the checksum counts its own field as spaces
  header.write('0', 156, 'latin1');
  header.write('ustar\u000000', 257, 'latin1');
  header.write(prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const b of header) sum += b;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  const padding = (BLOCK - (content.byteLength % BLOCK)) % BLOCK;
  return [header, Buffer.from(content.buffer, content.byteOffset, content.byteLength), Buffer.alloc(padding)];
}

/** Bytes `tarEntry` produces for a file of `sizeBytes`. */
export function tarEntryBytes(sizeBytes: number): number {
  return BLOCK + Math.ceil(sizeBytes / BLOCK) * BLOCK;
}

function splitPath(path: string): [prefix: string, name: string] {
  if (Buffer.byteLength(path) <= 100) return ['', path];
  for (let i = path.indexOf('/'); i > 0; i = path.indexOf('/', i + 1)) {
    const prefix = path.slice(0, i);
    const name = path.slice(i + 1);
    if (Buffer.byteLength(prefix) <= 155 && Buffer.byteLength(name) <= 100 && name !== '') return [prefix, name];
  }
  throw new RangeError(`The path '${path}' does not fit a ustar header (a name of at most 100 bytes after a '/'-separated prefix of at most 155).`);
}
