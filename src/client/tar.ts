/**
 * The archives `ferry models import <archive>` reads: plain tar, or gzip-compressed (`.tar.gz`,
 * `.tgz`), read as a stream (100,000 models are ~300 MB; only one wanted file is held at a time).
 */
import { createReadStream } from 'node:fs';
import { createGunzip } from 'node:zlib';
import { readTar, type TarFilter } from '../tar/index.js';

export type { TarFilter } from '../tar/index.js';

/** Whether `file` is an archive `tarFiles` reads (by its name). */
export function isTarArchive(file: string): boolean {
  return /\.(tar|tar\.gz|tgz)$/.test(file);
}

/**
 * The regular files of the archive `file` that `filter` wants, in archive order: their paths
 * inside the archive and their bytes. Throws an Error naming the archive for a malformed or
 * truncated one.
 */
export function tarFiles(file: string, filter: TarFilter): AsyncGenerator<{ path: string; content: Buffer }> {
  const raw = createReadStream(file);
  return readTar(/\.(tar\.gz|tgz)$/.test(file) ? raw.pipe(createGunzip()) : raw, file, filter);
}
