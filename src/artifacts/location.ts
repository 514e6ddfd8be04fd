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
 *   shared volume); the tree is read in place and its digest computed here. The store is not
 *   opened as a `LocalArtifactStore`: that would clean the store's upload directory, which belongs
 *   to the server.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { FerryError } from '../errors.js';
import { validateKey } from './keys.js';
import { digestFiles, digestTree, listTree } from './tree.js';

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
 * the key and both digests when the store's copy differs (it was changed outside Ferry).
 */
export async function fetchArtifact(location: z.output<typeof locationSchema>, key: string, sha256: string, workDir: string): Promise<string> {
  if (location.kind === 's3') {
    // Loaded only here, as in openArtifactStore: the AWS SDK costs ~80 ms to import.
    const { S3ArtifactStore } = await import('./s3.js');
    const store = await S3ArtifactStore.open({ ...location, endpoint: location.endpoint, credentials: undefined, cacheDir: path.join(workDir, 'artifact-cache') });
    return store.localDir(key, sha256);
  }
  const dir = path.join(path.resolve(location.root), ...validateKey(key));
  const actual = await digestTree(dir).catch((err: unknown) => {
    throw new FerryError('MODEL_ERROR', `Artifact '${key}' cannot be read from the artifact store at '${location.root}': ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  });
  if (actual.sha256 !== sha256) {
    throw new FerryError('MODEL_ERROR', `Artifact '${key}' does not match its recorded sha256: expected ${sha256}, found ${actual.sha256}; it was changed outside Ferry.`);
  }
  return dir;
}

/**
 * Reads single files of artifact trees into memory, each tree verified first: a family replica in
 * pod mode fetches a member's model file on a miss this way (src/replica/family-store.ts).
 */
export interface ArtifactReader {
  /**
   * The bytes of `file` in the tree at `key`, once the whole tree hashed to `sha256`; MODEL_ERROR
   * naming the key and both digests when it does not, or naming the file when the tree lacks it.
   * A tree of more than `maxBytes` is refused before anything is read, with `tooLarge(total)`.
   */
  readVerifiedFile(key: string, sha256: string, file: string, maxBytes: number, tooLarge: (totalBytes: number) => Error): Promise<Buffer>;
  close(): void;
}

/** An `ArtifactReader` on the store at `location` (S3: one client for the process's life). */
export async function openArtifactReader(location: ParsedArtifactStoreLocation, workDir: string): Promise<ArtifactReader> {
  let readTree: (key: string, maxBytes: number, tooLarge: (totalBytes: number) => Error) => Promise<Array<{ rel: string; bytes: Buffer }>>;
  let close = (): void => undefined;
  let where: string;
  if (location.kind === 's3') {
    const { S3ArtifactStore } = await import('./s3.js');
    const store = await S3ArtifactStore.open({ ...location, endpoint: location.endpoint, credentials: undefined, cacheDir: path.join(workDir, 'artifact-cache') });
    readTree = (key, maxBytes, tooLarge) => store.readTree(key, maxBytes, tooLarge);
    close = () => store.close();
    where = `S3 bucket '${location.bucket}'`;
  } else {
    const root = path.resolve(location.root);
    where = `the artifact store at '${location.root}'`;
    readTree = async (key, maxBytes, tooLarge) => {
      const files = await listTree(path.join(root, ...validateKey(key))).catch((err: unknown) => {
        throw new FerryError('MODEL_ERROR', `Artifact '${key}' cannot be read from ${where}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      });
      const total = files.reduce((n, f) => n + f.sizeBytes, 0);
      if (total > maxBytes) throw tooLarge(total);
      return Promise.all(files.map(async (f) => ({ rel: f.rel, bytes: await fsp.readFile(f.abs) })));
    };
  }
  return {
    close,
    readVerifiedFile: async (key, sha256, file, maxBytes, tooLarge) => {
      const files = await readTree(key, maxBytes, tooLarge);
      const actual = digestFiles(files);
      if (actual !== sha256) {
        throw new FerryError('MODEL_ERROR', `Artifact '${key}' in ${where} does not match its recorded sha256: expected ${sha256}, found ${actual}; it was changed outside Ferry.`);
      }
      const found = files.find((f) => f.rel === file);
      if (found === undefined) throw new FerryError('MODEL_ERROR', `Artifact '${key}' has no file '${file}'.`);
      return found.bytes;
    },
  };
}
