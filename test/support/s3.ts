/**
 * A real S3-compatible server for tests: s3rver (a Node implementation of the S3 REST API) on a
 * free port, its objects in a temporary directory.
 */
import fsp from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import type { S3Settings } from '../../src/artifacts/index.js';
import { tempDir } from './index.js';

interface S3rverInstance {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}
type S3rverClass = new (opts: Record<string, unknown>) => S3rverInstance;

const require = createRequire(import.meta.url);
/** s3rver ships no type declarations; this is the part of its API the tests use. */
const S3rver = require('s3rver') as S3rverClass;

interface ListOptions { delimiter?: string; prefix?: string; maxKeys?: number }
interface ListResult { objects: Array<{ key: string }>; commonPrefixes: string[]; isTruncated: boolean }
type ListObjects = (this: unknown, bucket: string, options: ListOptions) => Promise<ListResult>;
const fsStore = require('s3rver/lib/stores/filesystem') as { prototype: { listObjects: ListObjects } };

/**
 * s3rver 3.7 bug, corrected here: with a delimiter it does not descend into directories below the
 * prefix, so a "directory" holding only directories (`models/` over `models/a/1/model.onnx`) is
 * missing from CommonPrefixes, where S3 lists it. The contract suite's first test catches this.
 * The correction lists without a delimiter and groups the keys as S3 does.
 */
const listObjects = fsStore.prototype.listObjects;
fsStore.prototype.listObjects = async function (bucket, options) {
  const { delimiter, prefix = '', maxKeys = Infinity } = options;
  if (delimiter === undefined || delimiter === '') return listObjects.call(this, bucket, options);
  const all = await listObjects.call(this, bucket, { ...options, delimiter: '', maxKeys: Infinity });
  const commonPrefixes = new Set<string>();
  const objects: Array<{ key: string }> = [];
  for (const o of all.objects) {
    const idx = o.key.slice(prefix.length).indexOf(delimiter);
    if (idx === -1) objects.push(o);
    else commonPrefixes.add(o.key.slice(0, prefix.length + idx + delimiter.length));
  }
  return { objects: objects.slice(0, maxKeys), commonPrefixes: [...commonPrefixes].sort(), isTruncated: objects.length > maxKeys };
};

/** s3rver checks signatures against this fixed key pair. */
export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

export interface TestS3 {
  endpoint: string;
  /** Settings for a store in `bucket` (created at start) under `prefix`. */
  settings(bucket: string, prefix?: string): S3Settings;
  /** The directory s3rver keeps its objects in. */
  dir: string;
  close(): Promise<void>;
}

/** Starts s3rver on 127.0.0.1 with the given buckets. */
export async function startTestS3(buckets: string[]): Promise<TestS3> {
  const dir = await tempDir();
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: dir, configureBuckets: buckets.map((name) => ({ name })) });
  const addr = await server.run();
  const endpoint = `http://127.0.0.1:${addr.port}`;
  return {
    endpoint,
    dir,
    settings: (bucket, prefix = '') => ({ bucket, prefix, endpoint, region: 'us-east-1', forcePathStyle: true, credentials: S3RVER_CREDENTIALS }),
    close: async () => {
      await server.close();
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}
