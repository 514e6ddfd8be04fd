/**
 * ModelRunner: the main-thread handle on a replica's model worker thread. `predict` posts the
 * validated tensors (their buffers transferred, not copied) and resolves with the outputs.
 */
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { FerryError } from '../errors.js';
import type { OutputValue, Signature, Tensor } from '../tensor/index.js';
import { transferables, type WorkerInit, type WorkerReply, type WorkerRequest } from './messages.js';

interface Pending {
  resolve: (outputs: Record<string, OutputValue>) => void;
  reject: (err: FerryError) => void;
}

export class ModelRunner {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private dead: FerryError | undefined;

  private constructor(private readonly worker: Worker, readonly signature: Signature) {
    worker.on('message', (msg: WorkerReply) => this.onMessage(msg));
    worker.on('error', (err) => this.fail(new FerryError('MODEL_ERROR', `Model worker crashed: ${err.message}`)));
    worker.on('exit', (code) => this.fail(new FerryError('TEMPORARILY_UNAVAILABLE', `Model worker exited (code ${code}).`)));
  }

  /** Starts the worker and loads the model; rejects with the flavor's error when loading fails. */
  static start(init: WorkerInit): Promise<ModelRunner> {
    const worker = new Worker(fileURLToPath(new URL('./worker.js', import.meta.url)), { workerData: init });
    return new Promise((resolve, reject) => {
      const onExit = (code: number): void => reject(new FerryError('MODEL_ERROR', `Model worker exited during load (code ${code}).`));
      const onError = (err: Error): void => reject(new FerryError('MODEL_ERROR', `Model worker failed during load: ${err.message}`));
      worker.once('exit', onExit);
      worker.once('error', onError);
      worker.once('message', (msg: WorkerReply) => {
        worker.off('exit', onExit);
        worker.off('error', onError);
        if (msg.type === 'ready') {
          resolve(new ModelRunner(worker, msg.signature));
        } else {
          void worker.terminate();
          reject(new FerryError(msg.type === 'load-failed' ? msg.code : 'MODEL_ERROR', msg.type === 'load-failed' ? msg.message : 'Unexpected message from model worker.'));
        }
      });
    });
  }

  get inFlight(): number {
    return this.pending.size;
  }

  predict(inputs: Record<string, Tensor>, params: Record<string, unknown> | undefined): Promise<Record<string, OutputValue>> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    const msg: WorkerRequest = { type: 'predict', id, inputs, params };
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage(msg, transferables(inputs));
    });
  }

  async close(): Promise<void> {
    if (this.dead) return;
    const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    this.worker.postMessage({ type: 'close' } satisfies WorkerRequest);
    const timer = setTimeout(() => void this.worker.terminate(), 5000);
    await exited;
    clearTimeout(timer);
  }

  private onMessage(msg: WorkerReply): void {
    if (msg.type !== 'result' && msg.type !== 'failed') return;
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    if (msg.type === 'result') p.resolve(msg.outputs);
    else p.reject(new FerryError(msg.code, msg.message));
  }

  private fail(err: FerryError): void {
    this.dead ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}
