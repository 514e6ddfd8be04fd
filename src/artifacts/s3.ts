/**
 * S3 artifact store (AWS S3 or any S3-compatible server: MinIO, Ceph, R2...). Keys are validated
 * exactly as in the local store and live under `prefix` in one bucket; directories are key
 * prefixes ending in '/'. Replicas load models from a local directory, so `digest` and `localDir`
 * download a tree into a cache under the data directory; the digest is computed over that copy
 * with the local store's function (tree.ts), so a version's sha256 does not depend on the store.
 *
 * Writes: one PutObject for a file up to one part (8 MiB or more), a multipart upload above that,
 * so memory per upload is one part whatever the file size. An object appears whole or not at all
 * (S3 semantics); an upload over the limit or cut off is aborted and leaves nothing under its key.
 * A pack member (packs.ts) is read with a ranged GetObject of its pack.
 */
import {
  AbortMultipartUploadCommand, CompleteMultipartUploadCommand, CopyObjectCommand, CreateMultipartUploadCommand,
  DeleteObjectsCommand, GetObjectCommand, HeadBucketCommand, HeadObjectCommand, ListObjectsV2Command,
  PutObjectCommand, S3Client, UploadPartCommand, type CompletedPart,
} from '@aws-sdk/client-s3';
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError, notFound } from '../errors.js';
import type { ArtifactEntry, ArtifactStore, TreeDigest } from './types.js';
import { validatedKey, validateKey } from './keys.js';
import { parsePackMember, type PackMember } from './packs.js';
import { digestTree, listTree, treeChanged, verifiedFile } from './tree.js';

/** Where and how to reach the bucket. */
export interface S3Settings {
  bucket: string;
  /** Key prefix inside the bucket: '' or '/'-terminated, e.g. "ferry/". */
  prefix: string;
  /** Endpoint URL of an S3-compatible server; undefined: AWS for `region`. */
  endpoint: string | undefined;
  region: string;
  /** Path-style URLs (`endpoint/bucket/key`), which most self-hosted servers need. */
  forcePathStyle: boolean;
  /** Explicit keys; undefined: the standard AWS chain (environment, shared config, instance role...). */
  credentials: { accessKeyId: string; secretAccessKey: string; sessionToken?: string } | undefined;
}

export interface S3ArtifactStoreOptions extends S3Settings {
  /** Local directory for the copies replicas load (created; owned by this store). */
  cacheDir: string;
}

/** S3's smallest part (5 MiB) rounded up; a part is buffered in memory while it is sent. */
const MIN_PART_BYTES = 8 * 1024 * 1024;
/** S3 allows at most 10,000 parts per upload. */
const MAX_PARTS = 10_000;
/** Largest object one CopyObject can copy; bigger ones are streamed through this process. */
const MAX_COPY_OBJECT_BYTES = 5 * 1024 ** 3;
/** DeleteObjects takes at most 1,000 keys per call. */
const DELETE_BATCH = 1000;
const TMP_DIR = '.tmp';

export class S3ArtifactStore implements ArtifactStore {
  /** Cache entries whose files were hashed by this process: entry directory → sha256. */
  private readonly verified = new Map<string, string>();
  /** One cache operation per key at a time (concurrent replica starts share one download). */
  private readonly keyLocks = new Map<string, Promise<unknown>>();

  private constructor(
    private readonly s3: S3Client,
    private readonly opts: S3ArtifactStoreOptions,
  ) {}

  /** Connects and checks that the bucket is reachable, so a wrong setting fails the server start. */
  static async open(opts: S3ArtifactStoreOptions): Promise<S3ArtifactStore> {
    const s3 = new S3Client({
      region: opts.region,
      forcePathStyle: opts.forcePathStyle,
      ...(opts.endpoint === undefined ? {} : { endpoint: opts.endpoint }),
      ...(opts.credentials === undefined ? {} : { credentials: opts.credentials }),
      // Checksums only where S3 requires them: many S3-compatible servers reject the newer
      // default (CRC32 trailers on every request).
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    try {
      await s3.send(new HeadBucketCommand({ Bucket: opts.bucket }));
    } catch (err) {
      s3.destroy();
      const where = opts.endpoint ?? `AWS region ${opts.region}`;
      throw new FerryError('INVALID_PARAMETER_VALUE', `Cannot reach S3 bucket '${opts.bucket}' at ${where} (artifactStore.bucket): ${describeS3Error(err)}.`, { cause: err });
    }
    await fsp.mkdir(opts.cacheDir, { recursive: true, mode: 0o700 });
    // Downloads interrupted by a crash.
    await fsp.rm(path.join(opts.cacheDir, TMP_DIR), { recursive: true, force: true });
    await fsp.mkdir(path.join(opts.cacheDir, TMP_DIR));
    return new S3ArtifactStore(s3, opts);
  }

  /** The object key of a validated artifact key ('' with `allowRoot`: the prefix itself). */
  private objectKey(key: string, allowRoot = false): string {
    if (key === '' && allowRoot) return this.opts.prefix;
    validateKey(key);
    return this.opts.prefix + key;
  }

  async putFile(key: string, body: AsyncIterable<Uint8Array>, maxBytes: number): Promise<{ sizeBytes: number; sha256: string }> {
    const objectKey = this.objectKey(key);
    await this.refuseConflicts(key);
    return this.upload(objectKey, body, maxBytes, key);
  }

  async getFile(key: string): Promise<{ stream: Readable; sizeBytes: number }> {
    const objectKey = this.objectKey(key);
    const m = parsePackMember(key);
    if (m !== undefined && m.inner !== m.file) throw notFound(`Artifact '${key}'`);
    if (m?.length === 0) {
      if (!(await this.holds(m))) throw notFound(`Artifact '${key}'`);
      return { stream: Readable.from([]), sizeBytes: 0 };
    }
    try {
      const res = await this.s3.send(new GetObjectCommand({
        Bucket: this.opts.bucket,
        ...(m === undefined ? { Key: objectKey } : { Key: this.objectKey(m.pack), Range: `bytes=${m.offset}-${m.offset + m.length - 1}` }),
      }));
      if (!(res.Body instanceof Readable)) throw new FerryError('INTERNAL_ERROR', `S3 returned no body for '${key}'.`);
      // A pack shorter than the member's range answers the bytes it has: that member is not there.
      if (m !== undefined && res.ContentLength !== m.length) {
        res.Body.destroy();
        throw notFound(`Artifact '${key}'`);
      }
      return { stream: res.Body, sizeBytes: res.ContentLength ?? 0 };
    } catch (err) {
      if (isNotFound(err) || (err as { name?: string }).name === 'InvalidRange') throw notFound(`Artifact '${key}'`);
      throw err;
    }
  }

  async list(prefix: string): Promise<ArtifactEntry[]> {
    const m = prefix === '' ? undefined : parsePackMember(validatedKey(prefix));
    if (m !== undefined) return m.inner === '' && (await this.holds(m)) ? [{ path: m.file, isDir: false, sizeBytes: m.length }] : [];
    const base = prefix === '' ? this.objectKey('', true) : `${this.objectKey(prefix)}/`;
    const out: ArtifactEntry[] = [];
    let token: string | undefined;
    do {
      const res = await this.s3.send(new ListObjectsV2Command({ Bucket: this.opts.bucket, Prefix: base, Delimiter: '/', ContinuationToken: token }));
      for (const p of res.CommonPrefixes ?? []) {
        const name = (p.Prefix ?? '').slice(base.length, -1);
        if (name !== '') out.push({ path: name, isDir: true, sizeBytes: 0 });
      }
      for (const o of res.Contents ?? []) {
        const name = (o.Key ?? '').slice(base.length);
        // '' is a "folder" marker object that some S3 tools create.
        if (name !== '') out.push({ path: name, isDir: false, sizeBytes: o.Size ?? 0 });
      }
      token = res.IsTruncated === true ? res.NextContinuationToken : undefined;
    } while (token !== undefined);
    return out.sort((a, b) => a.path.localeCompare(b.path));
  }

  async exists(key: string): Promise<boolean> {
    const objectKey = this.objectKey(key);
    const m = parsePackMember(key);
    if (m !== undefined) return (m.inner === '' || m.inner === m.file) && this.holds(m);
    const [file, dir] = await Promise.all([this.headSize(objectKey), this.hasChildren(objectKey)]);
    return file !== undefined || dir;
  }

  async importLocal(src: string, key: string, maxBytes: number): Promise<void> {
    this.objectKey(key);
    const st = await fsp.lstat(src).catch(() => undefined);
    if (!st) throw new FerryError('INVALID_PARAMETER_VALUE', `Source path '${src}' does not exist on the server.`);
    const files = await listTree(src);
    let total = 0;
    for (const f of files) {
      total += f.sizeBytes;
      if (total > maxBytes) throw new FerryError('PAYLOAD_TOO_LARGE', `Source '${src}' is larger than the limit of ${maxBytes} bytes.`);
    }
    await this.replaceTree(key, files.map((f) => ({
      rel: f.rel,
      // The known size as the limit: it sets the part size, and a file that grew since is refused.
      write: (objectKey: string) => this.upload(objectKey, fs.createReadStream(f.abs), f.sizeBytes, key).then(() => undefined),
    })));
  }

  async copy(from: string, to: string): Promise<void> {
    this.objectKey(to);
    const m = parsePackMember(validatedKey(from));
    if (m !== undefined) {
      const { stream } = await this.getFile(m.inner === '' ? `${from}/${m.file}` : from);
      await this.putFile(m.inner === '' ? `${to}/${m.file}` : to, stream, m.length);
      return;
    }
    const files = await this.listTreeObjects(from);
    if (files.length === 0) throw notFound(`Artifact '${from}'`);
    await this.replaceTree(to, files.map((f) => ({ rel: f.rel, write: (objectKey: string) => this.copyObject(f.objectKey, f.sizeBytes, objectKey, to) })));
  }

  /** A pack member is not deleted alone: it goes with its pack. */
  async delete(key: string): Promise<void> {
    if (parsePackMember(validatedKey(key)) !== undefined) return;
    await this.deleteObjects(key);
    // A deleted tree's local copies go too (they would only be reused after a digest check anyway).
    await this.withKeyLock(key, async () => {
      for (const name of await fsp.readdir(this.opts.cacheDir)) {
        const entryKey = await readCacheRecord(path.join(this.opts.cacheDir, name)).then((r) => r?.key, () => undefined);
        if (entryKey === undefined || (entryKey !== key && !entryKey.startsWith(`${key}/`))) continue;
        await fsp.rm(path.join(this.opts.cacheDir, name), { recursive: true, force: true });
        this.verified.delete(path.join(this.opts.cacheDir, name));
      }
    });
  }

  /** Downloads the tree at `key` afresh and digests that copy (which localDir then reuses). */
  async digest(key: string): Promise<TreeDigest> {
    this.objectKey(key);
    return this.withKeyLock(key, async () => (await this.download(key)).digest);
  }

  /**
   * A verified local copy of the tree at `key`. With `sha256` (a version's recorded digest) a cached
   * copy is reused when its files hash to it (checked once per process) and a fresh download must
   * hash to it, else MODEL_ERROR; without, the tree is always downloaded afresh.
   */
  async localDir(key: string, sha256?: string): Promise<string> {
    this.objectKey(key);
    return this.withKeyLock(key, async () => {
      const entry = this.cacheEntry(key);
      if (sha256 !== undefined) {
        const record = await readCacheRecord(entry).catch(() => undefined);
        if (record?.key === key && record.sha256 === sha256) {
          if (this.verified.get(entry) === sha256) return path.join(entry, 'tree');
          const actual = await digestTree(path.join(entry, 'tree')).catch(() => undefined);
          if (actual?.sha256 === sha256) {
            this.verified.set(entry, sha256);
            return path.join(entry, 'tree');
          }
        }
      }
      const { digest, dir } = await this.download(key);
      if (sha256 !== undefined && digest.sha256 !== sha256) throw treeChanged(key, sha256, digest.sha256, this.where());
      return dir;
    });
  }

  /**
   * Every file of the tree at `key`, read into memory (a family pod's member on a miss: nothing is
   * written to disk). `tooLarge(total)` is thrown, before anything is downloaded, when the listed
   * sizes add up to more than `maxBytes`; a file that streams more than it was listed with is
   * refused too.
   */
  async readTree(key: string, maxBytes: number, tooLarge: (totalBytes: number) => Error): Promise<Array<{ rel: string; bytes: Buffer }>> {
    const files = await this.listTreeObjects(key, 'directory first');
    if (files.length === 0) throw notFound(`Artifact '${key}'`);
    const total = files.reduce((n, f) => n + f.sizeBytes, 0);
    if (total > maxBytes) throw tooLarge(total);
    return Promise.all(files.map(async (f) => {
      const { stream } = await this.getFile(key + (f.rel === '' ? '' : `/${f.rel}`));
      const chunks: Buffer[] = [];
      let n = 0;
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        n += chunk.length;
        if (n > f.sizeBytes) {
          stream.destroy();
          throw new FerryError('MODEL_ERROR', `Artifact file '${key}/${f.rel}' in S3 bucket '${this.opts.bucket}' is longer than its listed ${f.sizeBytes} bytes.`);
        }
        chunks.push(chunk);
      }
      return { rel: f.rel, bytes: Buffer.concat(chunks, n) };
    }));
  }

  async readVerifiedFile(key: string, sha256: string, file: string, maxBytes: number, tooLarge: (totalBytes: number) => Error): Promise<Buffer> {
    return verifiedFile(key, this.where(), await this.readTree(key, maxBytes, tooLarge), sha256, file);
  }

  private where(): string {
    return `S3 bucket '${this.opts.bucket}'`;
  }

  /** Stops the client's sockets. */
  close(): void {
    this.s3.destroy();
  }

  // --- cache ---

  /** Cache entries are named by a hash of the key, so nested keys never share files. */
  private cacheEntry(key: string): string {
    return path.join(this.opts.cacheDir, createHash('sha256').update(key).digest('hex').slice(0, 32));
  }

  /** Downloads `key` into a temporary directory, digests it, and swaps it in as the key's cache entry. */
  private async download(key: string): Promise<{ digest: TreeDigest; dir: string }> {
    const files = await this.listTreeObjects(key);
    if (files.length === 0) throw notFound(`Artifact '${key}'`);
    const tmp = path.join(this.opts.cacheDir, TMP_DIR, randomUUID());
    const tree = path.join(tmp, 'tree');
    try {
      // recursive: the cache directory may have been emptied by hand since the start.
      await fsp.mkdir(tmp, { recursive: true });
      for (const f of files) {
        const dest = f.rel === '' ? tree : path.join(tree, ...validateKey(f.rel));
        await fsp.mkdir(path.dirname(dest), { recursive: true });
        const { stream } = await this.getFile(key + (f.rel === '' ? '' : `/${f.rel}`));
        await pipeline(stream, fs.createWriteStream(dest, { flags: 'wx', mode: 0o600 }));
      }
      const digest = await digestTree(tree);
      await fsp.writeFile(path.join(tmp, 'record.json'), JSON.stringify({ key, sha256: digest.sha256 }));
      const entry = this.cacheEntry(key);
      await fsp.rm(entry, { recursive: true, force: true });
      await fsp.rename(tmp, entry);
      this.verified.set(entry, digest.sha256);
      return { digest, dir: path.join(entry, 'tree') };
    } catch (err) {
      await fsp.rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }

  private async withKeyLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const before = this.keyLocks.get(key) ?? Promise.resolve();
    const run = before.then(fn, fn);
    const settled = run.catch(() => undefined);
    this.keyLocks.set(key, settled);
    try {
      return await run;
    } finally {
      if (this.keyLocks.get(key) === settled) this.keyLocks.delete(key);
    }
  }

  // --- objects ---

  /**
   * Streams `body` to `objectKey`: one PutObject when it fits in a part, else a multipart upload.
   * `key` names the artifact in errors.
   */
  private async upload(objectKey: string, body: AsyncIterable<Uint8Array>, maxBytes: number, key: string): Promise<{ sizeBytes: number; sha256: string }> {
    // Parts grow with the limit so that `maxBytes` fits in 10,000 of them (2 GiB: 8 MiB parts).
    const partBytes = Math.max(MIN_PART_BYTES, Math.ceil(maxBytes / MAX_PARTS));
    const { bucket } = this.opts;
    const hash = createHash('sha256');
    let sizeBytes = 0;
    let pending: Uint8Array[] = [];
    let pendingBytes = 0;
    let uploadId: string | undefined;
    const parts: CompletedPart[] = [];
    const sendPart = async (): Promise<void> => {
      uploadId ??= (await this.s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: objectKey }))).UploadId;
      const PartNumber = parts.length + 1;
      const res = await this.s3.send(new UploadPartCommand({ Bucket: bucket, Key: objectKey, UploadId: uploadId, PartNumber, Body: Buffer.concat(pending), ContentLength: pendingBytes }));
      parts.push({ ETag: res.ETag, PartNumber });
      pending = [];
      pendingBytes = 0;
    };
    try {
      for await (const chunk of body) {
        sizeBytes += chunk.byteLength;
        if (sizeBytes > maxBytes) throw new FerryError('PAYLOAD_TOO_LARGE', `Artifact upload exceeds the limit of ${maxBytes} bytes.`);
        hash.update(chunk);
        pending.push(chunk);
        pendingBytes += chunk.byteLength;
        if (pendingBytes >= partBytes) await sendPart();
      }
      if (uploadId === undefined) {
        await this.s3.send(new PutObjectCommand({ Bucket: bucket, Key: objectKey, Body: Buffer.concat(pending), ContentLength: pendingBytes }));
      } else {
        if (pendingBytes > 0) await sendPart();
        await this.s3.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: objectKey, UploadId: uploadId, MultipartUpload: { Parts: parts } }));
      }
    } catch (err) {
      if (uploadId !== undefined) {
        // Best effort: a server without abort support (or a lost connection) leaves only unlisted
        // parts, which a bucket lifecycle rule for incomplete uploads removes.
        await this.s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: objectKey, UploadId: uploadId })).catch(() => undefined);
      }
      // The uploader closed the connection mid-body: its request failed, not the server.
      if ((err as NodeJS.ErrnoException).code === 'ECONNRESET') throw new FerryError('MALFORMED_REQUEST', `Upload of '${key}' was cut off: the client closed the connection.`);
      throw err;
    }
    return { sizeBytes, sha256: hash.digest('hex') };
  }

  /** Copies one object inside the bucket; objects over CopyObject's limit are streamed through. */
  private async copyObject(fromObjectKey: string, sizeBytes: number, toObjectKey: string, key: string): Promise<void> {
    if (sizeBytes > MAX_COPY_OBJECT_BYTES) {
      const res = await this.s3.send(new GetObjectCommand({ Bucket: this.opts.bucket, Key: fromObjectKey }));
      if (!(res.Body instanceof Readable)) throw new FerryError('INTERNAL_ERROR', `S3 returned no body for '${fromObjectKey}'.`);
      await this.upload(toObjectKey, res.Body, sizeBytes, key);
      return;
    }
    const source = `${this.opts.bucket}/${fromObjectKey.split('/').map(encodeURIComponent).join('/')}`;
    await this.s3.send(new CopyObjectCommand({ Bucket: this.opts.bucket, Key: toObjectKey, CopySource: source }));
  }

  /**
   * Replaces whatever is at `key` with `files` (relative paths, '' for `key` itself). On failure
   * nothing is left at `key`: S3 has no rename, so a half-written tree is removed instead.
   */
  private async replaceTree(key: string, files: Array<{ rel: string; write: (objectKey: string) => Promise<void> }>): Promise<void> {
    await this.refuseConflicts(key, false);
    await this.deleteObjects(key);
    try {
      for (const f of files) await f.write(this.objectKey(f.rel === '' ? key : `${key}/${f.rel}`));
    } catch (err) {
      await this.deleteObjects(key).catch(() => undefined);
      throw err;
    }
  }

  /**
   * The checks a file system makes for free: no ancestor of `key` may be a file (409), and unless
   * `orDirectory` is false, `key` itself may not be a directory (409).
   */
  private async refuseConflicts(key: string, orDirectory = true): Promise<void> {
    const segments = key.split('/');
    const ancestors = segments.slice(0, -1).map((_, i) => segments.slice(0, i + 1).join('/'));
    const [sizes, isDir] = await Promise.all([
      Promise.all(ancestors.map((a) => this.headSize(this.objectKey(a)))),
      orDirectory ? this.hasChildren(this.objectKey(key)) : Promise.resolve(false),
    ]);
    if (sizes.some((s) => s !== undefined)) throw new FerryError('RESOURCE_CONFLICT', `Artifact path '${key}' runs through an existing file.`);
    if (isDir) throw new FerryError('RESOURCE_CONFLICT', `Artifact path '${key}' is a directory.`);
  }

  /** Whether the member's pack exists and holds its byte range. */
  private async holds(m: PackMember): Promise<boolean> {
    const size = await this.headSize(this.objectKey(m.pack));
    return size !== undefined && m.offset + m.length <= size;
  }

  /** Size of the object, undefined when there is none. */
  private async headSize(objectKey: string): Promise<number | undefined> {
    try {
      return (await this.s3.send(new HeadObjectCommand({ Bucket: this.opts.bucket, Key: objectKey }))).ContentLength ?? 0;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  private async hasChildren(objectKey: string): Promise<boolean> {
    const res = await this.s3.send(new ListObjectsV2Command({ Bucket: this.opts.bucket, Prefix: `${objectKey}/`, MaxKeys: 1 }));
    return (res.KeyCount ?? res.Contents?.length ?? 0) > 0;
  }

  /**
   * The file `key`, or every object under `key/` ('' marks `key` itself), sorted by path.
   * `directory first` lists before asking whether `key` is a file: one request fewer for a tree
   * that is a directory (a version's always is), one more for a file.
   */
  private async listTreeObjects(key: string, probe: 'file first' | 'directory first' = 'file first'): Promise<Array<{ rel: string; objectKey: string; sizeBytes: number }>> {
    const objectKey = this.objectKey(key);
    const m = parsePackMember(key);
    if (m !== undefined) {
      if ((m.inner !== '' && m.inner !== m.file) || !(await this.holds(m))) return [];
      return [{ rel: m.inner === '' ? m.file : '', objectKey, sizeBytes: m.length }];
    }
    const asFile = async (): Promise<Array<{ rel: string; objectKey: string; sizeBytes: number }> | undefined> => {
      const size = await this.headSize(objectKey);
      return size === undefined ? undefined : [{ rel: '', objectKey, sizeBytes: size }];
    };
    if (probe === 'file first') {
      const file = await asFile();
      if (file !== undefined) return file;
    }
    const out: Array<{ rel: string; objectKey: string; sizeBytes: number }> = [];
    let token: string | undefined;
    do {
      const res = await this.s3.send(new ListObjectsV2Command({ Bucket: this.opts.bucket, Prefix: `${objectKey}/`, ContinuationToken: token }));
      for (const o of res.Contents ?? []) {
        const k = o.Key ?? '';
        if (!k.endsWith('/')) out.push({ rel: k.slice(objectKey.length + 1), objectKey: k, sizeBytes: o.Size ?? 0 });
      }
      token = res.IsTruncated === true ? res.NextContinuationToken : undefined;
    } while (token !== undefined);
    if (out.length === 0 && probe === 'directory first') return (await asFile()) ?? [];
    return out.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  }

  /** Deletes the object `key` and every object under `key/`; nothing there is not an error. */
  private async deleteObjects(key: string): Promise<void> {
    const objectKey = this.objectKey(key);
    const keys = [objectKey];
    let token: string | undefined;
    do {
      const res = await this.s3.send(new ListObjectsV2Command({ Bucket: this.opts.bucket, Prefix: `${objectKey}/`, ContinuationToken: token }));
      for (const o of res.Contents ?? []) if (o.Key !== undefined) keys.push(o.Key);
      token = res.IsTruncated === true ? res.NextContinuationToken : undefined;
    } while (token !== undefined);
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const batch = keys.slice(i, i + DELETE_BATCH);
      const res = await this.s3.send(new DeleteObjectsCommand({ Bucket: this.opts.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }));
      const failed = res.Errors?.[0];
      if (failed !== undefined) throw new FerryError('INTERNAL_ERROR', `Could not delete '${failed.Key ?? ''}' from S3 bucket '${this.opts.bucket}': ${failed.Code ?? ''} ${failed.Message ?? ''}`.trim());
    }
  }
}

async function readCacheRecord(entry: string): Promise<{ key: string; sha256: string } | undefined> {
  const raw = JSON.parse(await fsp.readFile(path.join(entry, 'record.json'), 'utf8')) as { key?: unknown; sha256?: unknown };
  return typeof raw.key === 'string' && typeof raw.sha256 === 'string' ? { key: raw.key, sha256: raw.sha256 } : undefined;
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e.name === 'NoSuchKey' || e.name === 'NotFound' || e.$metadata?.httpStatusCode === 404;
}

function describeS3Error(err: unknown): string {
  const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const status = e.$metadata?.httpStatusCode;
  return [e.name, status === undefined ? undefined : `HTTP ${status}`, e.message].filter((s) => s !== undefined && s !== '').join(', ');
}
