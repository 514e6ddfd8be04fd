/** Runs one load of bench/multi-load.ts on a worker thread (its own event loop, not the gateway's). */
import { Worker } from 'node:worker_threads';
import type { LoadResult, LoadSpec } from './multi-load.js';

export function load(spec: LoadSpec): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL('./multi-load.js', import.meta.url), { workerData: spec });
    w.once('message', (m: LoadResult | { error: string }) => ('error' in m ? reject(new Error(m.error)) : resolve(m)));
    w.once('error', reject);
  });
}
