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

/** s3rver ships no type declarations; this is the part of its API the tests use. */
const S3rver = createRequire(import.meta.url)('s3rver') as S3rverClass;

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
