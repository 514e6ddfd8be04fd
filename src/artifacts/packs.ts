/**
 * Packs: many small artifacts in one stored file. Bulk registration writes a call's models as one
 * pack, `packs/<uuid>` (their bytes one after another), instead of a file and a directory per
 * model: on a disk, creating a million inodes is what bounded the rate (docs/multi-model.md).
 *
 * Each member is a one-file artifact tree whose key says where its bytes are:
 * `packs/<uuid>/<offset>-<length>-<file>` is the tree (a directory holding one file), and
 * `packs/<uuid>/<offset>-<length>-<file>/<file>` that file. Every store serves these keys like any
 * other (get, list, exists, digest, copy, localDir), reading the byte range of the pack, so a
 * member's readers need not know it is one. A member is not deleted alone: the pack goes with its
 * last version (`Registry` asks the store whether any version still points into it).
 */
import { createHash, randomUUID } from 'node:crypto';
import { oneFileTreeDigest } from './tree.js';

/** Where packs live in a store. */
export const PACKS_ROOT = 'packs';

/** A member key, parsed: its pack, its byte range, its file name, and what inside the tree the key names. */
export interface PackMember {
  /** The pack's key, `packs/<uuid>`. */
  pack: string;
  offset: number;
  length: number;
  file: string;
  /** '' for the member's tree, `file` for its file; anything else names nothing. */
  inner: string;
}

const MEMBER_SEGMENT = /^(\d{1,15})-(\d{1,15})-(.+)$/;
/** Longest file name a member may have: its key segment adds up to 32 bytes (offset and length) and stays within 255. */
export const MAX_MEMBER_FILE_BYTES = 255 - 32;
const PACK_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The key of a new pack. */
export function newPackKey(): string {
  return `${PACKS_ROOT}/${randomUUID()}`;
}

/** The tree key of a pack's member. */
export function packMemberKey(pack: string, offset: number, length: number, file: string): string {
  return `${pack}/${offset}-${length}-${file}`;
}

/** The member a (validated) key names, or undefined when it is not a member key. */
export function parsePackMember(key: string): PackMember | undefined {
  if (!key.startsWith(`${PACKS_ROOT}/`)) return undefined;
  const [root, id, segment, ...rest] = key.split('/');
  if (id === undefined || !PACK_ID.test(id)) return undefined;
  const m = segment === undefined ? null : MEMBER_SEGMENT.exec(segment);
  if (m === null) return undefined;
  return { pack: `${root}/${id}`, offset: Number(m[1]), length: Number(m[2]), file: m[3] as string, inner: rest.join('/') };
}

/** Whether the key is a pack's own key (`packs/<uuid>`). */
export function isPackKey(key: string): boolean {
  const [root, id, ...rest] = key.split('/');
  return root === PACKS_ROOT && id !== undefined && PACK_ID.test(id) && rest.length === 0;
}

/** One artifact of a pack being built: its file name and bytes. */
export interface PackFile {
  file: string;
  content: Uint8Array;
}

/** A pack's bytes, and per file its member key and its tree's sha256 (as `digestTree` computes it). */
export function buildPack(pack: string, files: readonly PackFile[]): { bytes: Buffer; members: Array<{ key: string; sha256: string; sizeBytes: number }> } {
  let offset = 0;
  const members = files.map((f) => {
    const key = packMemberKey(pack, offset, f.content.byteLength, f.file);
    offset += f.content.byteLength;
    return { key, sha256: memberDigest(f.file, f.content), sizeBytes: f.content.byteLength };
  });
  return { bytes: Buffer.concat(files.map((f) => f.content), offset), members };
}

/** The tree digest of a member: a directory holding only `file`, whose bytes are `bytes`. */
export function memberDigest(file: string, bytes: Uint8Array): string {
  return oneFileTreeDigest(file, createHash('sha256').update(bytes).digest('hex'));
}
