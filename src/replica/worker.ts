/**
 * Model worker thread of a replica. onnxruntime's `session.run` is native code that can hold a
 * thread for as long as a big batch takes; running it here keeps the replica's event loop free
 * for health probes and request decoding while the model computes.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { toFerryError } from '../errors.js';
import { getFlavor, type LoadedModel } from '../flavors/index.js';
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
    const outputs = await model.predict(msg.inputs, msg.params);
    reply({ type: 'result', id: msg.id, outputs }, transferables(outputs));
  } catch (err) {
    const e = toFerryError(err);
    reply({ type: 'failed', id: msg.id, code: e.code, message: e.message, unexpected: e.unexpected });
  }
}

getFlavor(init.flavor).then((flavor) => flavor.load(init.dir, init.loadOptions)).then(
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
