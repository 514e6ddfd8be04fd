/**
 * The artifact store: where model files live. Local directory by default, or an S3 bucket, behind
 * one interface. Paths are relative, '/'-separated keys; no key can escape the store (`..`, absolute
 * paths, NUL, backslashes and empty segments are refused with a 400).
 */
import { LocalArtifactStore } from './local.js';
import type { ArtifactStore } from './types.js';
export type { ArtifactEntry, ArtifactStore, TreeDigest } from './types.js';
import type { S3ArtifactStoreOptions } from './s3.js';

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
export { buildPack, MAX_MEMBER_FILE_BYTES, newPackKey, packMemberKey, parsePackMember } from './packs.js';
export { oneFileTreeDigest } from './tree.js';
export type { S3Settings } from './s3.js';
export {
  fetchArtifact, openArtifactReader, parseArtifactStoreLocation, type ArtifactReader, type ArtifactStoreLocation, type ParsedArtifactStoreLocation,
} from './location.js';
