/**
 * Runs a simulation on a worker thread (./worker.ts), at most {@link MAX_RUNNING} at a time per
 * server and for at most {@link SIMULATION_TIMEOUT_MS}: more is a 429, longer a 504, and the
 * thread is terminated.
 */
import { Worker } from 'node:worker_threads';
import { FerryError, isErrorCode } from '../errors.js';
import type { SimulateAnswer, SimulateRequest, SimulationContext } from './request.js';

/** Simulations one server runs at once: each takes a core while it runs. */
export const MAX_RUNNING = 2;
/** A recommendation on the largest trace allowed takes seconds; a minute means something is wrong. */
export const SIMULATION_TIMEOUT_MS = 60_000;

let running = 0;

export async function simulateOnThread(req: SimulateRequest, ctx: SimulationContext): Promise<SimulateAnswer> {
  if (running >= MAX_RUNNING) {
    throw new FerryError('REQUEST_LIMIT_EXCEEDED', `${running} simulations are running on this server (the limit); retry shortly.`, { retryAfterS: 5 });
  }
  running++;
  let worker: Worker | undefined;
  try {
    // Inside the try: a thread that cannot start (its data cannot be cloned) gives its slot back.
    const thread = worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: { req, ctx } });
    return await new Promise<SimulateAnswer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new FerryError('DEADLINE_EXCEEDED', `The simulation took longer than ${SIMULATION_TIMEOUT_MS} ms; use a shorter trace.`)), SIMULATION_TIMEOUT_MS);
      thread.once('message', (m: { answer?: SimulateAnswer; error?: { code: string; message: string } }) => {
        clearTimeout(timer);
        if (m.answer !== undefined) resolve(m.answer);
        else reject(new FerryError(m.error !== undefined && isErrorCode(m.error.code) ? m.error.code : 'INTERNAL_ERROR', m.error?.message ?? 'The simulation failed.'));
      });
      thread.once('error', (err) => {
        clearTimeout(timer);
        reject(new FerryError('INTERNAL_ERROR', `The simulation failed: ${err.message}`));
      });
      thread.once('exit', (code) => {
        clearTimeout(timer);
        reject(new FerryError('INTERNAL_ERROR', `The simulation's thread exited (${code}) without an answer.`));
      });
    });
  } finally {
    running--;
    void worker?.terminate();
  }
}
