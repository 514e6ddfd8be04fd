/**
 * The body of the local store's writer thread (`WriteThread`, write-thread.ts): creates a call's
 * files with synchronous system calls and answers, per file, its sha256 or why it was not
 * written. It only writes; the store checks keys and limits before and makes the files durable
 * after.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parentPort } from 'node:worker_threads';
import type { WriteBatch, WriteOutcome } from './write-thread.js';

/** Creates each file (mode 0600, refused when it exists) and its missing parent directories; never throws. */
function writeAll({ paths, sizes, data }: WriteBatch): WriteOutcome[] {
  const bytes = new Uint8Array(data);
  let at = 0;
  return paths.map((dest, i) => {
    const content = bytes.subarray(at, (at += sizes[i] ?? 0));
    try {
      fs.mkdirSync(path.dirname(dest), { recursive: true });
      fs.writeFileSync(dest, content, { flag: 'wx', mode: 0o600 });
      return { sha256: createHash('sha256').update(content).digest('hex') };
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      return { code: e.code ?? 'EIO', message: e.message };
    }
  });
}

parentPort?.on('message', (msg: { id: number; batch: WriteBatch }) => {
  parentPort?.postMessage({ id: msg.id, outcomes: writeAll(msg.batch) });
});
