/**
 * Local-directory artifact store. Writes go to a temporary file in the store's `.tmp/` directory
 * and are renamed into place, so a reader never sees half a file and a crash leaves no partial
 * artifact under a real key. A pack member (packs.ts) is read from its pack's byte range; the
 * directory `localDir` gives for one is a copy under `.cache/`, made once.
 */
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError, notFound } from '../errors.js';
import type { ArtifactEntry, ArtifactStore, TreeDigest } from './types.js';
import { validatedKey, validateKey } from './keys.js';
import { isPackKey, memberDigest, parsePackMember, type PackMember } from './packs.js';
import { digestFiles, digestTree, listTree, treeChanged, verifiedFile, walk } from './tree.js';

const TMP_DIR = '.tmp';
/** Copies of pack members that a caller needed as a directory (`localDir`). */
const CACHE_DIR = '.cache';

export class LocalArtifactStore implements ArtifactStore {
  private constructor(private readonly root: string) {}

  /**
   * A store at `root` for reading only, which another process owns (a replica reading a shared
   * volume): nothing is created or cleaned.
   */
  static reader(root: string): LocalArtifactStore {
    return new LocalArtifactStore(path.resolve(root));
  }

  static async open(root: string): Promise<LocalArtifactStore> {
    const abs = path.resolve(root);
    await fsp.mkdir(path.join(abs, TMP_DIR), { recursive: true });
    // Leftovers of uploads interrupted by a crash.
    for (const f of await fsp.readdir(path.join(abs, TMP_DIR))) await fsp.rm(path.join(abs, TMP_DIR, f), { recursive: true, force: true });
    return new LocalArtifactStore(abs);
  }

  /** Absolute path of a validated key; the root itself for '' only where `allowRoot` (listing). */
  private resolve(key: string, allowRoot = false): string {
    if (key === '' && allowRoot) return this.root;
    const p = path.join(this.root, ...validateKey(key));
    // Defence in depth: validateKey already rules out escapes.
    const [top] = path.relative(this.root, p).split(path.sep);
    if (!p.startsWith(this.root + path.sep) || top === TMP_DIR || top === CACHE_DIR) {
      throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid artifact path ${JSON.stringify(key)}.`);
    }
    return p;
  }

  private tmpPath(): string {
    return path.join(this.root, TMP_DIR, randomUUID());
  }

  async putFile(key: string, body: AsyncIterable<Uint8Array>, maxBytes: number): Promise<{ sizeBytes: number; sha256: string }> {
    const dest = this.resolve(key);
    const tmp = this.tmpPath();
    const hash = createHash('sha256');
    let sizeBytes = 0;
    try {
      await pipeline(
        body,
        async function* (source: AsyncIterable<Uint8Array>) {
          for await (const chunk of source) {
            sizeBytes += chunk.byteLength;
            if (sizeBytes > maxBytes) throw new FerryError('PAYLOAD_TOO_LARGE', `Artifact upload exceeds the limit of ${maxBytes} bytes.`);
            hash.update(chunk);
            yield chunk;
          }
        },
        fs.createWriteStream(tmp, { flags: 'wx', mode: 0o600 }),
      );
      const fh = await fsp.open(tmp, 'r');
      await fh.sync().finally(() => fh.close());
      const created = await makeParents(dest, key);
      await refuseDirectory(dest, key);
      await fsp.rename(tmp, dest);
      // The new name is durable too, and so are the directories made for it (a bulk
      // registration's rows point at it once this returns): each one's parent is synced.
      for (let dir = path.dirname(dest); ; dir = path.dirname(dir)) {
        const fd = await fsp.open(dir, 'r');
        await fd.sync().finally(() => fd.close());
        if (created === undefined || dir === path.dirname(created) || dir === this.root) break;
      }
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      // The uploader closed the connection mid-body: its request failed, not the server.
      if ((err as NodeJS.ErrnoException).code === 'ECONNRESET') throw new FerryError('MALFORMED_REQUEST', `Upload of '${key}' was cut off: the client closed the connection.`);
      throw err;
    }
    return { sizeBytes, sha256: hash.digest('hex') };
  }

  async getFile(key: string): Promise<{ stream: Readable; sizeBytes: number }> {
    const m = parsePackMember(validatedKey(key));
    if (m !== undefined) {
      if (m.inner !== m.file || !(await this.holds(m))) throw notFound(`Artifact '${key}'`);
      return { stream: m.length === 0 ? Readable.from([]) : fs.createReadStream(this.resolve(m.pack), { start: m.offset, end: m.offset + m.length - 1 }), sizeBytes: m.length };
    }
    const p = this.resolve(key);
    const st = await fsp.stat(p).catch(() => undefined);
    if (!st?.isFile()) throw notFound(`Artifact '${key}'`);
    return { stream: fs.createReadStream(p), sizeBytes: st.size };
  }

  async list(prefix: string): Promise<ArtifactEntry[]> {
    const m = prefix === '' ? undefined : parsePackMember(validatedKey(prefix));
    if (m !== undefined) return m.inner === '' && (await this.holds(m)) ? [{ path: m.file, isDir: false, sizeBytes: m.length }] : [];
    const dir = this.resolve(prefix, true);
    const entries = await fsp.readdir(dir, { withFileTypes: true }).catch(() => []);
    const out: ArtifactEntry[] = [];
    for (const e of entries) {
      if (dir === this.root && (e.name === TMP_DIR || e.name === CACHE_DIR)) continue;
      // An entry deleted since the readdir (a concurrent DELETE) is not listed.
      const st = await fsp.stat(path.join(dir, e.name)).catch(() => undefined);
      if (!st) continue;
      out.push({ path: e.name, isDir: e.isDirectory(), sizeBytes: e.isDirectory() ? 0 : st.size });
    }
    return out.sort((a, b) => a.path.localeCompare(b.path));
  }

  async exists(key: string): Promise<boolean> {
    const m = parsePackMember(validatedKey(key));
    if (m !== undefined) return (m.inner === '' || m.inner === m.file) && this.holds(m);
    return fsp.stat(this.resolve(key)).then(() => true, () => false);
  }

  async importLocal(src: string, key: string, maxBytes: number): Promise<void> {
    const dest = this.resolve(key);
    const st = await fsp.lstat(src).catch(() => undefined);
    if (!st) throw new FerryError('INVALID_PARAMETER_VALUE', `Source path '${src}' does not exist on the server.`);
    let total = 0;
    await walk(src, (_file, size) => {
      total += size;
      if (total > maxBytes) throw new FerryError('PAYLOAD_TOO_LARGE', `Source '${src}' is larger than the limit of ${maxBytes} bytes.`);
    });
    const tmp = this.tmpPath();
    try {
      await fsp.cp(src, tmp, { recursive: true, dereference: false, errorOnExist: true, force: false });
      await removeTree(dest);
      await makeParents(dest, key);
      await fsp.rename(tmp, dest);
    } catch (err) {
      await fsp.rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }

  async copy(from: string, to: string): Promise<void> {
    const m = parsePackMember(validatedKey(from));
    if (m !== undefined) {
      if (m.inner !== '' && m.inner !== m.file) throw notFound(`Artifact '${from}'`);
      await this.putFile(m.inner === '' ? `${to}/${m.file}` : to, Readable.from([await this.memberBytes(m, from)]), m.length);
      return;
    }
    const src = this.resolve(from);
    if (!(await fsp.stat(src).catch(() => undefined))) throw notFound(`Artifact '${from}'`);
    await this.importLocal(src, to, Number.MAX_SAFE_INTEGER);
  }

  /** A pack member is not deleted alone: it goes with its pack (whose copies in `.cache/` go too). */
  async delete(key: string): Promise<void> {
    if (parsePackMember(validatedKey(key)) !== undefined) return;
    if (isPackKey(key)) await removeTree(path.join(this.root, CACHE_DIR, ...key.split('/')));
    await removeTree(this.resolve(key));
  }

  async digest(key: string): Promise<TreeDigest> {
    const m = parsePackMember(validatedKey(key));
    if (m === undefined) return digestTree(this.resolve(key));
    if (m.inner !== '' && m.inner !== m.file) throw notFound(`Artifact '${key}'`);
    const bytes = await this.memberBytes(m, key);
    return { sha256: m.inner === '' ? memberDigest(m.file, bytes) : digestFiles([{ rel: '', bytes }]), sizeBytes: m.length, files: 1 };
  }

  /** In place; a pack member's tree is copied to `.cache/<its key>` once (and checked against `sha256` when given). */
  async localDir(key: string, sha256?: string): Promise<string> {
    const m = parsePackMember(validatedKey(key));
    if (m === undefined) return this.resolve(key);
    if (m.inner !== '') throw notFound(`Artifact '${key}'`);
    const dir = path.join(this.root, CACHE_DIR, ...key.split('/'));
    if (await fsp.stat(path.join(dir, m.file)).then((st) => st.size === m.length, () => false)) return dir;
    const bytes = await this.memberBytes(m, key);
    const actual = memberDigest(m.file, bytes);
    if (sha256 !== undefined && actual !== sha256) throw treeChanged(key, sha256, actual);
    const tmp = this.tmpPath();
    try {
      await fsp.mkdir(tmp);
      await fsp.writeFile(path.join(tmp, m.file), bytes, { mode: 0o600 });
      await fsp.mkdir(path.dirname(dir), { recursive: true });
      // A concurrent copy that got there first is as good as this one.
      await fsp.rename(tmp, dir).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err;
      });
    } finally {
      await fsp.rm(tmp, { recursive: true, force: true });
    }
    // The pack deleted meanwhile (its last version went): no copy outlives it.
    if (!(await this.holds(m))) {
      await removeTree(dir);
      throw notFound(`Artifact '${key}'`);
    }
    return dir;
  }

  async readVerifiedFile(key: string, sha256: string, file: string, maxBytes: number, tooLarge: (totalBytes: number) => Error): Promise<Buffer> {
    const m = parsePackMember(validatedKey(key));
    if (m !== undefined) {
      if (m.inner !== '') throw notFound(`Artifact '${key}'`);
      if (m.length > maxBytes) throw tooLarge(m.length);
      const bytes = await this.memberBytes(m, key);
      return verifiedFile(key, this.where(), [{ rel: m.file, bytes }], sha256, file);
    }
    const files = await listTree(this.resolve(key)).catch((err: unknown) => {
      throw new FerryError('MODEL_ERROR', `Artifact '${key}' cannot be read from ${this.where()}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    });
    const total = files.reduce((n, f) => n + f.sizeBytes, 0);
    if (total > maxBytes) throw tooLarge(total);
    return verifiedFile(key, this.where(), await Promise.all(files.map(async (f) => ({ rel: f.rel, bytes: await fsp.readFile(f.abs) }))), sha256, file);
  }

  private where(): string {
    return `the artifact store at '${this.root}'`;
  }

  /** Whether the member's pack exists and holds its byte range. */
  private async holds(m: PackMember): Promise<boolean> {
    const st = await fsp.stat(this.resolve(m.pack)).catch(() => undefined);
    return st?.isFile() === true && m.offset + m.length <= st.size;
  }

  /** A member's bytes; RESOURCE_DOES_NOT_EXIST naming `key` when its pack does not hold them. */
  private async memberBytes(m: PackMember, key: string): Promise<Buffer> {
    const fh = await fsp.open(this.resolve(m.pack), 'r').catch(() => undefined);
    if (fh === undefined) throw notFound(`Artifact '${key}'`);
    try {
      const bytes = Buffer.allocUnsafe(m.length);
      const { bytesRead } = await fh.read(bytes, 0, m.length, m.offset);
      if (bytesRead !== m.length) throw notFound(`Artifact '${key}'`);
      return bytes;
    } finally {
      await fh.close();
    }
  }
}

/**
 * Creates the parent directories of `dest` and returns the first one it created (undefined: none);
 * a parent that is a file is a conflict naming the key, not an internal error.
 */
async function makeParents(dest: string, key: string): Promise<string | undefined> {
  try {
    return await fsp.mkdir(path.dirname(dest), { recursive: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTDIR' || code === 'EEXIST') throw new FerryError('RESOURCE_CONFLICT', `Artifact path '${key}' runs through an existing file.`);
    throw err;
  }
}

/** Removes `p` and everything under it; nothing there (also: a parent is a file, ENOTDIR) is not an error. */
async function removeTree(p: string): Promise<void> {
  await fsp.rm(p, { recursive: true, force: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOTDIR') throw err;
  });
}

async function refuseDirectory(dest: string, key: string): Promise<void> {
  const st = await fsp.stat(dest).catch(() => undefined);
  if (st?.isDirectory()) throw new FerryError('RESOURCE_CONFLICT', `Artifact path '${key}' is a directory.`);
}
