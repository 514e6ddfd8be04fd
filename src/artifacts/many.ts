/**
 * Writing many new small files at once (bulk registration), shared by the artifact stores: a
 * bounded pool of concurrent writes, one outcome per file, and the local store's one durability
 * step for all of them (a file system sync instead of an fsync per file).
 */
import { execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import { toFerryError } from '../errors.js';
import type { NewFile, NewFileResult } from './types.js';

/** Files written at once: enough to keep libuv's 4 threads (or an S3 connection pool) busy. */
const WRITE_CONCURRENCY = 16;

/** `write` for every file, WRITE_CONCURRENCY at a time; an error is that file's result. */
export async function eachFile(files: readonly NewFile[], write: (f: NewFile) => Promise<{ sizeBytes: number; sha256: string }>): Promise<NewFileResult[]> {
  const results = new Array<NewFileResult>(files.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < files.length; i = next++) {
      results[i] = await write(files[i] as NewFile).catch(toFerryError);
    }
  };
  await Promise.all(Array.from({ length: Math.min(WRITE_CONCURRENCY, files.length) }, worker));
  return results;
}

/**
 * Makes everything written under `dir` durable: `sync -f` (coreutils; Linux's syncfs(2), which
 * flushes the whole file system `dir` is on, data and directory entries, in one call; Node has no
 * binding for it). Where `sync` cannot be run, each of `files` is fsynced instead.
 */
export async function syncFileSystem(dir: string, files: readonly string[]): Promise<void> {
  const ran = await new Promise<boolean>((resolve, reject) => {
    execFile('sync', ['-f', dir], { timeout: 120_000 }, (err) => {
      if (err === null) resolve(true);
      else if ((err as NodeJS.ErrnoException).code === 'ENOENT') resolve(false);
      else reject(new Error(`sync -f ${dir} failed: ${err.message}`));
    });
  });
  if (ran) return;
  for (const f of files) {
    const fh = await fsp.open(f, 'r');
    await fh.sync().finally(() => fh.close());
  }
}
