/**
 * DynamicBatcher on a fake clock (virtual time, no sleeps) and a fake model that records each
 * run; then batched vs one-by-one on real onnxruntime fixtures; then ModelRunner's execution modes.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FerryError } from '../src/errors.js';
import { FIXTURES, mlpFixture, writeFixtures, writeMlp, type OnnxFixture } from '../src/fixtures/index.js';
import type { LoadOptions } from '../src/flavors/index.js';
import { onnxFlavor } from '../src/flavors/onnx/index.js';
import { batchable, DynamicBatcher, realClock, type Clock, type DynamicBatcherOptions, type RunBatch } from '../src/replica/batcher.js';
import { ModelRunner, syntheticInputs } from '../src/replica/runner.js';
import { sliceRows, type OutputValue, type Tensor } from '../src/tensor/index.js';
import { rejectsWith } from './support/index.js';

/** Lets every promise callback run (one macrotask turn; no wall-clock wait). */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A clock whose time only moves when the test says so. */
class FakeClock implements Clock {
  now = 0;
  private seq = 0;
  private readonly timers = new Map<number, { atUs: number; fn: () => void }>();
  private readonly deferred: Array<() => void> = [];

  nowUs(): number {
    return this.now;
  }
  setTimer(fn: () => void, delayUs: number): unknown {
    const id = ++this.seq;
    this.timers.set(id, { atUs: this.now + delayUs, fn });
    return id;
  }
  clearTimer(handle: unknown): void {
    this.timers.delete(handle as number);
  }
  defer(fn: () => void): void {
    this.deferred.push(fn);
  }
  /** Ends the current turn: settles promise callbacks and runs deferred work until none is left. */
  async tick(): Promise<void> {
    for (;;) {
      await settle();
      const fns = this.deferred.splice(0);
      if (fns.length === 0) return;
      for (const fn of fns) fn();
    }
  }
  /** Walks virtual time forward by `us`, firing due timers in time order. */
  async advance(us: number): Promise<void> {
    const end = this.now + us;
    await this.tick();
    for (;;) {
      const due = [...this.timers.entries()].filter(([, t]) => t.atUs <= end).sort((a, b) => a[1].atUs - b[1].atUs)[0];
      if (due === undefined) break;
      this.timers.delete(due[0]);
      this.now = Math.max(this.now, due[1].atUs);
      due[1].fn();
      await this.tick();
    }
    this.now = end;
  }
}

/**
 * Request `id` with `rows` rows: x = float32 [rows, width], row r = [id, r, 0, ...]. The fake
 * model answers y = 2x (same dtype and shape) and one map {id, row} per row, so every row of a
 * result says which request and row it came from.
 */
function request(id: number, rows: number, width = 2, dtype: 'float32' | 'float64' = 'float32'): Record<string, Tensor> {
  const data = dtype === 'float32' ? new Float32Array(rows * width) : new Float64Array(rows * width);
  for (let r = 0; r < rows; r++) {
    data[r * width] = id;
    if (width > 1) data[r * width + 1] = r;
  }
  return { x: { dtype, shape: [rows, width], data } };
}

function expected(id: number, rows: number, width = 2, dtype: 'float32' | 'float64' = 'float32'): Record<string, OutputValue> {
  const x = request(id, rows, width, dtype).x!;
  return {
    y: { dtype, shape: [rows, width], data: (x.data as Float32Array).map((v) => v * 2) },
    rowOf: { dtype: 'map', data: Array.from({ length: rows }, (_, r) => ({ id, row: r })) },
  };
}

interface Call {
  rows: number;
  /** The request ids in the run, in row order, one per request. */
  ids: number[];
  finish(): void;
}

/** A model that records runs; runs finish at once (`autoFinish`) or when the test calls `finish()`. */
class FakeModel {
  readonly calls: Call[] = [];
  /** Request ids whose rows make any run containing them fail. */
  readonly poisoned = new Set<number>();

  constructor(private readonly autoFinish: boolean) {}

  readonly run: RunBatch = (inputs) => new Promise((resolve, reject) => {
    const x = inputs.x!;
    const [rows = 0, width = 1] = x.shape;
    const ids: number[] = [];
    const maps: Array<Record<string, number>> = [];
    for (let r = 0; r < rows; r++) {
      const id = Number(x.data[r * width]);
      if (ids.at(-1) !== id) ids.push(id);
      maps.push({ id, row: width > 1 ? Number(x.data[r * width + 1]) : 0 });
    }
    const finish = (): void => {
      const bad = ids.find((id) => this.poisoned.has(id));
      if (bad !== undefined) reject(new FerryError('MODEL_ERROR', `request ${bad} is poisoned`));
      else resolve({ y: { dtype: x.dtype, shape: [...x.shape], data: (x.data as Float32Array).map((v) => v * 2) }, rowOf: { dtype: 'map', data: maps } });
    };
    this.calls.push({ rows, ids, finish });
    if (this.autoFinish) finish();
  });

  /** Request ids of each run so far. */
  get runs(): number[][] {
    return this.calls.map((c) => c.ids);
  }
}

function setup(opts: Partial<DynamicBatcherOptions> = {}, autoFinish = true): { clock: FakeClock; model: FakeModel; batcher: DynamicBatcher } {
  const clock = new FakeClock();
  const model = new FakeModel(autoFinish);
  const batcher = new DynamicBatcher({ run: model.run, maxBatchSize: 64, maxQueueDelayUs: 0, maxQueueRows: 1024, clock, ...opts });
  return { clock, model, batcher };
}

/** `promise`, marked handled now: it may reject before the test awaits it. */
function later<T>(promise: Promise<T>): Promise<T> {
  void promise.catch(() => undefined);
  return promise;
}

describe('DynamicBatcher', () => {
  test('requests of the same turn run together, once the turn ends', async () => {
    const { clock, model, batcher } = setup();
    const results = [batcher.submit(request(1, 1), 1), batcher.submit(request(2, 2), 2), batcher.submit(request(3, 3), 3)];
    assert.equal(model.calls.length, 0, 'nothing runs before the turn ends');
    await clock.tick();
    assert.deepEqual(model.runs, [[1, 2, 3]]);
    assert.deepEqual(await Promise.all(results), [expected(1, 1), expected(2, 2), expected(3, 3)]);
    assert.deepEqual(batcher.stats(), { runs: 1, rows: 6, maxBatchRows: 6, queuedRows: 0 });
  });

  test('a lone request runs at the end of its turn, without waiting (delay 0)', async () => {
    const { clock, model, batcher } = setup();
    const result = batcher.submit(request(7, 2), 2);
    await clock.tick();
    assert.equal(clock.now, 0);
    assert.deepEqual(model.runs, [[7]]);
    assert.deepEqual(await result, expected(7, 2));
  });

  test('requests that arrive while a run is in progress go together in the next run, as soon as it ends', async () => {
    const { clock, model, batcher } = setup({}, false);
    const a = batcher.submit(request(1, 1), 1);
    await clock.tick();
    assert.deepEqual(model.runs, [[1]]);
    const b = batcher.submit(request(2, 2), 2);
    await clock.tick();
    const c = batcher.submit(request(3, 1), 1);
    await clock.tick();
    assert.deepEqual(model.runs, [[1]], 'one run at a time');
    assert.equal(batcher.stats().queuedRows, 3);
    model.calls[0]!.finish();
    await settle();
    assert.deepEqual(model.runs, [[1], [2, 3]], 'the next run starts when the first ends, with no clock turn');
    model.calls[1]!.finish();
    assert.deepEqual(await Promise.all([a, b, c]), [expected(1, 1), expected(2, 2), expected(3, 1)]);
  });

  test('each caller gets exactly its rows, in order, for mixed sizes (0 rows included)', async () => {
    const { clock, model, batcher } = setup();
    const sizes = [1, 4, 2, 0, 1, 3, 1, 5, 2];
    const results = sizes.map((rows, id) => batcher.submit(request(id, rows), rows));
    await clock.tick();
    assert.equal(model.calls.length, 1);
    assert.equal(model.calls[0]!.rows, 19);
    assert.deepEqual(await Promise.all(results), sizes.map((rows, id) => expected(id, rows)));
  });

  test('a batch never exceeds maxBatchSize; a bigger request runs alone', async () => {
    const { clock, model, batcher } = setup({ maxBatchSize: 4 });
    const sizes = [3, 2, 1, 6, 1, 1];
    const results = sizes.map((rows, id) => batcher.submit(request(id, rows), rows));
    await clock.tick();
    // In arrival order; the first request that does not fit ends the batch.
    assert.deepEqual(model.runs, [[0], [1, 2], [3], [4, 5]]);
    assert.deepEqual(model.calls.map((c) => c.rows), [3, 3, 6, 2]);
    assert.deepEqual(await Promise.all(results), sizes.map((rows, id) => expected(id, rows)));
    assert.deepEqual(batcher.stats(), { runs: 4, rows: 14, maxBatchRows: 6, queuedRows: 0 });
  });

  test('maxQueueDelayUs: a small batch waits for more rows until its oldest request is that old', async () => {
    const { clock, model, batcher } = setup({ maxBatchSize: 8, maxQueueDelayUs: 1000 });
    const a = batcher.submit(request(1, 2), 2);
    await clock.advance(500);
    assert.equal(model.calls.length, 0);
    const b = batcher.submit(request(2, 1), 1);
    await clock.advance(499);
    assert.equal(model.calls.length, 0, 'at t=999 µs the oldest request has waited 999 µs');
    await clock.advance(1);
    assert.deepEqual(model.runs, [[1, 2]], 'at t=1000 µs both run as one batch of 3');
    assert.deepEqual(await Promise.all([a, b]), [expected(1, 2), expected(2, 1)]);
  });

  test('maxQueueDelayUs: a full batch runs at once', async () => {
    const { clock, model, batcher } = setup({ maxBatchSize: 8, maxQueueDelayUs: 1000 });
    const a = batcher.submit(request(1, 5), 5);
    await clock.advance(100);
    assert.equal(model.calls.length, 0);
    const b = batcher.submit(request(2, 3), 3);
    const c = batcher.submit(request(3, 1), 1);
    await clock.tick();
    assert.equal(clock.now, 100);
    assert.deepEqual(model.runs, [[1, 2]], '5 + 3 = maxBatchSize runs now; the 1-row request waits');
    await clock.advance(999);
    assert.deepEqual(model.runs, [[1, 2]]);
    await clock.advance(1);
    assert.deepEqual(model.runs, [[1, 2], [3]], 'the 1-row request (queued at t=100) runs at t=1100');
    assert.deepEqual(await Promise.all([a, b, c]), [expected(1, 5), expected(2, 3), expected(3, 1)]);
  });

  test('preferredBatchSizes: a queue prefix of a preferred size runs at once, the rest waits', async () => {
    const { clock, model, batcher } = setup({ maxBatchSize: 8, maxQueueDelayUs: 1000, preferredBatchSizes: [4] });
    const results = [batcher.submit(request(1, 2), 2), batcher.submit(request(2, 2), 2), batcher.submit(request(3, 1), 1)];
    await clock.tick();
    assert.deepEqual(model.runs, [[1, 2]], '2 + 2 = 4 is preferred: runs at t=0');
    await clock.advance(999);
    assert.deepEqual(model.runs, [[1, 2]]);
    await clock.advance(1);
    assert.deepEqual(model.runs, [[1, 2], [3]]);
    assert.deepEqual(await Promise.all(results), [expected(1, 2), expected(2, 2), expected(3, 1)]);
  });

  test('requests queued during a run that already waited maxQueueDelayUs run as soon as it ends', async () => {
    const { clock, model, batcher } = setup({ maxBatchSize: 8, maxQueueDelayUs: 1000 }, false);
    const a = batcher.submit(request(1, 8), 8);
    await clock.tick();
    const b = batcher.submit(request(2, 1), 1);
    await clock.advance(1500);
    assert.deepEqual(model.runs, [[1]]);
    model.calls[0]!.finish();
    await settle();
    assert.deepEqual(model.runs, [[1], [2]]);
    model.calls[1]!.finish();
    assert.deepEqual(await Promise.all([a, b]), [expected(1, 8), expected(2, 1)]);
  });

  test('only requests with identical trailing dims and dtypes share a run', async () => {
    const { clock, model, batcher } = setup();
    const results = [
      batcher.submit(request(1, 1, 2), 1),
      batcher.submit(request(2, 1, 3), 1),
      batcher.submit(request(3, 2, 2), 2),
      batcher.submit(request(4, 1, 2, 'float64'), 1),
      batcher.submit(request(5, 1, 3), 1),
    ];
    await clock.tick();
    assert.deepEqual(model.runs, [[1, 3], [2, 5], [4]]);
    assert.deepEqual(await Promise.all(results), [expected(1, 1, 2), expected(2, 1, 3), expected(3, 2, 2), expected(4, 1, 2, 'float64'), expected(5, 1, 3)]);
  });

  test('a request whose inputs disagree on the row count runs alone, as it would unbatched', async () => {
    const clock = new FakeClock();
    const seen: number[][][] = [];
    const batcher = new DynamicBatcher({
      clock, maxBatchSize: 64, maxQueueDelayUs: 0, maxQueueRows: 64,
      run: async (inputs) => {
        seen.push([inputs.a!.shape, inputs.b!.shape]);
        if (inputs.a!.shape[0] !== inputs.b!.shape[0]) throw new FerryError('MODEL_ERROR', 'a and b differ in rows');
        return { y: inputs.a! };
      },
    });
    const ab = (ra: number, rb: number): Record<string, Tensor> => ({
      a: { dtype: 'float32', shape: [ra, 2], data: new Float32Array(ra * 2) },
      b: { dtype: 'float32', shape: [rb, 2], data: new Float32Array(rb * 2) },
    });
    const good1 = batcher.submit(ab(1, 1), 1);
    const bad = later(batcher.submit(ab(2, 3), 2));
    const good2 = batcher.submit(ab(1, 1), 1);
    await clock.tick();
    await rejectsWith(bad, 'MODEL_ERROR', /differ in rows/);
    await Promise.all([good1, good2]);
    assert.deepEqual(seen, [[[2, 2], [2, 2]], [[2, 2], [3, 2]]], 'the two good ones ran together, the bad one alone');
  });

  test('a failed batch is rerun one by one: only the poisoned request fails, with its own error', async () => {
    const { clock, model, batcher } = setup();
    model.poisoned.add(3);
    const results = [1, 2, 3, 4].map((id) => later(batcher.submit(request(id, id), id)));
    await clock.tick();
    assert.deepEqual(model.runs, [[1, 2, 3, 4], [1], [2], [3], [4]]);
    await rejectsWith(results[2]!, 'MODEL_ERROR', /^request 3 is poisoned$/);
    assert.deepEqual(await Promise.all([results[0], results[1], results[3]]), [expected(1, 1), expected(2, 2), expected(4, 4)]);
    assert.deepEqual(batcher.stats(), { runs: 5, rows: 20, maxBatchRows: 10, queuedRows: 0 });
  });

  test('errors that are not FerryErrors reach the caller as INTERNAL_ERROR', async () => {
    const clock = new FakeClock();
    const batcher = new DynamicBatcher({ clock, maxBatchSize: 64, maxQueueDelayUs: 0, maxQueueRows: 64, run: () => Promise.reject(new Error('boom')) });
    const r = later(batcher.submit(request(1, 1), 1));
    await clock.tick();
    await rejectsWith(r, 'INTERNAL_ERROR', /boom/);
  });

  test('outputs that are not one row per input row: the batch is rerun one by one', async () => {
    const clock = new FakeClock();
    let runs = 0;
    const batcher = new DynamicBatcher({
      clock, maxBatchSize: 64, maxQueueDelayUs: 0, maxQueueRows: 64,
      // A model that sums over the batch: [rows, 2] → [1].
      run: async (inputs) => {
        runs++;
        const x = inputs.x!.data as Float32Array;
        return { total: { dtype: 'float32', shape: [1], data: Float32Array.of(x.reduce((s, v) => s + v, 0)) } };
      },
    });
    const results = [batcher.submit(request(1, 2), 2), batcher.submit(request(2, 1), 1)];
    await clock.tick();
    assert.equal(runs, 3);
    assert.deepEqual(await Promise.all(results), [
      { total: { dtype: 'float32', shape: [1], data: Float32Array.of(1 + 0 + 1 + 1) } },
      { total: { dtype: 'float32', shape: [1], data: Float32Array.of(2) } },
    ]);
  });

  test('a full queue refuses with REQUEST_LIMIT_EXCEEDED (429, Retry-After 1 s); an empty one takes any size', async () => {
    const { clock, model, batcher } = setup({ maxQueueRows: 4 }, false);
    const a = batcher.submit(request(1, 10), 10);
    await clock.tick();
    assert.deepEqual(model.runs, [[1]], 'a 10-row request enters an empty 4-row queue');
    const b = batcher.submit(request(2, 3), 3);
    const err = await rejectsWith(batcher.submit(request(3, 2), 2), 'REQUEST_LIMIT_EXCEEDED', /3 rows waiting, at most 4/);
    assert.equal(err.status, 429);
    assert.equal(err.retryAfterS, 1);
    const d = batcher.submit(request(4, 1), 1);
    assert.equal(batcher.stats().queuedRows, 4);
    model.calls[0]!.finish();
    await settle();
    model.calls[1]!.finish();
    assert.deepEqual(await Promise.all([a, b, d]), [expected(1, 10), expected(2, 3), expected(4, 1)]);
    assert.deepEqual(model.runs, [[1], [2, 4]]);
  });

  test('refuses bad options and row counts', async () => {
    const clock = new FakeClock();
    const run: RunBatch = async () => ({});
    assert.throws(() => new DynamicBatcher({ run, clock, maxBatchSize: 0, maxQueueDelayUs: 0, maxQueueRows: 1 }), /maxBatchSize/);
    assert.throws(() => new DynamicBatcher({ run, clock, maxBatchSize: 1, maxQueueDelayUs: -1, maxQueueRows: 1 }), /maxQueueDelayUs/);
    assert.throws(() => new DynamicBatcher({ run, clock, maxBatchSize: 1, maxQueueDelayUs: 0, maxQueueRows: 0.5 }), /maxQueueRows/);
    const batcher = new DynamicBatcher({ run, clock, maxBatchSize: 1, maxQueueDelayUs: 0, maxQueueRows: 1 });
    await rejectsWith(batcher.submit(request(1, 1), -1), 'INTERNAL_ERROR', /rows/);
  });
});

describe('batchable', () => {
  test('every fixture: inputs and tensor outputs with a dynamic first dim; ZipMap outputs count', () => {
    for (const [name, fixture] of Object.entries(FIXTURES)) assert.equal(batchable(fixture.signature), true, name);
  });

  test('a fixed or undeclared first dim, or a scalar, is not batchable', () => {
    const x = { name: 'x', dtype: 'float32' as const };
    assert.equal(batchable({ inputs: [{ ...x, shape: [1, 4] }], outputs: [{ ...x, name: 'y', shape: [-1] }] }), false);
    assert.equal(batchable({ inputs: [{ ...x, shape: undefined }], outputs: [{ ...x, name: 'y', shape: [-1] }] }), false);
    assert.equal(batchable({ inputs: [{ ...x, shape: [] }], outputs: [{ ...x, name: 'y', shape: [-1] }] }), false);
    assert.equal(batchable({ inputs: [{ ...x, shape: [-1, 4] }], outputs: [{ ...x, name: 'y', shape: [3] }] }), false);
    assert.equal(batchable({ inputs: [{ ...x, shape: [-1, 4] }], outputs: [{ ...x, name: 'y', shape: undefined }] }), false);
    assert.equal(batchable({ inputs: [], outputs: [{ ...x, name: 'y', shape: [-1] }] }), false);
  });
});

const CPU: Omit<LoadOptions, 'modelFile'> = { workloadType: 'CPU', intraOpThreads: 1 };

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-batcher-'));
  await writeFixtures(dir);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Splits `fixture.example(sum of sizes)` into requests of `sizes` rows. */
function requests(fixture: OnnxFixture, sizes: readonly number[]): Array<Record<string, Tensor>> {
  const all = fixture.example(sizes.reduce((a, b) => a + b, 0));
  let start = 0;
  return sizes.map((rows) => {
    const own: Record<string, Tensor> = {};
    for (const [name, t] of Object.entries(all)) own[name] = sliceRows(t, start, start + rows) as Tensor;
    start += rows;
    return own;
  });
}

describe('batched results equal unbatched ones on onnxruntime', () => {
  const sizes = [1, 3, 1, 1, 7, 2, 1, 16, 1, 5, 1, 1, 2, 9, 1, 1];
  for (const name of ['mlp', 'treeClassifier', 'linear'] as const) {
    test(`${name}: ${sizes.length} requests submitted together vs one by one`, async () => {
      const fixture = FIXTURES[name];
      const model = await onnxFlavor.load(dir, { ...CPU, modelFile: fixture.file });
      try {
        const alone: Array<Record<string, OutputValue>> = [];
        for (const inputs of requests(fixture, sizes)) alone.push(await model.predict(inputs));
        const batcher = new DynamicBatcher({ run: (inputs) => model.predict(inputs), maxBatchSize: 32, maxQueueDelayUs: 0, maxQueueRows: 1024, clock: realClock });
        const batched = await Promise.all(requests(fixture, sizes).map((inputs, i) => batcher.submit(inputs, sizes[i]!)));
        assert.deepEqual(batched, alone);
        const stats = batcher.stats();
        assert.ok(stats.runs <= 3, `${stats.runs} runs for ${sizes.length} requests`);
        assert.equal(stats.rows, sizes.reduce((a, b) => a + b, 0));
        assert.equal(stats.maxBatchRows, 32);
      } finally {
        await model.close();
      }
    });
  }
});

describe('ModelRunner execution modes', () => {
  const init = (modelFile: string, d = dir): { flavor: 'onnx'; dir: string; loadOptions: LoadOptions } => ({ flavor: 'onnx', dir: d, loadOptions: { ...CPU, modelFile } });

  test('auto runs linear.onnx inline; predictions and errors equal the worker’s', async () => {
    const auto = await ModelRunner.start(init('linear.onnx'), { execution: 'auto' });
    const worker = await ModelRunner.start(init('linear.onnx'), { execution: 'worker' });
    try {
      assert.equal(auto.mode, 'inline', auto.choice.reason);
      assert.equal(auto.choice.requested, 'auto');
      assert.ok(auto.choice.fullBatchUs !== undefined && auto.choice.fullBatchUs < 1000, auto.choice.reason);
      assert.match(auto.choice.reason, /a 64-row batch takes \d+ µs \(< 1000 µs\)/);
      assert.equal(worker.mode, 'worker');
      assert.deepEqual(auto.signature, worker.signature);
      const fixture = FIXTURES.linear;
      assert.deepEqual(await auto.predict(fixture.example(5), undefined), await worker.predict(fixture.example(5), undefined));
      const bad = { x: { dtype: 'float32' as const, shape: [2, 3], data: new Float32Array(6) } };
      const e1 = await rejectsWith(auto.predict(bad, undefined), 'MODEL_ERROR');
      const e2 = await rejectsWith(worker.predict(bad, undefined), 'MODEL_ERROR');
      assert.equal(e1.message, e2.message);
    } finally {
      await auto.close();
      await worker.close();
    }
    await rejectsWith(auto.predict(FIXTURES.linear.example(1), undefined), 'TEMPORARILY_UNAVAILABLE');
  });

  test('inline and worker give equal tree-classifier outputs (int64 labels, ZipMap maps)', async () => {
    const inline = await ModelRunner.start(init(FIXTURES.treeClassifier.file), { execution: 'inline' });
    const worker = await ModelRunner.start(init(FIXTURES.treeClassifier.file));
    try {
      assert.equal(inline.mode, 'inline');
      assert.equal(worker.mode, 'worker', 'worker is the default');
      const inputs = FIXTURES.treeClassifier.example(7);
      assert.deepEqual(await inline.predict(inputs, undefined), await worker.predict(FIXTURES.treeClassifier.example(7), undefined));
    } finally {
      await inline.close();
      await worker.close();
    }
  });

  test('auto keeps a heavy MLP (512→4096→4096→512) on the worker; predictions equal inline ones', async () => {
    const layers = [512, 4096, 4096, 512];
    await writeMlp(join(dir, 'heavy.onnx'), layers);
    const auto = await ModelRunner.start(init('heavy.onnx'), { execution: 'auto' });
    const inline = await ModelRunner.start(init('heavy.onnx'), { execution: 'inline' });
    try {
      assert.equal(auto.mode, 'worker', auto.choice.reason);
      assert.match(auto.choice.reason, /a 64-row batch takes \d+ µs \(≥ 1000 µs\)/);
      const heavy = mlpFixture(layers);
      assert.deepEqual(await auto.predict(heavy.example(3), undefined), await inline.predict(heavy.example(3), undefined));
    } finally {
      await auto.close();
      await inline.close();
    }
  });

  test('load errors are the same in every mode', async () => {
    for (const execution of ['auto', 'inline', 'worker'] as const) {
      await rejectsWith(ModelRunner.start(init('missing.onnx'), { execution }), 'INVALID_PARAMETER_VALUE', /Invalid ONNX model 'missing.onnx': file not found/);
    }
  });

  test('syntheticInputs: zeros in the signature shapes, -1 dims → the batch rows; no shape → throws', () => {
    assert.deepEqual(syntheticInputs(FIXTURES.identityTypes.signature, 2), {
      half: { dtype: 'float16', shape: [2], data: new Float32Array(2) },
      flag: { dtype: 'bool', shape: [2], data: [false, false] },
      count: { dtype: 'int64', shape: [2], data: new BigInt64Array(2) },
      text: { dtype: 'string', shape: [2], data: ['', ''] },
      wide: { dtype: 'float64', shape: [2, 2], data: new Float64Array(4) },
      byte: { dtype: 'uint8', shape: [2], data: new Uint8Array(2) },
    });
    assert.throws(() => syntheticInputs({ inputs: [{ name: 'x', dtype: 'float32', shape: undefined }], outputs: [] }, 2), /'x' declares no shape/);
  });
});
