/**
 * `ferry replica` as a real child process on a real Unix socket: every fixture through every
 * input format gives exactly what onnxruntime gives in process, health answers while a big batch
 * runs, bad input is a 400, SIGTERM drains in-flight requests.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fsp from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { onnxFlavor } from '../src/flavors/onnx/index.js';
import { FIXTURES, writeFixtures, writeMlp, type FixturePaths, type OnnxFixture } from '../src/fixtures/index.js';
import { isRowSequence, type OutputValue, type Tensor } from '../src/tensor/index.js';
import { kill, Processes, request, tempDir, waitFor } from './support/index.js';

let dir: string;
let sockets: string;
let fx: FixturePaths;
const procs = new Processes();

before(async () => {
  dir = await tempDir();
  sockets = path.join(dir, 'sockets');
  await fsp.mkdir(sockets, { mode: 0o700 });
  fx = await writeFixtures(path.join(dir, 'fixtures'));
});

after(async () => {
  await procs.killAll();
  await fsp.rm(dir, { recursive: true, force: true });
});

async function startReplica(name: string, artifactDir: string, modelFile: string): Promise<{ child: ChildProcess; socketPath: string; logFile: string }> {
  const socketPath = path.join(sockets, `${name}.sock`);
  const logFile = path.join(dir, `${name}.log`);
  const child = procs.spawnFerry(['replica', '--socket', socketPath, '--dir', artifactDir, '--model-file', modelFile, '--name', name, '--version', '1'], { logFile });
  await waitFor(`replica ${name} ready`, async () => {
    if (child.exitCode !== null) throw new Error(`replica exited: ${await fsp.readFile(logFile, 'utf8')}`);
    const r = await request({ socketPath, path: '/v2/health/ready', token: null }).catch(() => undefined);
    return r?.status === 200 ? true : undefined;
  });
  return { child, socketPath, logFile };
}

/** Rows of a [N, ...] tensor as nested JSON arrays (int64 as numbers). */
function rows(t: Tensor): unknown[] {
  const data = Array.from(t.data as ArrayLike<unknown>, (v) => (typeof v === 'bigint' ? Number(v) : v));
  const nest = (offset: number, dims: number[]): unknown => {
    if (dims.length === 0) return data[offset];
    const [d, ...rest] = dims;
    const stride = rest.reduce((a, b) => a * b, 1);
    return Array.from({ length: d ?? 0 }, (_, i) => nest(offset + i * stride, rest));
  };
  return nest(0, t.shape) as unknown[];
}

function outputRows(v: OutputValue): unknown[] {
  return isRowSequence(v) ? v.data : rows(v);
}

/** Row `i` of a tensor's storage (a one-row tensor's data). */
function sliceData(t: Tensor, i: number): Tensor['data'] {
  const width = t.shape.slice(1).reduce((a, b) => a * b, 1);
  return t.data.slice(i * width, (i + 1) * width);
}

/** The MLflow request bodies, one per format, for a batch of input tensors. */
function mlflowBodies(inputs: Record<string, Tensor>): Record<string, unknown> {
  const names = Object.keys(inputs);
  const n = inputs[names[0] as string]?.shape[0] ?? 0;
  const perInput = Object.fromEntries(names.map((k) => [k, rows(inputs[k] as Tensor)]));
  if (names.length === 1) {
    const only = perInput[names[0] as string] as unknown[][];
    const width = only[0]?.length ?? 0;
    const columns = Array.from({ length: width }, (_, i) => `c${i}`);
    return {
      inputs: { inputs: only },
      instances: { instances: only },
      dataframe_split: { dataframe_split: { columns, data: only } },
      dataframe_records: { dataframe_records: only.map((r) => Object.fromEntries(columns.map((c, i) => [c, r[i]]))) },
    };
  }
  return {
    inputs: { inputs: perInput },
    instances: { instances: Array.from({ length: n }, (_, i) => Object.fromEntries(names.map((k) => [k, (perInput[k] as unknown[])[i]]))) },
  };
}

/** The `predictions` MLflow must answer for `outputs` in `format`. */
function expectedPredictions(outputs: Record<string, OutputValue>, format: string): unknown {
  const names = Object.keys(outputs);
  if (names.length === 1) return outputRows(outputs[names[0] as string] as OutputValue);
  const per = Object.fromEntries(names.map((k) => [k, outputRows(outputs[k] as OutputValue)]));
  if (format.startsWith('dataframe')) {
    const n = (per[names[0] as string] as unknown[]).length;
    return Array.from({ length: n }, (_, i) => Object.fromEntries(names.map((k) => [k, (per[k] as unknown[])[i]])));
  }
  return per;
}

const v2Datatype: Record<string, string> = { float32: 'FP32', float64: 'FP64', int64: 'INT64', int32: 'INT32', string: 'BYTES', bool: 'BOOL' };

describe('replica serves every fixture exactly', () => {
  const cases = Object.entries(FIXTURES).filter(([k]) => k !== 'identityTypes') as Array<[keyof typeof FIXTURES, OnnxFixture]>;
  for (const [key, fixture] of cases) {
    test(`${key}: MLflow (every format) and OIP v2 answers equal onnxruntime in process`, async () => {
      const file = fx[key];
      const { socketPath, child } = await startReplica(key, path.dirname(file), path.basename(file));
      const model = await onnxFlavor.load(path.dirname(file), { modelFile: path.basename(file), workloadType: 'CPU', intraOpThreads: 1 });
      try {
        for (const n of [1, 7]) {
          const inputs = fixture.example(n);
          const expected = await model.predict(fixture.example(n));
          for (const [format, body] of Object.entries(mlflowBodies(inputs))) {
            const r = await request({ socketPath, method: 'POST', path: '/invocations', json: body, token: null });
            assert.equal(r.status, 200, `${format}: ${r.text}`);
            assert.deepEqual(r.json, { predictions: expectedPredictions(expected, format) }, `${key} ${format} n=${n}`);
          }
          const v2 = {
            id: `req-${n}`,
            inputs: Object.entries(inputs).map(([name, t]) => ({ name, shape: t.shape, datatype: v2Datatype[t.dtype], data: rows(t) })),
          };
          const r = await request({ socketPath, method: 'POST', path: `/v2/models/${key}/infer`, json: v2, token: null });
          assert.equal(r.status, 200, r.text);
          assert.equal(r.json.id, `req-${n}`);
          assert.equal(r.json.model_name, key);
          for (const out of r.json.outputs as Array<{ name: string; shape: number[]; data: unknown[] }>) {
            const want = expected[out.name] as OutputValue;
            if (isRowSequence(want)) {
              assert.deepEqual(out.data.map((s) => JSON.parse(s as string)), want.data);
            } else {
              assert.deepEqual(out.shape, want.shape);
              assert.deepEqual(out.data, rows({ ...want, shape: [want.data.length] }));
            }
          }
        }
        // Concurrent one-row requests are batched by the replica (same event-loop turn): each
        // answer must equal the unbatched run of its own row.
        const rowsN = 24;
        const all = fixture.example(rowsN);
        const singles = Array.from({ length: rowsN }, (_, i) => Object.fromEntries(Object.entries(all).map(([k, t]) => [k, { ...t, shape: [1, ...t.shape.slice(1)], data: sliceData(t, i) }])) as Record<string, Tensor>);
        const answers = await Promise.all(singles.map((inputs) => request({ socketPath, method: 'POST', path: '/invocations', json: mlflowBodies(inputs).inputs, token: null })));
        for (const [i, inputs] of singles.entries()) {
          assert.equal(answers[i]?.status, 200, answers[i]?.text);
          assert.deepEqual(answers[i]?.json, { predictions: expectedPredictions(await model.predict(inputs), 'inputs') }, `${key} row ${i} batched`);
        }
        const meta = await request({ socketPath, path: `/v2/models/${key}`, token: null });
        assert.deepEqual(meta.json.inputs.map((i: { name: string }) => i.name), fixture.signature.inputs.map((i) => i.name));
        assert.equal((await request({ socketPath, path: `/v2/models/${key}/versions/1/ready`, token: null })).status, 200);
        assert.equal((await request({ socketPath, path: `/v2/models/${key}/versions/2/ready`, token: null })).status, 404);
        assert.equal((await request({ socketPath, path: '/v2/models/other/infer', method: 'POST', json: {}, token: null })).status, 404);
      } finally {
        await model.close();
        await kill(child);
      }
    });
  }

  test('an MLflow model directory serves its own input example', async () => {
    const version = JSON.parse(await fsp.readFile(path.join(fx.mlflowLinear, 'input_example.json'), 'utf8')) as Record<string, unknown>;
    const body = 'columns' in version ? { dataframe_split: version } : version;
    const { socketPath, child } = await startReplica('mlflow', fx.mlflowLinear, 'model.onnx');
    try {
      const r = await request({ socketPath, method: 'POST', path: '/invocations', json: body, token: null });
      assert.equal(r.status, 200, r.text);
      assert.ok(Array.isArray(r.json.predictions));
    } finally {
      await kill(child);
    }
  });
});

describe('replica behaviour', () => {
  let heavyDir: string;
  before(async () => {
    heavyDir = path.join(dir, 'heavy');
    await fsp.mkdir(heavyDir);
    await writeMlp(path.join(heavyDir, 'model.onnx'), [256, 4096, 4096, 256]);
  });
  const bigBatch = (rowsN: number): unknown => ({ inputs: Array.from({ length: rowsN }, (_, i) => Array.from({ length: 256 }, (_, j) => ((i * 7 + j) % 13) / 13)) });

  test('bad input is a 400 naming the field; the replica keeps serving', async () => {
    const { socketPath, child } = await startReplica('bad', path.dirname(fx.linear), path.basename(fx.linear));
    try {
      const cases: Array<[unknown, RegExp]> = [
        [{ inputs: [[1, 2, 3]] }, /\[-1, 4\]|shape/],
        [{ inputs: [[1, 2, 3, 'x']] }, /inputs/],
        [{ instances: [[1, 2, 3, 4]], inputs: [[1, 2, 3, 4]] }, /exactly one|one of/i],
        [{ nope: 1 }, /nope|dataframe_split/],
        [{ inputs: [[1, 2], [3, 4, 5, 6]] }, /ragged|inputs/i],
      ];
      for (const [body, re] of cases) {
        const r = await request({ socketPath, method: 'POST', path: '/invocations', json: body, token: null });
        assert.equal(r.status, 400, r.text);
        assert.equal(r.json.error_code, 'INVALID_PARAMETER_VALUE');
        assert.match(r.json.message, re);
      }
      const malformed = await request({ socketPath, method: 'POST', path: '/invocations', body: '{"inputs": [[1,', token: null });
      assert.equal(malformed.status, 400);
      assert.equal(malformed.json.error_code, 'MALFORMED_REQUEST');
      const ok = await request({ socketPath, method: 'POST', path: '/invocations', json: { inputs: [[1, 2, 3, 4]] }, token: null });
      assert.equal(ok.status, 200);
    } finally {
      await kill(child);
    }
  });

  test('health answers while a big batch runs', async () => {
    const { socketPath, child } = await startReplica('heavy', heavyDir, 'model.onnx');
    try {
      let done = false;
      const big = request({ socketPath, method: 'POST', path: '/invocations', json: bigBatch(2048), token: null }).finally(() => {
        done = true;
      });
      // Probe health for as long as the batch runs: answers must keep coming (a blocked event
      // loop would answer none until the batch is done).
      let answeredDuringBatch = 0;
      while (!done) {
        const health = await request({ socketPath, path: '/v2/health/live', token: null });
        assert.equal(health.status, 200);
        if (!done) answeredDuringBatch++;
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal((await big).status, 200);
      assert.ok(answeredDuringBatch >= 3, `only ${answeredDuringBatch} health answers while the batch ran`);
    } finally {
      await kill(child);
    }
  });

  test('SIGTERM drains in-flight requests, then exits and removes its socket', async () => {
    const { socketPath, child } = await startReplica('drain', heavyDir, 'model.onnx');
    // Send the batch and wait until its body has left this process, plus a margin for the replica
    // to read it: only then is it "in flight" at the replica.
    const body = JSON.stringify(bigBatch(512));
    let sentBody!: () => void;
    const bodySent = new Promise<void>((resolve) => (sentBody = resolve));
    const inflight = new Promise<{ status: number; json: any }>((resolve, reject) => {
      const req = http.request({ socketPath, method: 'POST', path: '/invocations', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString('utf8')) }));
        // A connection closed in the middle of the answer fails the test by name (not a pending promise).
        res.on('aborted', () => reject(new Error('the replica closed the connection before the whole answer')));
      });
      req.on('error', reject);
      req.on('finish', sentBody);
      req.end(body);
    });
    await bodySent;
    // A request whose head the replica has not parsed yet is not in flight there (a drain may close
    // its connection): on a busy machine that takes a while, and the batch runs for seconds.
    await new Promise((r) => setTimeout(r, 1000));
    // Registered before the signal, and settled also when the process is already gone.
    const exited = child.exitCode !== null || child.signalCode !== null
      ? Promise.reject(new Error(`the replica exited before SIGTERM (code ${child.exitCode}, signal ${child.signalCode})`))
      : new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    const r = await inflight;
    assert.equal(r.status, 200, 'the in-flight request completes');
    assert.equal(r.json.predictions.length, 512);
    assert.equal(await exited, 0);
    await assert.rejects(fsp.access(socketPath));
  });

  test('a model that cannot load exits non-zero with the reason in its log', async () => {
    const junkDir = path.join(dir, 'junk');
    await fsp.mkdir(junkDir);
    await fsp.writeFile(path.join(junkDir, 'model.onnx'), 'not a model');
    const logFile = path.join(dir, 'junk.log');
    const child = procs.spawnFerry(['replica', '--socket', path.join(sockets, 'junk.sock'), '--dir', junkDir, '--model-file', 'model.onnx', '--name', 'junk', '--version', '1'], { logFile });
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    assert.equal(code, 1);
    assert.match(await fsp.readFile(logFile, 'utf8'), /replica failed to start/);
  });
});
