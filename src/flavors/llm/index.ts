/**
 * The llm flavor: GGUF language models run by llama.cpp through node-llama-cpp (pinned 3.21.1).
 * `inspect` reads the GGUF metadata and the optional `ferry.json` in pure JS (the server never
 * loads llama.cpp); `load` runs in a replica and returns an `LlmModel`: one model and one context
 * whose `sequences` context sequences are a pool shared by concurrent requests. A request holds one
 * sequence from its first prompt token to its last generated token; requests beyond `sequences`
 * wait in a bounded queue (`max_queued_requests`, then 429).
 *
 * Settings (`ferry.json` next to the model file, all optional, snake_case like the serving API):
 * `context_size` tokens per sequence (default: the model's training context, at most 2048),
 * `sequences` (default 1), `gpu_layers` (a count or "max"; default "max" for GPU_* workload
 * types, 0 on CPU), `threads` per evaluation (default 1, one replica per core as for onnx: more
 * threads than free cores made the tiny model 1000× slower on a loaded 2-core VM, from spinning),
 * `max_queued_requests` (default 16), `default_max_tokens` (default 256, when a request sets none).
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import type { Llama, LlamaContext, LlamaContextSequence, LlamaEmbeddingContext, LlamaModel, Token, ChatWrapper, ChatHistoryItem } from 'node-llama-cpp';
import { configError } from '../../config/index.js';
import { FerryError } from '../../errors.js';
import type { OutputValue, Signature, Tensor } from '../../tensor/index.js';
import type { Flavor, LoadedModel, LoadOptions } from '../types.js';
import { FLAVOR_CAPABILITIES } from '../capabilities.js';
import { readGgufHeader, type GgufHeader } from './gguf.js';
import { MANIFEST_FILE } from '../manifest.js';

export { readGgufHeader, type GgufHeader, type GgufValue } from './gguf.js';
export type { Token } from 'node-llama-cpp';

/** The settings file an llm model directory may carry. */
/** The same file as the registry's manifest (src/flavors/manifest.ts). */
export const LLM_SETTINGS_FILE = MANIFEST_FILE;

const settingsSchema = z.object({
  // The registry's keys (src/flavors/manifest.ts): which flavor, which file.
  flavor: z.literal('llm').optional(),
  main: z.string().optional(),
  context_size: z.number().int().min(16).max(1 << 20).optional(),
  sequences: z.number().int().min(1).max(256).default(1),
  gpu_layers: z.union([z.number().int().min(0), z.literal('max')]).optional(),
  threads: z.number().int().min(1).max(1024).default(1),
  max_queued_requests: z.number().int().min(0).max(100_000).default(16),
  default_max_tokens: z.number().int().min(1).default(256),
}).strict();

/** Compiled llm settings (units in names). */
export interface LlmSettings {
  contextSizeTokens: number | undefined;
  sequences: number;
  gpuLayers: number | 'max' | undefined;
  threads: number;
  maxQueuedRequests: number;
  defaultMaxTokens: number;
}

/**
 * The tensor view of an llm model, for MLflow `/invocations` with a `prompt` column: one
 * completion per row. Chat, completions and embeddings go through the OpenAI routes.
 */
export const LLM_SIGNATURE: Signature = {
  inputs: [{ name: 'prompt', dtype: 'string', shape: [-1] }],
  outputs: [{ name: 'text', dtype: 'string', shape: [-1] }],
};

/** Reads and checks `ferry.json` in `dir` (defaults when absent). */
export async function readLlmSettings(dir: string): Promise<LlmSettings> {
  let raw: unknown = {};
  const text = await fsp.readFile(path.join(dir, LLM_SETTINGS_FILE), 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (text !== undefined) {
    try {
      raw = JSON.parse(text) as unknown;
    } catch (err) {
      throw new FerryError('INVALID_PARAMETER_VALUE', `${LLM_SETTINGS_FILE} is not valid JSON: ${(err as Error).message}`);
    }
  }
  const parsed = settingsSchema.safeParse(raw);
  if (!parsed.success) throw configError(parsed.error, raw, `${LLM_SETTINGS_FILE}: `);
  const s = parsed.data;
  return {
    contextSizeTokens: s.context_size, sequences: s.sequences, gpuLayers: s.gpu_layers, threads: s.threads,
    maxQueuedRequests: s.max_queued_requests, defaultMaxTokens: s.default_max_tokens,
  };
}

/** What registration learns from a GGUF header; throws when llama.cpp could not run it. */
export function describeGguf(header: GgufHeader): { architecture: string; contextLength: number | undefined; name: string | undefined } {
  const architecture = header.metadata.get('general.architecture');
  if (typeof architecture !== 'string' || architecture === '') throw new FerryError('INVALID_PARAMETER_VALUE', "The GGUF file has no 'general.architecture'.");
  if (typeof header.metadata.get('tokenizer.ggml.model') !== 'string') {
    throw new FerryError('INVALID_PARAMETER_VALUE', "The GGUF file has no tokenizer ('tokenizer.ggml.model'); Ferry serves language models with their vocabulary.");
  }
  const ctx = header.metadata.get(`${architecture}.context_length`);
  const name = header.metadata.get('general.name');
  return { architecture, contextLength: typeof ctx === 'number' ? ctx : undefined, name: typeof name === 'string' ? name : undefined };
}

/** Sampling and stopping of one generation (OpenAI's fields, checked by the caller). */
export interface GenerationParams {
  maxTokens: number;
  /** 0: greedy (deterministic). */
  temperature: number;
  topP: number | undefined;
  seed: number | undefined;
  /** Generation ends before the first of these strings; it is not part of the text. */
  stop: readonly string[];
}

export type FinishReason = 'stop' | 'length';

/** How a generation ended. */
export interface GenerationEnd {
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
}

/**
 * A bounded pool of context sequences: `acquire` hands out a free one or waits in a FIFO queue
 * of at most `maxQueued` requests; beyond it, 429. An aborted wait leaves the queue.
 */
class SequencePool {
  private readonly free: LlamaContextSequence[];
  private readonly waiters: Array<{ resolve: (s: LlamaContextSequence) => void; reject: (err: unknown) => void; signal: AbortSignal | undefined; onAbort: () => void }> = [];

  constructor(sequences: LlamaContextSequence[], private readonly maxQueued: number) {
    this.free = sequences;
  }

  /** Requests waiting for a sequence. */
  get queued(): number {
    return this.waiters.length;
  }

  get idle(): number {
    return this.free.length;
  }

  acquire(signal: AbortSignal | undefined): Promise<LlamaContextSequence> {
    if (signal?.aborted === true) return Promise.reject(aborted());
    const s = this.free.pop();
    if (s !== undefined) return Promise.resolve(s);
    if (this.waiters.length >= this.maxQueued) {
      return Promise.reject(new FerryError('REQUEST_LIMIT_EXCEEDED', `All sequences of the model are busy and ${this.maxQueued} requests already wait (max_queued_requests in ${LLM_SETTINGS_FILE}).`, { retryAfterS: 1 }));
    }
    return new Promise((resolve, reject) => {
      const w = {
        resolve, reject, signal,
        onAbort: () => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(aborted());
        },
      };
      signal?.addEventListener('abort', w.onAbort, { once: true });
      this.waiters.push(w);
    });
  }

  release(s: LlamaContextSequence): void {
    const w = this.waiters.shift();
    if (w === undefined) {
      this.free.push(s);
      return;
    }
    w.signal?.removeEventListener('abort', w.onAbort);
    w.resolve(s);
  }
}

const aborted = (): FerryError => new FerryError('REQUEST_TIMEOUT', 'The request was cancelled.');

/** Tokens kept before a partial UTF-8 character is given up on (a character is at most 4 bytes). */
const MAX_PENDING_TOKENS = 4;
/** Tokens of context given to the detokenizer so that a piece starts as it would mid-text. */
const DETOKENIZE_CONTEXT_TOKENS = 8;

/** A loaded GGUF model: chat, completion and embeddings over a shared pool of sequences. */
export class LlmModel implements LoadedModel {
  readonly signature = LLM_SIGNATURE;
  private embeddingContext: Promise<LlamaEmbeddingContext> | undefined;

  constructor(
    private readonly llama: Llama,
    readonly model: LlamaModel,
    private readonly context: LlamaContext,
    private readonly pool: SequencePool,
    private readonly chatWrapper: ChatWrapper,
    readonly settings: LlmSettings,
  ) {}

  /** Context size of each sequence, in tokens. */
  get contextSizeTokens(): number {
    return this.context.contextSize;
  }

  /** Sequences idle / requests waiting for one, for metrics and tests. */
  get load(): { idleSequences: number; queued: number } {
    return { idleSequences: this.pool.idle, queued: this.pool.queued };
  }

  /** The tokens of a chat rendered with the model's chat template, up to where the assistant answers. */
  chatTokens(messages: ReadonlyArray<{ role: 'system' | 'user' | 'assistant'; content: string }>): { tokens: Token[]; stop: string[] } {
    const history: ChatHistoryItem[] = messages.map((m) => m.role === 'system'
      ? { type: 'system', text: m.content }
      : m.role === 'user' ? { type: 'user', text: m.content } : { type: 'model', response: [m.content] });
    history.push({ type: 'model', response: [] });
    const state = this.chatWrapper.generateContextState({ chatHistory: history });
    // Triggers that are plain text (e.g. "[INST]") become stop strings; end-of-generation tokens
    // stop generation anyway.
    const stop = state.stopGenerationTriggers.flatMap((t) => (t.values.every((v) => typeof v === 'string') ? [t.values.join('')] : []));
    return { tokens: state.contextText.tokenize(this.model.tokenizer), stop: stop.filter((s) => s !== '') };
  }

  /** The tokens of a raw completion prompt (BOS first when the model wants one). */
  promptTokens(prompt: string): Token[] {
    const bos = this.model.tokens.bos;
    const tokens = this.model.tokenize(prompt);
    return bos !== null && this.model.tokens.shouldPrependBosToken ? [bos, ...tokens] : tokens;
  }

  /** Tokens `text` encodes to (for usage counts). */
  countTokens(text: string): number {
    return this.model.tokenize(text).length;
  }

  /**
   * Generates from `prompt` on a sequence of the pool: yields text pieces as they are decoded
   * (never half a UTF-8 character, never a piece of a stop string) and returns how it ended.
   * Aborting `signal` ends it at the next token and frees the sequence; the generator then
   * throws REQUEST_TIMEOUT. Breaking out of the iteration frees the sequence too.
   */
  async *generate(prompt: readonly Token[], params: GenerationParams, signal: AbortSignal | undefined): AsyncGenerator<string, GenerationEnd> {
    if (prompt.length >= this.context.contextSize) {
      throw new FerryError('INVALID_PARAMETER_VALUE', `The prompt is ${prompt.length} tokens; this model's context holds ${this.context.contextSize} (context_size in ${LLM_SETTINGS_FILE}).`);
    }
    const seq = await this.pool.acquire(signal);
    let completionTokens = 0;
    let finishReason: FinishReason = 'length';
    try {
      await seq.clearHistory();
      const decoder = new StopDecoder(params.stop);
      let pending: Token[] = [];
      let recent: Token[] = [];
      const flush = (): string => {
        const piece = this.model.detokenize(pending, false, recent);
        recent = [...recent, ...pending].slice(-DETOKENIZE_CONTEXT_TOKENS);
        pending = [];
        return piece;
      };
      if (params.maxTokens > 0) {
        const options = { temperature: params.temperature, ...(params.topP === undefined ? {} : { topP: params.topP }), ...(params.seed === undefined ? {} : { seed: params.seed }) };
        for await (const token of seq.evaluate([...prompt], options)) {
          if (signal?.aborted === true) throw aborted();
          if (this.model.isEogToken(token)) {
            finishReason = 'stop';
            break;
          }
          completionTokens++;
          pending.push(token);
          const piece = this.model.detokenize(pending, false, recent);
          if (!piece.endsWith('\uFFFD') || pending.length >= MAX_PENDING_TOKENS) {
            const out = decoder.push(flush());
            if (out !== '') yield out;
            if (decoder.stopped) {
              finishReason = 'stop';
              break;
            }
          }
          if (completionTokens >= params.maxTokens) break;
        }
      }
      if (!decoder.stopped) {
        const rest = decoder.push(pending.length > 0 ? flush() : '') + decoder.end();
        if (rest !== '') yield rest;
        if (decoder.stopped) finishReason = 'stop';
      }
      return { finishReason, promptTokens: prompt.length, completionTokens };
    } finally {
      this.pool.release(seq);
    }
  }

  /**
   * One embedding per text (the model's pooled output, as llama.cpp computes it) and the tokens
   * read. Uses a separate embedding context, created on first use.
   */
  async embed(texts: readonly string[]): Promise<{ vectors: number[][]; tokens: number }> {
    this.embeddingContext ??= this.model.createEmbeddingContext({ contextSize: Math.min(this.context.contextSize, 2048), threads: this.settings.threads });
    let ctx: LlamaEmbeddingContext;
    try {
      ctx = await this.embeddingContext;
    } catch (err) {
      this.embeddingContext = undefined;
      throw new FerryError('MODEL_ERROR', `This model cannot compute embeddings: ${(err as Error).message}`);
    }
    const vectors: number[][] = [];
    let tokens = 0;
    for (const text of texts) {
      tokens += this.countTokens(text);
      vectors.push([...(await ctx.getEmbeddingFor(text)).vector]);
    }
    return { vectors, tokens };
  }

  /** MLflow tensor path: one greedy completion of `default_max_tokens` (or `params.max_tokens`) per prompt row. */
  async predict(inputs: Record<string, Tensor>, params?: Record<string, unknown>): Promise<Record<string, OutputValue>> {
    const prompts = inputs.prompt?.data;
    if (!Array.isArray(prompts) || !prompts.every((p) => typeof p === 'string')) throw new FerryError('INVALID_PARAMETER_VALUE', "Input 'prompt' must be strings.");
    const maxTokens = typeof params?.max_tokens === 'number' && Number.isInteger(params.max_tokens) && params.max_tokens > 0 ? params.max_tokens : this.settings.defaultMaxTokens;
    const texts: string[] = [];
    for (const prompt of prompts) {
      let text = '';
      const gen = this.generate(this.promptTokens(prompt), { maxTokens, temperature: 0, topP: undefined, seed: undefined, stop: [] }, undefined);
      for (let r = await gen.next(); r.done !== true; r = await gen.next()) text += r.value;
      texts.push(text);
    }
    return { text: { dtype: 'string', shape: [texts.length], data: texts } };
  }

  async close(): Promise<void> {
    await (await this.embeddingContext?.catch(() => undefined))?.dispose();
    await this.context.dispose();
    await this.model.dispose();
    await this.llama.dispose();
  }
}

/**
 * Holds back the end of the text that could begin a stop string, and cuts the text at the first
 * stop string. Example, stop ["\n\n"]: push("a\n") → "a" (the "\n" is held), push("\nb") → ""
 * and `stopped`.
 */
export class StopDecoder {
  private text = '';
  private emitted = 0;
  stopped = false;

  constructor(private readonly stops: readonly string[]) {}

  /** Adds decoded text; returns what can be sent now. */
  push(piece: string): string {
    if (this.stopped) return '';
    this.text += piece;
    if (this.stops.length === 0) return this.take(this.text.length);
    let cut = -1;
    for (const s of this.stops) {
      const i = this.text.indexOf(s, Math.max(0, this.emitted - s.length + 1));
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      this.stopped = true;
      return this.take(cut);
    }
    let hold = 0;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, this.text.length - this.emitted); k > hold; k--) {
        if (this.text.endsWith(s.slice(0, k))) {
          hold = k;
          break;
        }
      }
    }
    return this.take(this.text.length - hold);
  }

  /** The held-back text, once generation ended without a stop string. */
  end(): string {
    return this.stopped ? '' : this.take(this.text.length);
  }

  private take(end: number): string {
    const out = this.text.slice(this.emitted, end);
    this.emitted = Math.max(this.emitted, end);
    return out;
  }
}

/** Starts llama.cpp (CPU, or CUDA for GPU_* workload types) and loads the model with its settings. */
async function loadLlm(dir: string, opts: LoadOptions): Promise<LlmModel> {
  const settings = await readLlmSettings(dir);
  const gpu = opts.workloadType.startsWith('GPU');
  // Imported here: only replicas of llm models load llama.cpp.
  const { getLlama, resolveChatWrapper, LlamaLogLevel } = await import('node-llama-cpp');
  let llama: Llama;
  try {
    // Prebuilt binaries only: a replica never compiles llama.cpp (nor may it write anywhere).
    llama = await getLlama({ gpu: gpu ? 'cuda' : false, build: 'never', progressLogs: false, logLevel: LlamaLogLevel.error });
  } catch (err) {
    if (gpu) {
      throw new FerryError(
        'INVALID_PARAMETER_VALUE',
        `workload_type ${opts.workloadType} needs llama.cpp's CUDA backend, which cannot run here (the @node-llama-cpp/linux-x64-cuda prebuilt needs an NVIDIA GPU with its driver and the CUDA 13 libraries libcudart.so.13 and libcublas.so.13; docs/gpu.md). ` +
          `Serve the model with workload_type CPU, or run the server on a machine with a GPU. node-llama-cpp said: ${(err as Error).message}`,
        { cause: err },
      );
    }
    throw new FerryError('MODEL_ERROR', `node-llama-cpp cannot start llama.cpp: ${(err as Error).message}`, { cause: err });
  }
  try {
    const gpuLayers = settings.gpuLayers ?? (gpu ? 'max' : 0);
    const model = await llama.loadModel({ modelPath: path.join(dir, opts.modelFile), gpuLayers });
    const contextSize = settings.contextSizeTokens ?? Math.min(model.trainContextSize, 2048);
    const context = await model.createContext({ contextSize, sequences: settings.sequences, threads: settings.threads });
    const sequences = Array.from({ length: settings.sequences }, () => context.getSequence());
    const chatWrapper = resolveChatWrapper(model);
    return new LlmModel(llama, model, context, new SequencePool(sequences, settings.maxQueuedRequests), chatWrapper, settings);
  } catch (err) {
    await llama.dispose();
    if (err instanceof FerryError) throw err;
    throw new FerryError('MODEL_ERROR', `llama.cpp cannot load '${opts.modelFile}': ${(err as Error).message}`, { cause: err });
  }
}

export const llmFlavor: Flavor = {
  name: 'llm',
  capabilities: FLAVOR_CAPABILITIES.llm,
  defaultModelFile: 'model.gguf',
  async inspect(dir, modelFile) {
    describeGguf(readGgufHeader(path.join(dir, modelFile)));
    await readLlmSettings(dir);
    return LLM_SIGNATURE;
  },
  load: loadLlm,
};
