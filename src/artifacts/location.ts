/**
 * Pod mode (Kubernetes runtime): a replica gets its model from the artifact store itself, at start,
 * instead of a directory its runtime prepared, and checks it against the version's recorded tree
 * digest, so a model changed in the store after registration never serves. The store comes as
 * JSON (flag `--artifact-store` or env `FERRY_ARTIFACT_STORE`, which the runtime sets in the pod):
 *
 * - `{"kind":"s3","bucket":"models","prefix":"ferry/","endpoint":"http://minio:9000","region":"us-east-1","forcePathStyle":true}`:
 *   the tree is downloaded into `<workDir>/artifact-cache` (an emptyDir in the pod) and verified by
 *   the S3 store's own `localDir(key, sha256)`. Credentials come from the standard AWS chain (the
 *   runtime maps a Secret into the pod's environment), never from this JSON.
 * - `{"kind":"local","root":"/srv/ferry/artifacts"}`: a store directory this process can read (a
 *   shared volume); the tree is read in place and its digest computed here, by a
 *   `LocalArtifactStore.reader`, which neither creates nor cleans anything there (the store's
 *   upload directory belongs to the server).
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { FerryError } from '../errors.js';
import { validatedKey, validateKey } from './keys.js';
import { LocalArtifactStore } from './local.js';
import { parsePackMember } from './packs.js';
import { digestTree, treeChanged } from './tree.js';
import type { ArtifactStore } from './types.js';

const locationSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('local'), root: z.string().min(1) }),
  z.strictObject({
    kind: z.literal('s3'), bucket: z.string().min(1), prefix: z.string().default(''), endpoint: z.string().min(1).optional(),
    region: z.string().min(1).default('us-east-1'), forcePathStyle: z.boolean().default(false),
  }),
]);

/** Where a replica in pod mode reads artifacts from (the JSON described above). */
export type ArtifactStoreLocation = z.input<typeof locationSchema>;
/** An `ArtifactStoreLocation` with its defaults filled in (`parseArtifactStoreLocation`). */
export type ParsedArtifactStoreLocation = z.output<typeof locationSchema>;

/** Parses the store JSON; a FerryError naming `source` (the flag or env variable) when it is not one. */
export function parseArtifactStoreLocation(json: string, source: string): z.output<typeof locationSchema> {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid value for '${source}': expected JSON such as {"kind":"s3","bucket":"models"}.`);
  }
  const parsed = locationSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid value for '${source}'${issue ? ` at '${issue.path.join('.')}': ${issue.message}` : ''}.`);
  }
  return parsed.data;
}

/**
 * The directory holding the artifact tree at `key`, whose digest is `sha256`; MODEL_ERROR naming
 * the key and both digests when the store's copy differs (it was changed outside Ferry). A pack
 * member in a local store is copied into `workDir` (the shared volume may be read-only here).
 */
export async function fetchArtifact(location: z.output<typeof locationSchema>, key: string, sha256: string, workDir: string): Promise<string> {
  if (location.kind === 's3') {
    // Loaded only here, as in openArtifactStore: the AWS SDK costs ~80 ms to import.
    const { S3ArtifactStore } = await import('./s3.js');
    const store = await S3ArtifactStore.open({ ...location, endpoint: location.endpoint, credentials: undefined, cacheDir: path.join(workDir, 'artifact-cache') });
    return store.localDir(key, sha256);
  }
  const member = parsePackMember(validatedKey(key));
  if (member !== undefined) {
    const bytes = await LocalArtifactStore.reader(location.root).readVerifiedFile(key, sha256, member.file, Number.MAX_SAFE_INTEGER, () => new Error('unreachable'));
    const dir = path.join(workDir, 'artifact');
    await fsp.mkdir(dir, { recursive: true });
    await fsp.writeFile(path.join(dir, member.file), bytes);
    return dir;
  }
  const dir = path.join(path.resolve(location.root), ...validateKey(key));
  const actual = await digestTree(dir).catch((err: unknown) => {
    throw new FerryError('MODEL_ERROR', `Artifact '${key}' cannot be read from the artifact store at '${location.root}': ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  });
  if (actual.sha256 !== sha256) throw treeChanged(key, sha256, actual.sha256);
  return dir;
}

/**
 * Reads single files of artifact trees into memory, each tree verified first: a family replica in
 * pod mode fetches a member's model file on a miss this way (src/replica/family-store.ts).
 */
export type ArtifactReader = Pick<ArtifactStore, 'readVerifiedFile'> & { close(): void };

/** An `ArtifactReader` on the store at `location` (S3: one client for the process's life). */
export async function openArtifactReader(location: ParsedArtifactStoreLocation, workDir: string): Promise<ArtifactReader> {
  if (location.kind === 'local') {
    const store = LocalArtifactStore.reader(location.root);
    return { readVerifiedFile: (...args) => store.readVerifiedFile(...args), close: () => undefined };
  }
  const { S3ArtifactStore } = await import('./s3.js');
  const store = await S3ArtifactStore.open({ ...location, endpoint: location.endpoint, credentials: undefined, cacheDir: path.join(workDir, 'artifact-cache') });
  return { readVerifiedFile: (...args) => store.readVerifiedFile(...args), close: () => store.close() };
}
