/**
 * The OpenAI-compatible routes of an llm replica: chat completions, completions and embeddings on
 * the loaded `LlmModel`, answered whole or streamed as Server-Sent Events (`stream: true`) through
 * the channel's streamed responses. A cancelled request (its client went away) aborts generation
 * at the next token and frees its sequence.
 */
import type { GenerationEnd, GenerationParams, LlmModel, Token } from '../flavors/llm/index.js';
import {
  completionId, decodeChatRequest, decodeCompletionRequest, decodeEmbeddingRequest, encodeEmbeddingResponse, EVENT_STREAM, SSE_DONE, sseData, usage, type SamplingRequest,
} from '../protocols/openai.js';

/** A streamed answer: what the frame handler sends as a channel stream, or HTTP writes as it comes. */
export class Streamed {
  constructor(readonly contentType: string, readonly chunks: AsyncIterable<string>) {}
}

/** Per-request timing for the replica's log and the gateway's metrics: time to first token, tokens/s. */
export interface GenerationStats {
  promptTokens: number;
  completionTokens: number;
  /** From the request's arrival to its first generated text, ms. */
  timeToFirstTokenMs: number | undefined;
  durationMs: number;
}

type Kind = 'chat' | 'completion';

/** The rest of `events` after its `first` step was taken. */
async function* resumed(first: IteratorResult<string>, events: AsyncGenerator<string>): AsyncGenerator<string> {
  if (first.done === true) return;
  yield first.value;
  yield* events;
}

/** Builds the handlers; `onDone` hears every finished generation (for metrics and logs). */
export function llmHandlers(model: LlmModel, modelName: string, onDone: (stats: GenerationStats) => void) {
  const paramsOf = (r: SamplingRequest): GenerationParams => ({
    maxTokens: r.maxTokens ?? model.settings.defaultMaxTokens, temperature: r.temperature, topP: r.topP, seed: r.seed, stop: r.stop,
  });

  /** Runs every choice of a request in turn (each a full generation on one sequence), yielding text per choice. */
  async function* choices(prompts: Array<{ tokens: Token[]; stop: string[] }>, r: SamplingRequest, signal: AbortSignal | undefined): AsyncGenerator<{ index: number; text: string } | { index: number; end: GenerationEnd }> {
    const t0 = performance.now();
    let first: number | undefined;
    let promptTokens = 0;
    let completionTokens = 0;
    let index = 0;
    for (const p of prompts) {
      for (let c = 0; c < r.n; c++, index++) {
        const params = paramsOf(r);
        const gen = model.generate(p.tokens, { ...params, stop: [...params.stop, ...p.stop] }, signal);
        for (let step = await gen.next(); ; step = await gen.next()) {
          if (step.done === true) {
            promptTokens += step.value.promptTokens;
            completionTokens += step.value.completionTokens;
            yield { index, end: step.value };
            break;
          }
          first ??= performance.now() - t0;
          yield { index, text: step.value };
        }
      }
    }
    onDone({ promptTokens, completionTokens, timeToFirstTokenMs: first, durationMs: performance.now() - t0 });
  }

  const respond = async (kind: Kind, body: unknown, signal: () => AbortSignal): Promise<unknown> => {
    const r = kind === 'chat' ? decodeChatRequest(body) : decodeCompletionRequest(body);
    const prompts = 'messages' in r ? [model.chatTokens(r.messages)] : r.prompts.map((p) => ({ tokens: model.promptTokens(p), stop: [] }));
    const id = completionId(kind === 'chat' ? 'chatcmpl' : 'cmpl');
    const created = Math.floor(Date.now() / 1000);
    const object = kind === 'chat' ? 'chat.completion' : 'text_completion';
    if (r.stream) {
      // Run up to the first event before answering: what fails until then (all sequences busy and
      // the queue full, a prompt over the context) is the request's error, with its status.
      const events = stream(kind, id, created, prompts, r, signal());
      const first = await events.next();
      return new Streamed(EVENT_STREAM, resumed(first, events));
    }
    const texts: string[] = [];
    const ends: GenerationEnd[] = [];
    for await (const item of choices(prompts, r, undefined)) {
      if ('text' in item) texts[item.index] = (texts[item.index] ?? '') + item.text;
      else ends[item.index] = item.end;
    }
    const promptTokens = prompts.reduce((n, p) => n + p.tokens.length, 0);
    const completionTokens = ends.reduce((n, e) => n + e.completionTokens, 0);
    return {
      id, object, created, model: modelName,
      choices: ends.map((e, index) => kind === 'chat'
        ? { index, message: { role: 'assistant', content: texts[index] ?? '' }, finish_reason: e.finishReason, logprobs: null }
        : { index, text: texts[index] ?? '', finish_reason: e.finishReason, logprobs: null }),
      usage: usage(promptTokens, completionTokens),
    };
  };

  /** The SSE events of a streamed answer: OpenAI chunk objects, then `[DONE]`. */
  async function* stream(kind: Kind, id: string, created: number, prompts: Array<{ tokens: Token[]; stop: string[] }>, r: SamplingRequest, signal: AbortSignal): AsyncGenerator<string> {
    const object = kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
    const chunk = (index: number, text: string | undefined, finish: string | null, role?: 'assistant'): string => sseData({
      id, object, created, model: modelName,
      choices: [kind === 'chat'
        ? { index, delta: text === undefined ? (role === undefined ? {} : { role, content: '' }) : { content: text }, finish_reason: finish, logprobs: null }
        : { index, text: text ?? '', finish_reason: finish, logprobs: null }],
    });
    let completionTokens = 0;
    const started = new Set<number>();
    for await (const item of choices(prompts, r, signal)) {
      if (kind === 'chat' && !started.has(item.index)) {
        started.add(item.index);
        yield chunk(item.index, undefined, null, 'assistant');
      }
      if ('text' in item) {
        yield chunk(item.index, item.text, null);
      } else {
        completionTokens += item.end.completionTokens;
        yield chunk(item.index, undefined, item.end.finishReason);
      }
    }
    if (r.includeUsage) {
      const promptTokens = prompts.reduce((n, p) => n + p.tokens.length, 0);
      yield sseData({ id, object, created, model: modelName, choices: [], usage: usage(promptTokens, completionTokens) });
    }
    yield SSE_DONE;
  }

  const embeddings = async (body: unknown): Promise<unknown> => {
    const r = decodeEmbeddingRequest(body);
    const { vectors, tokens } = await model.embed(r.inputs);
    return encodeEmbeddingResponse(r, modelName, Float32Array.from(vectors.flat()), vectors[0]?.length ?? 0, tokens);
  };

  return {
    chat: (body: unknown, signal: () => AbortSignal) => respond('chat', body, signal),
    completion: (body: unknown, signal: () => AbortSignal) => respond('completion', body, signal),
    embeddings,
  };
}
