/**
 * Local-directory artifact store. Writes go to a temporary file in the store's `.tmp/` directory
 * and are renamed into place, so a reader never sees half a file and a crash leaves no partial
 * artifact under a real key.
 */
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { FerryError, notFound, toFerryError } from '../errors.js';
import type { ArtifactEntry, ArtifactStore, NewFile, NewFileResult, TreeDigest } from './types.js';
import { validateKey } from './keys.js';
import { syncFileSystem } from './many.js';
import { digestTree, walk } from './tree.js';
import { WriteThread } from './write-thread.js';

const TMP_DIR = '.tmp';

export class LocalArtifactStore implements ArtifactStore {
  /** Writes bulk registration's files (`putNewFiles`), started on first use. */
  private readonly writer = new WriteThread();

  private constructor(private readonly root: string) {}

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
    if (!p.startsWith(this.root + path.sep) || p.startsWith(path.join(this.root, TMP_DIR) + path.sep) || p === path.join(this.root, TMP_DIR)) {
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
      await makeParents(dest, key);
      await refuseDirectory(dest, key);
      await fsp.rename(tmp, dest);
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      // The uploader closed the connection mid-body: its request failed, not the server.
      if ((err as NodeJS.ErrnoException).code === 'ECONNRESET') throw new FerryError('MALFORMED_REQUEST', `Upload of '${key}' was cut off: the client closed the connection.`);
      throw err;
    }
    return { sizeBytes, sha256: hash.digest('hex') };
  }

  async putNewFiles(files: readonly NewFile[], maxBytes: number): Promise<NewFileResult[]> {
    const results = new Array<NewFileResult>(files.length);
    const toWrite: Array<{ index: number; key: string; dest: string; content: Uint8Array }> = [];
    files.forEach(({ key, content }, index) => {
      try {
        if (content.byteLength > maxBytes) throw new FerryError('PAYLOAD_TOO_LARGE', `Artifact '${key}' exceeds the limit of ${maxBytes} bytes.`);
        toWrite.push({ index, key, dest: this.resolve(key), content });
      } catch (err) {
        results[index] = toFerryError(err);
      }
    });
    if (toWrite.length === 0) return results;
    const outcomes = await this.writer.write(toWrite);
    const written: string[] = [];
    toWrite.forEach(({ index, key, dest, content }, j) => {
      const o = outcomes[j];
      if (o !== undefined && 'sha256' in o) {
        written.push(dest);
        results[index] = { sizeBytes: content.byteLength, sha256: o.sha256 };
      } else {
        results[index] = o?.code === 'EEXIST' ? new FerryError('RESOURCE_CONFLICT', `Artifact '${key}' already exists or runs through an existing file.`)
          : o?.code === 'ENOTDIR' ? new FerryError('RESOURCE_CONFLICT', `Artifact path '${key}' runs through an existing file.`)
            : new FerryError('INTERNAL_ERROR', `Writing artifact '${key}' failed: ${o?.message ?? 'no answer'}`);
      }
    });
    if (written.length > 0) await syncFileSystem(this.root, written);
    return results;
  }

  async getFile(key: string): Promise<{ stream: fs.ReadStream; sizeBytes: number }> {
    const p = this.resolve(key);
    const st = await fsp.stat(p).catch(() => undefined);
    if (!st?.isFile()) throw notFound(`Artifact '${key}'`);
    return { stream: fs.createReadStream(p), sizeBytes: st.size };
  }

  async list(prefix: string): Promise<ArtifactEntry[]> {
    const dir = this.resolve(prefix, true);
    const entries = await fsp.readdir(dir, { withFileTypes: true }).catch(() => []);
    const out: ArtifactEntry[] = [];
    for (const e of entries) {
      if (dir === this.root && e.name === TMP_DIR) continue;
      // An entry deleted since the readdir (a concurrent DELETE) is not listed.
      const st = await fsp.stat(path.join(dir, e.name)).catch(() => undefined);
      if (!st) continue;
      out.push({ path: e.name, isDir: e.isDirectory(), sizeBytes: e.isDirectory() ? 0 : st.size });
    }
    return out.sort((a, b) => a.path.localeCompare(b.path));
  }

  async exists(key: string): Promise<boolean> {
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
    const src = this.resolve(from);
    if (!(await fsp.stat(src).catch(() => undefined))) throw notFound(`Artifact '${from}'`);
    await this.importLocal(src, to, Number.MAX_SAFE_INTEGER);
  }

  async delete(key: string): Promise<void> {
    await removeTree(this.resolve(key));
  }

  digest(key: string): Promise<TreeDigest> {
    return digestTree(this.resolve(key));
  }

  localDir(key: string): Promise<string> {
    return Promise.resolve(this.resolve(key));
  }
}

/** Creates the parent directories of `dest`; a parent that is a file is a conflict naming the key, not an internal error. */
async function makeParents(dest: string, key: string): Promise<void> {
  try {
    await fsp.mkdir(path.dirname(dest), { recursive: true });
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
