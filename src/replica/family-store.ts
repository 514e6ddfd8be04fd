/**
 * How a family replica in pod mode (Kubernetes runtime) gets a member on a miss: there is no
 * runtime next to it to stage members, so it reads them from the artifact store itself. The
 * gateway's request names the member's artifact (key, tree sha256, model file: src/multi/member.ts,
 * carried in the frame's metadata); the replica reads that tree into memory, checks it against the
 * sha256 and hands the model file's bytes to the cache's loader. Nothing is written to disk.
 *
 * Trust: the gateway (a Ferry server pod, the only peer the NetworkPolicy admits) resolved the
 * member with the family's rules and the caller's permissions before it sent the request, so the
 * pod loads what the server looked up; the digest makes sure the bytes are the registered ones.
 */
import { openArtifactReader, type ParsedArtifactStoreLocation } from '../artifacts/index.js';
import { FerryError } from '../errors.js';
import { tooLarge } from '../multi/index.js';
import type { StageModel } from './family.js';

/** How long one member's fetch may take before its requests fail (as the local runtime's staging). */
const FETCH_TIMEOUT_MS = 30_000;
/** Fetches outstanding at once; one more is a retryable 503 (as the local replica's staging requests). */
const MAX_FETCHES = 16;

/**
 * A `StageModel` that fetches from the artifact store at `location` (S3: one client, opened now,
 * so a wrong setting fails the replica's start). A tree larger than `cacheBytes` is refused unread:
 * it could never fit the cache.
 */
export async function stageFromStore(location: ParsedArtifactStoreLocation, workDir: string, cacheBytes: number): Promise<StageModel> {
  const reader = await openArtifactReader(location, workDir);
  let fetching = 0;
  return async (name, version, artifact) => {
    if (artifact === undefined) {
      throw new FerryError('INVALID_PARAMETER_VALUE', `Model '${name}' version ${version} is not loaded, and the request does not say where its artifact is (the gateway sends it in the request metadata).`);
    }
    if (fetching >= MAX_FETCHES) {
      throw new FerryError('TEMPORARILY_UNAVAILABLE', `This replica has ${fetching} models loading; retry shortly.`, { retryAfterS: 1 });
    }
    // Counted until the read itself settles, also past the deadline: the bound is on real work.
    fetching++;
    const read = reader.readVerifiedFile(artifact.key, artifact.sha256, artifact.modelFile, cacheBytes, (total) => tooLarge(`${name}/${version}`, total, cacheBytes))
      .finally(() => fetching--);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new FerryError('DEADLINE_EXCEEDED', `Fetching model '${name}' version ${version} from the artifact store took more than ${FETCH_TIMEOUT_MS} ms.`)), FETCH_TIMEOUT_MS);
    });
    read.catch(() => undefined); // a read that fails after the deadline has no one to tell
    try {
      return { modelFile: artifact.modelFile, bytes: await Promise.race([read, deadline]) };
    } finally {
      clearTimeout(timer);
    }
  };
}
