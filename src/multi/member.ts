/**
 * A family member's artifact as the gateway tells a replica about it (docs/multi-model.md, "How a
 * replica gets a member"): the artifact key, the version's recorded tree sha256 and the model
 * file inside the tree. A replica that fetches members from the artifact store itself (a pod on
 * the Kubernetes runtime) needs exactly these three to fetch a member on a miss and verify it.
 *
 * It travels in the request frame's metadata (docs/channel.md, key 4), whose values are ASCII:
 * `<sha256> <modelFile> <key>`, the last two percent-encoded (`encodeURIComponent`), e.g.
 * `9f86…0a08 model.onnx bulk%2F1b2c…%2F17`. A value that does not decode into a valid
 * sha256, key and file is refused (400) by the replica.
 */
import { validateKey } from '../artifacts/index.js';
import { FerryError } from '../errors.js';

export interface MemberArtifact {
  /** Artifact key of the version's tree, e.g. "bulk/1b2c…/17". */
  key: string;
  /** The version's recorded tree digest (64 hex digits): what the fetched tree must hash to. */
  sha256: string;
  /** The model file's path inside the tree, e.g. "model.onnx". */
  modelFile: string;
}

const SHA256 = /^[0-9a-f]{64}$/;

/** The metadata value carrying `a`. */
export function encodeMemberArtifact(a: MemberArtifact): string {
  return `${a.sha256} ${encodeURIComponent(a.modelFile)} ${encodeURIComponent(a.key)}`;
}

/** Inverse of `encodeMemberArtifact`; INVALID_PARAMETER_VALUE naming the value when it is not one. */
export function decodeMemberArtifact(value: string): MemberArtifact {
  const bad = (why: string): FerryError => new FerryError('INVALID_PARAMETER_VALUE', `Invalid member artifact '${value.slice(0, 200)}' in the request metadata: ${why}.`);
  const parts = value.split(' ');
  if (parts.length !== 3) throw bad('expected "<sha256> <modelFile> <key>"');
  const [sha256 = '', file = '', key = ''] = parts;
  if (!SHA256.test(sha256)) throw bad('the sha256 is not 64 lower-case hex digits');
  let decoded: { key: string; modelFile: string };
  try {
    decoded = { key: decodeURIComponent(key), modelFile: decodeURIComponent(file) };
  } catch {
    throw bad('malformed percent-encoding');
  }
  validateKey(decoded.key, 'key');
  validateKey(decoded.modelFile, 'model file');
  return { sha256, ...decoded };
}
