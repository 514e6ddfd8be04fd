/**
 * The llm flavor on the tiny GGUF fixture through the real node-llama-cpp: the pure-JS GGUF
 * reader, settings, registration-time detection, deterministic generation with usage counts that
 * match the tokenizer, stop strings, the bounded sequence pool and cancellation.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { buildTinyGguf, TINY_LLM, writeTinyGguf } from '../src/fixtures/index.js';
import { getFlavor } from '../src/flavors/index.js';
import { LlmModel, readGgufHeader, readLlmSettings, StopDecoder, type GenerationParams } from '../src/flavors/llm/index.js';
import { inspectArtifact } from '../src/registry/inspect.js';
import { rejectsWith, tempDir } from './support/index.js';

let dir: string;
let model: LlmModel;
const greedy = (maxTokens: number, stop: string[] = []): GenerationParams => ({ maxTokens, temperature: 0, topP: undefined, seed: undefined, stop });

/** Runs a generation to its end: the text and how it ended. */
async function run(gen: AsyncGenerator<string, { finishReason: string; promptTokens: number; completionTokens: number }>) {
  let text = '';
  for (;;) {
    const step = await gen.next();
    if (step.done === true) return { text, ...step.value };
    text += step.value;
  }
}

before(async () => {
  dir = await tempDir('ferry-llm-');
  await writeTinyGguf(dir);
  await fsp.writeFile(path.join(dir, 'ferry.json'), JSON.stringify({ sequences: 1, max_queued_requests: 1, context_size: 512 }));
  const loaded = await (await getFlavor('llm')).load(dir, { modelFile: TINY_LLM.file, workloadType: 'CPU', intraOpThreads: 1 });
  assert.ok(loaded instanceof LlmModel);
  model = loaded;
});

after(async () => {
  await model?.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

test('the fixture is byte-identical on every build and its metadata reads back in pure JS', async () => {
  assert.deepEqual(buildTinyGguf(), buildTinyGguf());
  const h = readGgufHeader(path.join(dir, TINY_LLM.file));
  assert.equal(h.version, 3);
  assert.equal(h.tensorCount, 3 + 9 * TINY_LLM.blockCount);
  assert.equal(h.metadata.get('general.architecture'), 'llama');
  assert.equal(h.metadata.get('llama.embedding_length'), TINY_LLM.embeddingLength);
  assert.deepEqual(h.metadata.get('tokenizer.ggml.tokens'), { arrayLength: TINY_LLM.vocabSize });
});

test('registration detects a .gguf file as the llm flavor and refuses broken files and settings', async () => {
  const i = await inspectArtifact(dir);
  assert.equal(i.flavor, 'llm');
  assert.equal(i.modelFile, TINY_LLM.file);
  assert.deepEqual(i.signature.inputs.map((s) => s.name), ['prompt']);

  const bad = await tempDir('ferry-llm-bad-');
  try {
    await fsp.writeFile(path.join(bad, 'm.gguf'), buildTinyGguf().subarray(0, 200));
    await rejectsWith(inspectArtifact(bad), 'INVALID_PARAMETER_VALUE', /truncated/);
    await fsp.writeFile(path.join(bad, 'm.gguf'), 'not a model');
    await rejectsWith(inspectArtifact(bad), 'INVALID_PARAMETER_VALUE', /not a GGUF file/);
    await fsp.writeFile(path.join(bad, 'm.gguf'), buildTinyGguf());
    await fsp.writeFile(path.join(bad, 'ferry.json'), JSON.stringify({ sequences: 0 }));
    await rejectsWith(inspectArtifact(bad), 'INVALID_PARAMETER_VALUE', /ferry\.json: sequences/);
    await fsp.writeFile(path.join(bad, 'ferry.json'), JSON.stringify({ context: 10 }));
    await rejectsWith(readLlmSettings(bad), 'INVALID_PARAMETER_VALUE', /Unknown key 'context'/);
  } finally {
    await fsp.rm(bad, { recursive: true, force: true });
  }
});

test('greedy generation is deterministic and its usage matches the tokenizer', async () => {
  const prompt = model.promptTokens('Hi, you');
  // BOS, then one token per byte, with the space as the '▁' token.
  assert.equal(prompt.length, 1 + 'Hi, you'.length);
  const a = await run(model.generate(prompt, greedy(16), undefined));
  const b = await run(model.generate(prompt, greedy(16), undefined));
  assert.equal(a.text, b.text);
  assert.deepEqual({ finishReason: a.finishReason, promptTokens: a.promptTokens, completionTokens: a.completionTokens }, { finishReason: 'length', promptTokens: prompt.length, completionTokens: 16 });
  // A seed makes sampling repeatable too.
  const seeded: GenerationParams = { maxTokens: 16, temperature: 1, topP: 0.9, seed: 7, stop: [] };
  assert.equal((await run(model.generate(prompt, seeded, undefined))).text, (await run(model.generate(prompt, seeded, undefined))).text);
});

test('stop strings end generation before them; the decoder never sends a piece of one', async () => {
  const d = new StopDecoder(['\n\n']);
  assert.equal(d.push('a\n'), 'a');
  assert.equal(d.push('\nb'), '');
  assert.ok(d.stopped);
  const e = new StopDecoder(['xyz']);
  assert.equal(e.push('abx'), 'ab');
  assert.equal(e.push('q'), 'xq');
  assert.equal(e.end(), '');

  const prompt = model.promptTokens('stop');
  const full = (await run(model.generate(prompt, greedy(30), undefined))).text;
  const stop = [...full].slice(5, 7).join('');
  const cut = await run(model.generate(prompt, greedy(30, [stop]), undefined));
  assert.equal(cut.finishReason, 'stop');
  assert.equal(cut.text, full.slice(0, full.indexOf(stop)));
});

test('the sequence pool is bounded (429 past max_queued_requests) and an aborted generation frees its sequence', async () => {
  const controller = new AbortController();
  const long = model.generate(model.promptTokens('a'), greedy(1_000_000), controller.signal);
  await long.next(); // holds the only sequence now
  const queued = run(model.generate(model.promptTokens('b'), greedy(3), undefined));
  assert.equal(model.load.queued, 1);
  await rejectsWith(run(model.generate(model.promptTokens('c'), greedy(3), undefined)), 'REQUEST_LIMIT_EXCEEDED', /max_queued_requests/);
  controller.abort();
  await rejectsWith(run(long), 'REQUEST_TIMEOUT', /cancelled/);
  assert.equal((await queued).completionTokens, 3);
  assert.deepEqual(model.load, { idleSequences: 1, queued: 0 });
});

test('embeddings: one vector of the embedding width per text', async () => {
  const { vectors, tokens } = await model.embed(['abc', 'de']);
  assert.deepEqual(vectors.map((v) => v.length), [TINY_LLM.embeddingLength, TINY_LLM.embeddingLength]);
  assert.equal(tokens, 5);
  assert.ok(vectors[0]?.some((x) => x !== 0));
});

test('workload type GPU_* without a usable CUDA backend fails with a message that says what to do', async () => {
  // This machine has no NVIDIA GPU: where one exists, loading succeeds instead.
  const gpu = await (await getFlavor('llm')).load(dir, { modelFile: TINY_LLM.file, workloadType: 'GPU_SMALL', intraOpThreads: 1 }).then(
    async (m) => {
      await m.close();
      return undefined;
    },
    (err: unknown) => err,
  );
  if (gpu !== undefined) assert.match(String((gpu as Error).message), /workload_type GPU_SMALL needs llama\.cpp's CUDA backend.*workload_type CPU/s);
});
