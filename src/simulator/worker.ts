/**
 * The simulation's thread: `runSimulation` on the request and context it was started with, its
 * answer (or error) posted back once. A simulation can take seconds of CPU (a recommendation
 * simulates up to 90 settings), which must not stall the server's event loop and with it every
 * inference request.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { FerryError } from '../errors.js';
import { runSimulation, type SimulateRequest, type SimulationContext } from './request.js';

const { req, ctx } = workerData as { req: SimulateRequest; ctx: SimulationContext };
try {
  parentPort?.postMessage({ answer: runSimulation(req, ctx) });
} catch (err) {
  parentPort?.postMessage({
    error: err instanceof FerryError ? { code: err.code, message: err.message } : { code: 'INTERNAL_ERROR', message: `The simulation failed: ${err instanceof Error ? err.message : String(err)}` },
  });
}
