/**
 * The artifact store interface (a leaf of types): the stores import it from here, not from
 * ./index.ts. Keys under `packs/` may name members of a pack (packs.ts): every method serves them.
 */
import type { Readable } from 'node:stream';

export interface ArtifactEntry {
  /** Key relative to the listed prefix. */
  path: string;
  isDir: boolean;
  sizeBytes: number;
}

export interface TreeDigest {
  /** sha256 (hex) over every file's relative path and contents, in sorted path order. */
  sha256: string;
  sizeBytes: number;
  files: number;
}

export interface ArtifactStore {
  /**
   * Streams `body` into the file `key`, replacing it atomically. Over `maxBytes` → PAYLOAD_TOO_LARGE
   * and nothing is kept. Returns the size and sha256 of what was written.
   */
  putFile(key: string, body: AsyncIterable<Uint8Array>, maxBytes: number): Promise<{ sizeBytes: number; sha256: string }>;
  /** A stream of the file `key`; RESOURCE_DOES_NOT_EXIST when absent or a directory. */
  getFile(key: string): Promise<{ stream: Readable; sizeBytes: number }>;
  /** Direct children of `prefix` (a directory key, '' for the root); empty when absent. */
  list(prefix: string): Promise<ArtifactEntry[]>;
  exists(key: string): Promise<boolean>;
  /** Copies a file or directory on this machine into `key` (a directory, or a file when `src` is one). */
  importLocal(src: string, key: string, maxBytes: number): Promise<void>;
  /** Copies the file or directory at `from` to `to` inside the store. */
  copy(from: string, to: string): Promise<void>;
  /** Removes `key` (file or directory, recursively); no error when absent. */
  delete(key: string): Promise<void>;
  digest(key: string): Promise<TreeDigest>;
  /**
   * A directory on this machine holding the tree at `key`: the local store returns it in place; the
   * S3 store returns a cached copy, checked against `sha256` (a version's recorded tree digest) when
   * given, else downloaded afresh. Replicas and the registry's inspection read from here.
   */
  localDir(key: string, sha256?: string): Promise<string>;
  /**
   * The bytes of `file` in the tree at `key`, once the whole tree hashed to `sha256` (a family
   * member on a miss: nothing is written to disk); MODEL_ERROR naming the key and both digests
   * when it does not, or naming the file when the tree lacks it. A tree of more than `maxBytes`
   * is refused before anything is read, with `tooLarge(total)`.
   */
  readVerifiedFile(key: string, sha256: string, file: string, maxBytes: number, tooLarge: (totalBytes: number) => Error): Promise<Buffer>;
}

