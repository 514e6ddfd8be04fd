/**
 * Directory-tree helpers shared by the artifact stores, so that a version's sha256 is the same
 * whichever store holds it: the S3 store digests its local copy with the same function the local
 * store uses on its own directory.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { FerryError } from '../errors.js';
import type { TreeDigest } from './types.js';

/**
 * Visits every regular file under `p` (or `p` itself), refusing symbolic links and special files:
 * an artifact must be self-contained, and a link could point anywhere on the server.
 */
export async function walk(p: string, visit: (file: string, sizeBytes: number) => void): Promise<void> {
  const st = await fsp.lstat(p);
  if (st.isSymbolicLink()) throw new FerryError('INVALID_PARAMETER_VALUE', `'${p}' is a symbolic link; artifacts must contain regular files only.`);
  if (st.isFile()) {
    visit(p, st.size);
    return;
  }
  if (!st.isDirectory()) throw new FerryError('INVALID_PARAMETER_VALUE', `'${p}' is not a regular file or directory.`);
  for (const name of await fsp.readdir(p)) await walk(path.join(p, name), visit);
}

/**
 * Every regular file under `base` with its '/'-separated path relative to `base` ('' when `base`
 * is a file), sorted by path in UTF-16 code-unit order.
 */
export async function listTree(base: string): Promise<Array<{ rel: string; abs: string; sizeBytes: number }>> {
  const files: Array<{ rel: string; abs: string; sizeBytes: number }> = [];
  await walk(base, (abs, sizeBytes) => {
    files.push({ rel: path.relative(base, abs).split(path.sep).join('/'), abs, sizeBytes });
  });
  return files.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
}

/**
 * The tree digest of the file or directory `base`: sha256 over one line `<path>\0<file sha256>\n`
 * per file, in sorted path order. Example: a directory holding only `model.onnx` with the bytes
 * "abc" digests to sha256("model.onnx\0ba7816bf…15ad\n").
 */
export async function digestTree(base: string): Promise<TreeDigest> {
  const files = await listTree(base);
  const tree = createHash('sha256');
  let sizeBytes = 0;
  for (const f of files) {
    const h = createHash('sha256');
    await pipeline(fs.createReadStream(f.abs), h);
    tree.update(`${f.rel}\0${h.digest('hex')}\n`);
    sizeBytes += f.sizeBytes;
  }
  return { sha256: tree.digest('hex'), sizeBytes, files: files.length };
}

/**
 * The tree digest of a directory holding one file, from that file's path and sha256: a bulk
 * registration knows both from writing the file, so it needs no second read (on S3, no second
 * download). `oneFileTreeDigest("model.onnx", sha256("abc"))` is the example of `digestTree`.
 */
export function oneFileTreeDigest(rel: string, fileSha256: string): string {
  return createHash('sha256').update(`${rel}\0${fileSha256}\n`).digest('hex');
}

/**
 * The tree digest (as `digestTree`) of files held in memory, each with its '/'-separated path
 * relative to the tree ('' when the tree is one file): a replica that fetched a tree into memory
 * checks it against the version's recorded sha256 without writing it anywhere.
 */
export function digestFiles(files: ReadonlyArray<{ rel: string; bytes: Uint8Array }>): string {
  const tree = createHash('sha256');
  for (const f of [...files].sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0))) {
    tree.update(`${f.rel}\0${createHash('sha256').update(f.bytes).digest('hex')}\n`);
  }
  return tree.digest('hex');
}

/**
 * `file` of a tree read into memory (`ArtifactStore.readVerifiedFile`), once the tree hashed to
 * `sha256`; MODEL_ERROR otherwise. `where` names the store in the message.
 */
export function verifiedFile(key: string, where: string, files: ReadonlyArray<{ rel: string; bytes: Buffer }>, sha256: string, file: string): Buffer {
  const actual = digestFiles(files);
  if (actual !== sha256) throw treeChanged(key, sha256, actual, where);
  const found = files.find((f) => f.rel === file);
  if (found === undefined) throw new FerryError('MODEL_ERROR', `Artifact '${key}' has no file '${file}'.`);
  return found.bytes;
}

/** The MODEL_ERROR of a tree whose digest is not its version's recorded one; `where` names the store. */
export function treeChanged(key: string, expected: string, found: string, where?: string): FerryError {
  return new FerryError('MODEL_ERROR', `Artifact '${key}'${where === undefined ? '' : ` in ${where}`} does not match its recorded sha256: expected ${expected}, found ${found}; it was changed outside Ferry.`);
}
