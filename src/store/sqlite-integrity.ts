/**
 * Integrity checks of a SQLite database before and when it is opened, so that damage stops the
 * start with one clear message and the recovery steps instead of silently losing acknowledged
 * writes or failing later with a stack trace.
 *
 * Why the WAL is read by hand: when SQLite opens a database after a crash it replays the WAL
 * (`<file>-wal`) frame by frame and stops at the first frame whose checksum or salt does not
 * match, as if the log ended there. One flipped byte in an early frame therefore drops every
 * transaction committed after it, with no error: the server would start and serve a database
 * missing acknowledged writes. `checkWal` walks the frames the same way, and past the first bad
 * one looks for frames that are intact on their own (their checksum chains from the frame before
 * them) and carry a commit marker with the log's current salts: committed data SQLite would drop.
 *
 * WAL format (sqlite.org/fileformat2.html, "WAL File Format"): a 32-byte header (magic
 * 0x377f0682/3, version, page size, checkpoint sequence, salt-1, salt-2, checksum-1, checksum-2
 * over the first 24 bytes), then frames of a 24-byte header (page number, database size in pages
 * after a commit or 0, salt-1, salt-2, checksum-1, checksum-2) and one page. Checksums are
 * cumulative: each frame's covers its first 8 header bytes and its page, starting from the
 * previous frame's (the header's for the first frame).
 */
import fs from 'node:fs';
import type Database from 'better-sqlite3';
import { FerryError } from '../errors.js';

const WAL_HEADER_BYTES = 32;
const FRAME_HEADER_BYTES = 24;
const MAGIC_LE = 0x377f0682;
const MAGIC_BE = 0x377f0683;

/** What to do about a damaged database file; every refusal below ends with it. */
export function recoverySteps(file: string): string {
  return `Recovery (docs/storage.md, "Integrity checks and recovery"): 1. keep the server stopped and copy the whole data directory aside (cp -a); `
    + `2. restore ${file} from a backup, or rebuild it from what is readable: sqlite3 ${file} ".recover" | sqlite3 ${file}.recovered, check it, then move it into place `
    + `(and remove ${file}-wal and ${file}-shm); 3. start the server again.`;
}

/**
 * Refuses (FerryError) when the WAL beside `file` holds committed transactions that SQLite's
 * replay would drop because an earlier frame is damaged. A WAL that is missing, empty, or ends
 * in a torn uncommitted tail (a crash while writing) is fine.
 * @param what e.g. "The metadata database", for the message.
 */
export function checkWal(file: string, what: string): void {
  let wal: Buffer;
  try {
    wal = fs.readFileSync(`${file}-wal`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  const damage = findLostCommits(wal);
  if (damage === undefined) return;
  const where = damage.frame === 0 ? 'in its header' : `at byte ${damage.offset} (frame ${damage.frame})`;
  throw new FerryError('INTERNAL_ERROR', `${what} ${file} cannot be opened safely: its write-ahead log ${file}-wal is damaged ${where}, and ${damage.lostCommits} committed transaction(s) after that point would be silently dropped if it were opened. Ferry refuses to start. `
    + `${recoverySteps(file)} To accept the loss instead (keep the transactions before the damage), after the copy: sqlite3 ${file} "PRAGMA wal_checkpoint(TRUNCATE)".`);
}

/**
 * Where the WAL `wal` is damaged and how many intact commit frames follow, or undefined when
 * SQLite's replay would keep every commit. Example: 60 commits of one frame each, a byte flipped
 * in frame 27 → replay stops at frame 27; frames 28..60 chain from their predecessors and carry
 * the header's salts → { frame: 27, lostCommits: 33 }. `frame` counts from 1; 0 is the header.
 */
export function findLostCommits(wal: Buffer): { frame: number; offset: number; lostCommits: number } | undefined {
  if (wal.length < WAL_HEADER_BYTES) return undefined;
  const magic = wal.readUInt32BE(0);
  const bigEndian = magic === MAGIC_BE;
  const pageSize = wal.readUInt32BE(8);
  const validPageSize = pageSize >= 512 && pageSize <= 65536 && (pageSize & (pageSize - 1)) === 0;
  if (!validPageSize) return undefined; // not a WAL this code can walk; SQLite ignores it too, and it holds nothing it could replay
  const frameBytes = FRAME_HEADER_BYTES + pageSize;
  const frames = Math.floor((wal.length - WAL_HEADER_BYTES) / frameBytes);
  if (frames === 0) return undefined;
  const header = walChecksum(wal, 0, 24, [0, 0], bigEndian);
  const headerOk = (magic === MAGIC_LE || magic === MAGIC_BE) && header[0] === wal.readUInt32BE(24) && header[1] === wal.readUInt32BE(28);
  // The log's current salts: the header's, or (header damaged) the first frame's, as a new
  // generation of the log starts at its beginning.
  const salts = headerOk ? [wal.readUInt32BE(16), wal.readUInt32BE(20)] : [wal.readUInt32BE(WAL_HEADER_BYTES + 8), wal.readUInt32BE(WAL_HEADER_BYTES + 12)];
  const at = (k: number): number => WAL_HEADER_BYTES + k * frameBytes;
  const stored = (k: number): [number, number] => [wal.readUInt32BE(at(k) + 16), wal.readUInt32BE(at(k) + 20)];
  const saltsMatch = (k: number): boolean => wal.readUInt32BE(at(k) + 8) === salts[0] && wal.readUInt32BE(at(k) + 12) === salts[1];
  /** Whether frame k's checksum follows from `previous` (the running checksum before it). */
  const chains = (k: number, previous: [number, number]): boolean => {
    const s = walChecksum(wal, at(k) + FRAME_HEADER_BYTES, pageSize, walChecksum(wal, at(k), 8, previous, bigEndian), bigEndian);
    const [c0, c1] = stored(k);
    return s[0] === c0 && s[1] === c1;
  };
  // SQLite's replay: from the header's checksum, frame after frame, until one does not match. A
  // damaged header (-1) makes it ignore every frame.
  let firstBad = -1;
  if (headerOk) {
    let running: [number, number] = [header[0], header[1]];
    for (firstBad = 0; firstBad < frames; firstBad++) {
      if (!saltsMatch(firstBad) || !chains(firstBad, running)) break;
      running = stored(firstBad);
    }
    if (firstBad === frames) return undefined;
  }
  const headerStored: [number, number] = [wal.readUInt32BE(24), wal.readUInt32BE(28)];
  let lostCommits = 0;
  for (let k = firstBad + 1; k < frames; k++) {
    const commit = wal.readUInt32BE(at(k) + 4) !== 0;
    if (commit && saltsMatch(k) && chains(k, k === 0 ? headerStored : stored(k - 1))) lostCommits++;
  }
  return lostCommits === 0 ? undefined : { frame: firstBad + 1, offset: firstBad < 0 ? 0 : at(firstBad), lostCommits };
}

/**
 * SQLite's WAL checksum over `length` bytes at `offset` (a multiple of 8), continuing from `seed`:
 * for each pair of 32-bit words x0, x1 (byte order from the magic), s0 += x0 + s1; s1 += x1 + s0.
 */
function walChecksum(buf: Buffer, offset: number, length: number, seed: readonly [number, number], bigEndian: boolean): [number, number] {
  let s0 = seed[0];
  let s1 = seed[1];
  for (let i = offset; i < offset + length; i += 8) {
    const x0 = bigEndian ? buf.readUInt32BE(i) : buf.readUInt32LE(i);
    const x1 = bigEndian ? buf.readUInt32BE(i + 4) : buf.readUInt32LE(i + 4);
    s0 = (s0 + x0 + s1) >>> 0;
    s1 = (s1 + x1 + s0) >>> 0;
  }
  return [s0, s1];
}

/** Runs `PRAGMA quick_check` (every page and index readable and well-formed, O(database size)); refuses on any finding. */
export function quickCheck(db: Database.Database, file: string, what: string): void {
  const rows = db.pragma('quick_check(10)') as Array<{ quick_check: string }>;
  const findings = rows.map((r) => r.quick_check).filter((r) => r !== 'ok');
  if (findings.length === 0) return;
  throw new FerryError('INTERNAL_ERROR', `${what} ${file} failed its integrity check (PRAGMA quick_check: ${findings.slice(0, 3).join('; ')}). Ferry refuses to start. ${recoverySteps(file)}`);
}

/**
 * An error thrown while opening `file` as the one line the CLI prints: a damaged or foreign file
 * (SQLITE_CORRUPT, SQLITE_NOTADB: truncated, overwritten, not a database) names the file and the
 * recovery steps; FerryErrors and anything else pass through.
 */
export function openError(err: unknown, file: string, what: string): unknown {
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB' || (typeof code === 'string' && code.startsWith('SQLITE_CORRUPT'))) {
    return new FerryError('INTERNAL_ERROR', `${what} ${file} is damaged or is not a SQLite database (${code}: ${(err as Error).message}). Ferry refuses to start. ${recoverySteps(file)}`, { cause: err });
  }
  return err;
}
