/**
 * The artifact store: where model files live. Local directory by default, or an S3 bucket, behind
 * one interface. Paths are relative, '/'-separated keys; no key can escape the store (`..`, absolute
 * paths, NUL, backslashes and empty segments are refused with a 400).
 */
import type { Readable } from 'node:stream';
import { LocalArtifactStore } from './local.js';
import type { S3ArtifactStoreOptions } from './s3.js';

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
}

export type ArtifactStoreOptions =
  | {
    kind: 'local';
    /** Root directory of the store. */
    root: string;
  }
  | ({ kind: 's3' } & S3ArtifactStoreOptions);

/**
 * The S3 store (and the AWS SDK, ~80 ms to import) is loaded only when configured: every `ferry`
 * process, replicas included, loads this folder.
 */
export async function openArtifactStore(opts: ArtifactStoreOptions): Promise<ArtifactStore> {
  return opts.kind === 'local' ? LocalArtifactStore.open(opts.root) : (await import('./s3.js')).S3ArtifactStore.open(opts);
}

export { validateKey } from './keys.js';
export { oneFileTreeDigest } from './tree.js';
export type { S3Settings } from './s3.js';
export {
  fetchArtifact, openArtifactReader, parseArtifactStoreLocation, type ArtifactReader, type ArtifactStoreLocation, type ParsedArtifactStoreLocation,
} from './location.js';
