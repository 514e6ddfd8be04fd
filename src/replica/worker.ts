/**
 * Model worker thread of a replica. onnxruntime's `session.run` is native code that can hold a
 * thread for as long as a big batch takes; running it here keeps the replica's event loop free
 * for health probes and request decoding while the model computes.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { toFerryError } from '../errors.js';
import { getFlavor, type LoadedModel } from '../flavors/index.js';
import type { Tensor } from '../tensor/index.js';
import { transferables, type WorkerInit, type WorkerReply, type WorkerRequest } from './messages.js';

const port = parentPort;
if (!port) throw new Error('replica worker must run as a worker thread');

const init = workerData as WorkerInit;
let model: LoadedModel | undefined;

function reply(msg: WorkerReply, transfer: ArrayBuffer[] = []): void {
  try {
    port?.postMessage(msg, transfer);
  } catch {
    // A buffer the runtime owns cannot always be transferred; copying it is correct, only slower.
    port?.postMessage(msg);
  }
}

async function handle(msg: WorkerRequest): Promise<void> {
  if (msg.type === 'close') {
    await model?.close();
    port?.close();
    return;
  }
  try {
    if (!model) throw new Error('model is not loaded');
    if (msg.type === 'calibrate') {
      reply({ type: 'calibrated', id: msg.id, runUs: await timeRuns(model, msg.inputs, msg.warmups, msg.runs) });
      return;
    }
    const outputs = await model.predict(msg.inputs, msg.params);
    reply({ type: 'result', id: msg.id, outputs }, transferables(outputs));
  } catch (err) {
    const e = toFerryError(err);
    reply({ type: 'failed', id: msg.id, code: e.code, message: e.message });
  }
}

/** Times `runs` calls of `model` on `inputs` (after `warmups` untimed ones), in µs each. */
async function timeRuns(m: LoadedModel, inputs: Record<string, Tensor>, warmups: number, runs: number): Promise<number[]> {
  for (let i = 0; i < warmups; i++) await m.predict(inputs);
  const runUs: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await m.predict(inputs);
    runUs.push((performance.now() - start) * 1000);
  }
  return runUs;
}

getFlavor(init.flavor).load(init.dir, init.loadOptions).then(
  (m) => {
    model = m;
    port.on('message', (msg: WorkerRequest) => void handle(msg));
    reply({ type: 'ready', signature: m.signature });
  },
  (err: unknown) => {
    const e = toFerryError(err);
    reply({ type: 'load-failed', code: e.code, message: e.message });
  },
);
