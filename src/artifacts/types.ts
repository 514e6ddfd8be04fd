/** The artifact store interface (a leaf of types): the stores import it from here, not from ./index.ts. */
import type { Readable } from 'node:stream';
import type { FerryError } from '../errors.js';

/** One file of `ArtifactStore.putNewFiles`. */
export interface NewFile {
  key: string;
  content: Uint8Array;
}

/** What happened to one file of `putNewFiles`: written (its size and sha256), or why not. */
export type NewFileResult = { sizeBytes: number; sha256: string } | FerryError;

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
  /**
   * Writes many new files (bulk registration) under keys that do not exist yet and nothing refers
   * to (bulk registration's hold a fresh UUID), and resolves once
   * all that were written are durable; per file, in order: its size and sha256, or why it was
   * not written (over `maxBytes`, a key that runs through a file). Rejects only when the
   * durability step fails (then the caller deletes what was written). The local store writes the
   * files in place from a writer thread (write-thread.ts), without a temporary file or a per-file fsync, then syncs the file system once
   * (a crash before that leaves partial files under keys no row refers to: orphans); S3 puts each.
   */
  putNewFiles(files: readonly NewFile[], maxBytes: number): Promise<NewFileResult[]>;
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
}

