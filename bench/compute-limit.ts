/**
 * The compute limit: onnxruntime-node alone, no HTTP, no JSON. Loads the model with the same
 * session options as Ferry's replica and the hand-written server (1 intra-op thread, sequential)
 * and calls `session.run` back to back on batches of each size for `--seconds` each. The best
 * rows/s over the batch sizes is the ceiling a server with one model thread can approach.
 *
 *   node dist/bench/compute-limit.js --model heavy.onnx [--batches 1,8,32,64,128] [--seconds 1.5]
 *
 * Prints one JSON line: {"inputName", "inputWidth", "batches": [{batchSize, runs, rowsPerS, msPerRun}]}.
 * Input values are deterministic; the model's first input must be float32 [-1, width].
 */
import { parseArgs } from 'node:util';
import ort from 'onnxruntime-node';

export interface ComputeBatch {
  batchSize: number;
  runs: number;
  rowsPerS: number;
  msPerRun: number;
}

const { values } = parseArgs({
  options: { model: { type: 'string' }, batches: { type: 'string', default: '1,8,32,64,128' }, seconds: { type: 'string', default: '1.5' } },
});
if (values.model === undefined) {
  process.stderr.write('usage: node compute-limit.js --model <file.onnx> [--batches 1,8,32] [--seconds 1.5]\n');
  process.exit(2);
}
const seconds = Number(values.seconds);
const session = await ort.InferenceSession.create(values.model, { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential' });
const input = session.inputMetadata[0];
const width = input?.isTensor ? input.shape[1] : undefined;
if (input === undefined || typeof width !== 'number') throw new Error(`${values.model}: first input is not a [-1, width] tensor`);

const batches: ComputeBatch[] = [];
for (const batchSize of values.batches.split(',').map(Number)) {
  const data = Float32Array.from({ length: batchSize * width }, (_, i) => ((i * 7919) % 2000) / 1000 - 1);
  const feeds = { [input.name]: new ort.Tensor('float32', data, [batchSize, width]) };
  await session.run(feeds); // first run of a shape allocates
  let runs = 0;
  const t0 = performance.now();
  let elapsedMs = 0;
  while (elapsedMs < seconds * 1000) {
    await session.run(feeds);
    runs++;
    elapsedMs = performance.now() - t0;
  }
  batches.push({ batchSize, runs, rowsPerS: Math.round((runs * batchSize * 1000) / elapsedMs), msPerRun: Math.round((elapsedMs / runs) * 1000) / 1000 });
}
process.stdout.write(JSON.stringify({ inputName: input.name, inputWidth: width, batches }) + '\n');
