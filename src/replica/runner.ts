/**
 * ModelRunner: the replica main thread's handle on its model. The model runs either on a worker
 * thread (`predict` posts the validated tensors, their buffers transferred, not copied, and
 * resolves with the outputs) or, for tiny models, inline on the main thread, which saves the two
 * thread hops (~tens of µs) per call. `execution: 'auto'` measures the model and picks.
 */
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { FerryError, toFerryError } from '../errors.js';
import type { LoadedModel } from '../flavors/index.js';
import { allocate, elementCount, type OutputValue, type Signature, type Tensor } from '../tensor/index.js';
import { transferables, type WorkerInit, type WorkerReply, type WorkerRequest } from './messages.js';
import type { ExecutionMode } from './options.js';

export interface RunnerOptions {
  /** Default `worker` (the model never blocks the replica's event loop). */
  execution?: ExecutionMode;
  /**
   * Rows of the synthetic batch `auto` times: the largest batch the replica will run (its
   * batcher's `maxBatchSize`). Default 64.
   */
  calibrationBatchRows?: number;
}

/** The mode chosen at start and why, for the replica's log. */
export interface ExecutionChoice {
  mode: 'inline' | 'worker';
  requested: ExecutionMode;
  /** e.g. "a 64-row batch takes 41 µs (< 1000 µs)". */
  reason: string;
  /** Median time of one calibration run of `calibrationBatchRows` rows, when `auto` measured it. */
  fullBatchUs?: number;
}

/**
 * A model whose full batch runs in under this many microseconds runs inline under `auto`. Inline,
 * every run holds the replica's event loop (health probes, request decoding, sending other
 * responses) for its whole duration; below 1 ms that stall is far under probe timeouts (seconds)
 * and about one c64 round trip (p50 1.0 ms in notes/data-path.md), while the worker hop it saves
 * (tens of µs each way plus an event-loop turn) is a large share of such a short run. Above it,
 * stalls would grow with the model, so the worker keeps the loop free. Example: linear.onnx at
 * 64 rows takes tens of µs → inline; the heavy MLP 512→4096→4096→512 takes ~18 ms → worker.
 */
export const INLINE_MAX_BATCH_RUN_US = 1000;
const DEFAULT_CALIBRATION_BATCH_ROWS = 64;
/** Untimed first runs (allocations, page faults of the weights), then the median of timed ones, robust to a GC pause. */
const CALIBRATION_WARMUPS = 2;
const CALIBRATION_RUNS = 5;

interface Backend {
  predict(inputs: Record<string, Tensor>, params: Record<string, unknown> | undefined): Promise<Record<string, OutputValue>>;
  close(): Promise<void>;
}

export class ModelRunner {
  private constructor(
    private readonly backend: Backend,
    readonly signature: Signature,
    /** Where the model runs and why (log it at start). */
    readonly choice: ExecutionChoice,
  ) {}

  /**
   * Loads the model (in a worker thread, or on this thread for `inline`); rejects with the
   * flavor's error when loading fails. `auto` loads it on this thread and times a synthetic full
   * batch (`syntheticInputs`): under `INLINE_MAX_BATCH_RUN_US` the model stays here; otherwise it
   * is released and loaded in a worker. Measuring on this thread first keeps a tiny model's cold
   * start short: starting a worker costs ~50 ms (it imports the runtime again), more than loading
   * a small model (measured in a warm pool process: 75–120 ms for worker-first calibration, ~2 ms
   * for inline). A heavy model pays one extra load instead.
   */
  static async start(init: WorkerInit, opts: RunnerOptions = {}): Promise<ModelRunner> {
    const requested = opts.execution ?? 'worker';
    if (requested === 'worker') {
      const worker = await WorkerBackend.start(init);
      return new ModelRunner(worker, worker.signature, { mode: 'worker', requested, reason: 'requested' });
    }
    const model = await loadInline(init);
    const inline = (reason: string, fullBatchUs?: number): ModelRunner => new ModelRunner(new InlineBackend(model), model.signature, {
      mode: 'inline', requested, reason, ...(fullBatchUs === undefined ? {} : { fullBatchUs }),
    });
    if (requested === 'inline') return inline('requested');
    // Such a model's calls only post messages here; timing them would run the user's code on
    // made-up inputs for nothing.
    if (model.ownThread === true) return inline('the flavor runs the model on a thread of its own');

    const rows = opts.calibrationBatchRows ?? DEFAULT_CALIBRATION_BATCH_ROWS;
    let fullBatchUs: number | undefined;
    let reason: string;
    try {
      fullBatchUs = median(await timeRuns(model, syntheticInputs(model.signature, rows), CALIBRATION_WARMUPS, CALIBRATION_RUNS));
      const timing = `a ${rows}-row batch takes ${Math.round(fullBatchUs)} µs`;
      if (fullBatchUs < INLINE_MAX_BATCH_RUN_US) return inline(`${timing} (< ${INLINE_MAX_BATCH_RUN_US} µs)`, fullBatchUs);
      reason = `${timing} (≥ ${INLINE_MAX_BATCH_RUN_US} µs)`;
    } catch (err) {
      reason = `calibration failed: ${toFerryError(err).message}`;
    }
    await model.close();
    const worker = await WorkerBackend.start(init);
    return new ModelRunner(worker, worker.signature, { mode: 'worker', requested, reason, ...(fullBatchUs === undefined ? {} : { fullBatchUs }) });
  }

  /** The model itself when it runs on this thread (the llm routes call it directly), else undefined. */
  get inlineModel(): LoadedModel | undefined {
    return this.backend instanceof InlineBackend ? this.backend.model : undefined;
  }

  /** Where the model runs. */
  get mode(): 'inline' | 'worker' {
    return this.choice.mode;
  }

  predict(inputs: Record<string, Tensor>, params: Record<string, unknown> | undefined): Promise<Record<string, OutputValue>> {
    return this.backend.predict(inputs, params);
  }

  close(): Promise<void> {
    return this.backend.close();
  }
}

/**
 * A batch of `rows` rows in the signature's shapes, every element zero ('' for strings, false for
 * bools): every -1 dim becomes `rows`. Throws when an input declares no shape.
 */
export function syntheticInputs(signature: Signature, rows: number): Record<string, Tensor> {
  const inputs: Record<string, Tensor> = {};
  for (const spec of signature.inputs) {
    if (spec.shape === undefined) throw new Error(`input '${spec.name}' declares no shape`);
    const shape = spec.shape.map((d) => (d < 0 ? rows : d));
    inputs[spec.name] = { dtype: spec.dtype, shape, data: allocate(spec.dtype, elementCount(shape)) };
  }
  return inputs;
}

/** Times `runs` calls of `model` on `inputs` (after `warmups` untimed ones), in µs each. */
async function timeRuns(model: LoadedModel, inputs: Record<string, Tensor>, warmups: number, runs: number): Promise<number[]> {
  for (let i = 0; i < warmups; i++) await model.predict(inputs);
  const runUs: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await model.predict(inputs);
    runUs.push((performance.now() - start) * 1000);
  }
  return runUs;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? (sorted[mid] ?? NaN) : ((sorted[mid - 1] ?? NaN) + (sorted[mid] ?? NaN)) / 2;
}

async function loadInline(init: WorkerInit): Promise<LoadedModel> {
  // Imported on demand: with `execution: 'worker'` the main thread never loads the model runtime.
  const { getFlavor } = await import('../flavors/index.js');
  try {
    return await (await getFlavor(init.flavor)).load(init.dir, init.loadOptions);
  } catch (err) {
    throw toFerryError(err);
  }
}

/** The model on this thread: each run blocks the event loop while it computes (tiny models only). */
class InlineBackend implements Backend {
  private closed: FerryError | undefined;

  constructor(readonly model: LoadedModel) {}

  async predict(inputs: Record<string, Tensor>, params: Record<string, unknown> | undefined): Promise<Record<string, OutputValue>> {
    if (this.closed) throw this.closed;
    try {
      return await this.model.predict(inputs, params);
    } catch (err) {
      throw toFerryError(err);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = new FerryError('TEMPORARILY_UNAVAILABLE', 'Model is closed.');
    await this.model.close();
  }
}

interface Pending {
  resolve: (msg: WorkerReply) => void;
  reject: (err: FerryError) => void;
}

/** The model on a worker thread; messages in ./messages.ts. */
class WorkerBackend implements Backend {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private dead: FerryError | undefined;

  private constructor(private readonly worker: Worker, readonly signature: Signature) {
    worker.on('message', (msg: WorkerReply) => this.onMessage(msg));
    worker.on('error', (err) => this.fail(new FerryError('MODEL_ERROR', `Model worker crashed: ${err.message}`)));
    worker.on('exit', (code) => this.fail(new FerryError('TEMPORARILY_UNAVAILABLE', `Model worker exited (code ${code}).`)));
  }

  /** Starts the worker and loads the model; rejects with the flavor's error when loading fails. */
  static start(init: WorkerInit): Promise<WorkerBackend> {
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
          resolve(new WorkerBackend(worker, msg.signature));
        } else {
          void worker.terminate();
          reject(new FerryError(msg.type === 'load-failed' ? msg.code : 'MODEL_ERROR', msg.type === 'load-failed' ? msg.message : 'Unexpected message from model worker.'));
        }
      });
    });
  }

  async predict(inputs: Record<string, Tensor>, params: Record<string, unknown> | undefined): Promise<Record<string, OutputValue>> {
    const reply = await this.request({ type: 'predict', id: this.nextId++, inputs, params }, inputs);
    if (reply.type !== 'result') throw new FerryError('INTERNAL_ERROR', `Unexpected '${reply.type}' reply from model worker.`);
    return reply.outputs;
  }

  async close(): Promise<void> {
    if (this.dead) return;
    const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    this.worker.postMessage({ type: 'close' } satisfies WorkerRequest);
    const timer = setTimeout(() => void this.worker.terminate(), 5000);
    await exited;
    clearTimeout(timer);
  }

  private request(msg: Extract<WorkerRequest, { id: number }>, inputs: Record<string, Tensor>): Promise<WorkerReply> {
    if (this.dead) return Promise.reject(this.dead);
    return new Promise((resolve, reject) => {
      this.pending.set(msg.id, { resolve, reject });
      this.worker.postMessage(msg, transferables(inputs));
    });
  }

  private onMessage(msg: WorkerReply): void {
    if (msg.type !== 'result' && msg.type !== 'failed') return;
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    if (msg.type === 'failed') p.reject(new FerryError(msg.code, msg.message, { unexpected: msg.unexpected }));
    else p.resolve(msg);
  }

  private fail(err: FerryError): void {
    this.dead ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}
