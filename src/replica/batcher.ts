/**
 * Dynamic batching inside a replica (Triton's dynamic batcher, simplified): many small requests
 * become few large model calls. Measured with onnxruntime on the MLP 64→256→256→8: ~100k rows/s
 * at batch 1, ~1M rows/s at batch 32; on a heavy MLP 512→4096→4096→512: 504 rows/s at batch 1,
 * 3,494 rows/s at batch 32.
 *
 * Intended use (the replica wires it; requests whose model takes inference parameters bypass it,
 * since one batch has one set of parameters):
 *
 * ```ts
 * const batcher = batchable(runner.signature)
 *   ? new DynamicBatcher({ run: (inputs) => runner.predict(inputs, undefined), maxBatchSize: 64,
 *       maxQueueDelayUs: 0, maxQueueRows: 4096, clock: realClock })
 *   : undefined;
 * // per request: decode → submit → encode
 * const req = decodeMlflowRequest(body, signature);
 * const rows = Object.values(req.inputs)[0]?.shape[0] ?? 0; // dim 0, the request's row count
 * const outputs = batcher !== undefined && req.params === undefined
 *   ? await batcher.submit(req.inputs, rows)
 *   : await runner.predict(req.inputs, req.params);
 * return encodeMlflowResponse(outputs, req.format);
 * ```
 *
 * The batching decision is a function of the queue and the injected `Clock`, so
 * tests drive it with a fake clock and walk virtual time.
 */
import { FerryError, toFerryError } from '../errors.js';
import { concatRows, isRowSequence, sliceRows, type OutputValue, type Signature, type Tensor } from '../tensor/index.js';

/** Time and scheduling, injected so that tests can step virtual time. */
export interface Clock {
  /** Monotonic time in microseconds. */
  nowUs(): number;
  /** Calls `fn` once after `delayUs`; returns a handle for `clearTimer`. */
  setTimer(fn: () => void, delayUs: number): unknown;
  clearTimer(handle: unknown): void;
  /**
   * Calls `fn` after the other work of the current event-loop turn (in production `setImmediate`,
   * which runs after every request parsed in this turn has been submitted), so that requests that
   * arrive together are gathered into one batch.
   */
  defer(fn: () => void): void;
}

/** The process clock: `performance.now()`, `setTimeout` (1 ms granularity), `setImmediate`. */
export const realClock: Clock = {
  nowUs: () => performance.now() * 1000,
  setTimer: (fn, delayUs) => setTimeout(fn, delayUs / 1000),
  clearTimer: (handle) => clearTimeout(handle as NodeJS.Timeout),
  defer: (fn) => void setImmediate(fn),
};

/** Runs the model on one (possibly batched) set of inputs. */
export type RunBatch = (inputs: Record<string, Tensor>) => Promise<Record<string, OutputValue>>;

export interface DynamicBatcherOptions {
  run: RunBatch;
  /**
   * Most rows in one model call. A single request with more rows than this is not split: it runs
   * alone, as it would without the batcher.
   */
  maxBatchSize: number;
  /**
   * How long a batch below its preferred/maximum size may wait for more rows, measured from its
   * oldest request (Triton's `max_queue_delay_microseconds`). 0 (right for small models): never
   * wait; requests of the same event-loop turn and those that arrive while a run is in progress
   * still go together. A few ms suits heavy models whose per-row cost falls steeply with batch
   * size (heavy MLP above: 7× more rows/s at batch 32 than at batch 1).
   */
  maxQueueDelayUs: number;
  /**
   * Batch sizes (rows) worth running at once without waiting out `maxQueueDelayUs`, e.g. the sizes
   * an accelerator kernel is tuned for. When the queue holds a prefix of requests that adds up to
   * one of them, that prefix runs now. Ignored when `maxQueueDelayUs` is 0.
   */
  preferredBatchSizes?: readonly number[];
  /**
   * Most rows waiting (not counting the run in progress); a request that would go past it is
   * refused with REQUEST_LIMIT_EXCEEDED (429, Retry-After 1 s). A request is always accepted into
   * an empty queue, so a request bigger than this bound is not refused forever.
   */
  maxQueueRows: number;
  clock: Clock;
}

/** Counters for metrics. */
export interface BatcherStats {
  /** Model calls, including the one-by-one retries after a failed batch. */
  runs: number;
  /** Rows passed to the model, summed over `runs`. */
  rows: number;
  /** Largest batch run so far, in rows. */
  maxBatchRows: number;
  /** Rows waiting now. */
  queuedRows: number;
}

interface Item {
  inputs: Record<string, Tensor>;
  rows: number;
  /** Items with equal keys can share a run: same input names, dtypes and trailing dims. */
  key: string;
  enqueuedUs: number;
  resolve: (outputs: Record<string, OutputValue>) => void;
  reject: (err: unknown) => void;
}

/**
 * True when a model's signature lets requests be stacked along dim 0: every input and every
 * tensor output declares a dynamic first dimension (-1). Row-sequence outputs (ZipMap maps, JSON
 * values: one per row) qualify too. A model whose dynamic first dim is not really per-row is still served correctly:
 * the batcher checks each batched output has exactly the batch's rows, and otherwise reruns the
 * requests one by one.
 */
export function batchable(signature: Signature): boolean {
  const dynamicFirst = (shape: readonly number[] | undefined): boolean => shape !== undefined && shape.length >= 1 && shape[0] === -1;
  return signature.inputs.length > 0
    && signature.inputs.every((s) => dynamicFirst(s.shape))
    && signature.outputs.every((s) => s.dtype === 'map' || s.dtype === 'json' || dynamicFirst(s.shape));
}

/**
 * Gathers requests into batched model calls, one call at a time.
 *
 * - Requests submitted in the same event-loop turn run together (`clock.defer`), and requests that
 *   arrive while a run is in progress run together as soon as it ends. With `maxQueueDelayUs` 0
 *   that adds no delay: a lone request runs in the next turn.
 * - With `maxQueueDelayUs` > 0, a batch below `maxBatchSize` waits until its oldest request is
 *   that old, unless a prefix of the queue makes a preferred size (runs now, the rest waits).
 *   Example (maxBatchSize 8, delay 1000 µs, preferred [4]): 2 rows at t=0 and 1 row at t=300 run
 *   as one 3-row batch at t=1000; 2 + 2 rows at t=0 run at once as 4.
 * - A batch never exceeds `maxBatchSize` rows, except a single request bigger on its own, which
 *   runs alone. Requests join a batch in arrival order; the first one that does not fit ends it.
 * - Only requests with the same input names, dtypes and trailing dims (dims after the first) share
 *   a run; a request whose inputs do not all have `rows` rows runs alone, so the model reports its
 *   error exactly as it would unbatched.
 * - Each caller gets exactly its rows. If a batched run fails (or returns outputs that are not one
 *   row per input row), its requests are rerun one by one, so one bad request cannot fail the
 *   others and each gets its own result or error.
 */
export class DynamicBatcher {
  private readonly queue: Item[] = [];
  private queuedRows = 0;
  private running = false;
  private deferred = false;
  private timer: unknown;
  private readonly counters = { runs: 0, rows: 0, maxBatchRows: 0 };
  private readonly preferred: ReadonlySet<number>;

  constructor(private readonly opts: DynamicBatcherOptions) {
    const positiveInt = (v: number): boolean => Number.isInteger(v) && v > 0;
    if (!positiveInt(opts.maxBatchSize)) throw new Error(`maxBatchSize must be a positive integer, got ${opts.maxBatchSize}`);
    if (!positiveInt(opts.maxQueueRows)) throw new Error(`maxQueueRows must be a positive integer, got ${opts.maxQueueRows}`);
    if (!(opts.maxQueueDelayUs >= 0)) throw new Error(`maxQueueDelayUs must be ≥ 0, got ${opts.maxQueueDelayUs}`);
    this.preferred = new Set(opts.preferredBatchSizes ?? []);
  }

  /**
   * Queues a request of `rows` rows (its inputs' dim 0) and resolves with exactly its rows of every
   * output. Rejects with REQUEST_LIMIT_EXCEEDED when the queue is full, and otherwise with the
   * model's error for this request.
   */
  submit(inputs: Record<string, Tensor>, rows: number): Promise<Record<string, OutputValue>> {
    if (!Number.isInteger(rows) || rows < 0) return Promise.reject(new FerryError('INTERNAL_ERROR', `Batcher: rows must be an integer ≥ 0, got ${rows}.`));
    if (this.queuedRows > 0 && this.queuedRows + rows > this.opts.maxQueueRows) {
      return Promise.reject(new FerryError(
        'REQUEST_LIMIT_EXCEEDED',
        `The replica's batch queue is full (${this.queuedRows} rows waiting, at most ${this.opts.maxQueueRows}); retry later.`,
        { retryAfterS: 1 },
      ));
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ inputs, rows, key: groupKey(inputs, rows), enqueuedUs: this.opts.clock.nowUs(), resolve, reject });
      this.queuedRows += rows;
      if (!this.running && !this.deferred) {
        this.deferred = true;
        this.opts.clock.defer(() => {
          this.deferred = false;
          this.pump();
        });
      }
    });
  }

  stats(): BatcherStats {
    return { ...this.counters, queuedRows: this.queuedRows };
  }

  /** Starts the next run if the model is idle and the queue holds a batch worth running now. */
  private pump(): void {
    if (this.running || this.queue.length === 0) return;
    if (this.timer !== undefined) {
      this.opts.clock.clearTimer(this.timer);
      this.timer = undefined;
    }
    const count = this.nextBatch();
    if (count === 0) {
      const head = this.queue[0];
      if (head === undefined) return;
      const waitUs = head.enqueuedUs + this.opts.maxQueueDelayUs - this.opts.clock.nowUs();
      this.timer = this.opts.clock.setTimer(() => {
        this.timer = undefined;
        this.pump();
      }, Math.max(0, waitUs));
      return;
    }
    const batch = this.takeBatch(count);
    this.running = true;
    void this.runBatch(batch).finally(() => {
      this.running = false;
      this.pump();
    });
  }

  /**
   * How many requests to take from the queue now: those of the oldest request's group that fit
   * in `maxBatchSize`, in order; 0 means wait (a batch that could still grow, before its deadline).
   */
  private nextBatch(): number {
    const { maxBatchSize, maxQueueDelayUs, clock } = this.opts;
    const head = this.queue[0];
    if (head === undefined) return 0;
    let rows = 0;
    let count = 0;
    let preferredCount = 0;
    let full = false;
    for (const item of this.queue) {
      if (item.key !== head.key) continue;
      if (count > 0 && rows + item.rows > maxBatchSize) {
        full = true;
        break;
      }
      rows += item.rows;
      count++;
      if (this.preferred.has(rows)) preferredCount = count;
      if (rows >= maxBatchSize || head.key.startsWith(SOLO)) {
        full = true;
        break;
      }
    }
    if (full || maxQueueDelayUs === 0 || clock.nowUs() - head.enqueuedUs >= maxQueueDelayUs) return count;
    return preferredCount;
  }

  /** Removes the first `count` requests of the head's group from the queue. */
  private takeBatch(count: number): Item[] {
    const key = this.queue[0]?.key;
    const batch: Item[] = [];
    for (let i = 0; i < this.queue.length && batch.length < count;) {
      const item = this.queue[i];
      if (item !== undefined && item.key === key) {
        batch.push(item);
        this.queue.splice(i, 1);
        this.queuedRows -= item.rows;
      } else {
        i++;
      }
    }
    return batch;
  }

  private async runBatch(batch: Item[]): Promise<void> {
    const [only] = batch;
    if (only !== undefined && batch.length === 1) {
      await this.runOne(only);
      return;
    }
    let results: Array<Record<string, OutputValue>>;
    try {
      const rows = batch.reduce((n, item) => n + item.rows, 0);
      const inputs: Record<string, Tensor> = {};
      for (const name of Object.keys(only?.inputs ?? {})) inputs[name] = concatRows(batch.map((item) => item.inputs[name] as Tensor));
      const outputs = await this.call(inputs, rows);
      results = split(outputs, batch);
    } catch {
      // One request may have poisoned the batch; run each alone so it alone gets the error.
      for (const item of batch) await this.runOne(item);
      return;
    }
    batch.forEach((item, i) => item.resolve(results[i] as Record<string, OutputValue>));
  }

  private async runOne(item: Item): Promise<void> {
    try {
      item.resolve(await this.call(item.inputs, item.rows));
    } catch (err) {
      item.reject(toFerryError(err));
    }
  }

  private async call(inputs: Record<string, Tensor>, rows: number): Promise<Record<string, OutputValue>> {
    this.counters.runs++;
    this.counters.rows += rows;
    this.counters.maxBatchRows = Math.max(this.counters.maxBatchRows, rows);
    return this.opts.run(inputs);
  }
}

/** Key prefix of a request that must run alone. */
const SOLO = 'solo:';
let soloSeq = 0;

/**
 * The grouping key of a request: input names, dtypes and trailing dims, e.g.
 * `x:float32:4` for x = float32 [3, 4]. A request whose inputs do not all have `rows` rows
 * (or include a scalar, or that has no inputs) gets a unique key and runs alone.
 */
function groupKey(inputs: Record<string, Tensor>, rows: number): string {
  const names = Object.keys(inputs).sort();
  if (names.length === 0) return `${SOLO}${soloSeq++}`;
  const parts: string[] = [];
  for (const name of names) {
    const t = inputs[name] as Tensor;
    if (t.shape[0] !== rows) return `${SOLO}${soloSeq++}`;
    parts.push(`${JSON.stringify(name)}:${t.dtype}:${t.shape.slice(1).join(',')}`);
  }
  return parts.join(';');
}

/** Each request's rows of a batched result; throws when an output does not have one row per input row. */
function split(outputs: Record<string, OutputValue>, batch: readonly Item[]): Array<Record<string, OutputValue>> {
  const total = batch.reduce((n, item) => n + item.rows, 0);
  for (const [name, value] of Object.entries(outputs)) {
    const rows = isRowSequence(value) ? value.data.length : value.shape[0];
    if (rows !== total) throw new Error(`output '${name}' has ${rows ?? 'no'} rows for a batch of ${total}`);
  }
  let start = 0;
  return batch.map((item) => {
    const own: Record<string, OutputValue> = {};
    for (const [name, value] of Object.entries(outputs)) own[name] = sliceRows(value, start, start + item.rows);
    start += item.rows;
    return own;
  });
}
