/**
 * OpenAI-compatible request and response shapes (chat completions, completions, embeddings), as
 * the llm replica serves them and the gateway routes them: request validation with errors naming
 * the field, response objects, SSE chunk framing, and OpenAI's error shape
 * (`{"error": {"message", "type", "param", "code"}}`) for the `/v1/*` routes.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { configError } from '../config/index.js';
import { FerryError, invalidParameter, type ErrorBody } from '../errors.js';

/** At most this many choices per request (`n`): each is a full generation. */
export const MAX_CHOICES = 8;

const stop = z.union([z.string(), z.array(z.string()).max(4)]).nullish();
const sampling = {
  // `model` names the endpoint at the gateway; the replica serves one model and ignores it.
  model: z.string().optional(),
  max_tokens: z.number().int().min(0).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  n: z.number().int().min(1).max(MAX_CHOICES).nullish(),
  stop,
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullish(),
  seed: z.number().int().nullish(),
};
const content = z.union([z.string(), z.array(z.object({ type: z.literal('text'), text: z.string() }))]);
const chatSchema = z.object({
  ...sampling,
  messages: z.array(z.object({ role: z.enum(['system', 'developer', 'user', 'assistant']), content })).min(1),
  max_completion_tokens: z.number().int().min(0).nullish(),
});
const completionSchema = z.object({ ...sampling, prompt: z.union([z.string(), z.array(z.string()).min(1).max(16)]) });
/** `encoding_format`: the official SDKs send "base64" unless told otherwise (the Node SDK always, the Python one with numpy). */
export const EMBEDDING_FORMATS = ['float', 'base64'] as const;
export type EmbeddingFormat = (typeof EMBEDDING_FORMATS)[number];
const embeddingSchema = z.object({
  model: z.string().optional(),
  input: z.union([z.string(), z.array(z.string()).min(1).max(256)]),
  encoding_format: z.enum(EMBEDDING_FORMATS, { error: 'expected "float" or "base64"' }).optional(),
  // Only the model's own size: a request for another one is refused rather than silently ignored.
  dimensions: z.number().int().positive().optional(),
  user: z.string().optional(),
});

/** Sampling options common to chat and completions, with OpenAI's defaults filled in. */
export interface SamplingRequest {
  stream: boolean;
  includeUsage: boolean;
  /** undefined: the model's default (`default_max_tokens`). */
  maxTokens: number | undefined;
  temperature: number;
  topP: number | undefined;
  n: number;
  stop: string[];
  seed: number | undefined;
}

export interface ChatRequest extends SamplingRequest {
  messages: Array<{ role: 'system' | 'user' | 'assistant'; content: string }>;
}

export interface CompletionRequest extends SamplingRequest {
  prompts: string[];
}

export interface EmbeddingRequest {
  inputs: string[];
  format: EmbeddingFormat;
  /** The size the client asked for, if it did; the model's own size is the only one served. */
  dimensions: number | undefined;
}

function parse<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new FerryError('MALFORMED_REQUEST', 'Request body must be a JSON object.');
  const r = schema.safeParse(body);
  if (!r.success) throw configError(r.error, body);
  return r.data;
}

function samplingOf(b: z.output<z.ZodObject<typeof sampling>>, maxTokens: number | null | undefined): SamplingRequest {
  return {
    stream: b.stream === true,
    includeUsage: b.stream_options?.include_usage === true,
    maxTokens: maxTokens ?? undefined,
    // OpenAI's default temperature is 1.
    temperature: b.temperature ?? 1,
    topP: b.top_p ?? undefined,
    n: b.n ?? 1,
    stop: b.stop === undefined || b.stop === null ? [] : typeof b.stop === 'string' ? [b.stop] : b.stop,
    seed: b.seed ?? undefined,
  };
}

export function decodeChatRequest(body: unknown): ChatRequest {
  const b = parse(chatSchema, body);
  return {
    ...samplingOf(b, b.max_completion_tokens ?? b.max_tokens),
    messages: b.messages.map((m) => ({
      role: m.role === 'developer' ? 'system' : m.role,
      content: typeof m.content === 'string' ? m.content : m.content.map((p) => p.text).join(''),
    })),
  };
}

export function decodeCompletionRequest(body: unknown): CompletionRequest {
  const b = parse(completionSchema, body);
  return { ...samplingOf(b, b.max_tokens), prompts: typeof b.prompt === 'string' ? [b.prompt] : b.prompt };
}

export function decodeEmbeddingRequest(body: unknown): EmbeddingRequest {
  const b = parse(embeddingSchema, body);
  return { inputs: typeof b.input === 'string' ? [b.input] : b.input, format: b.encoding_format ?? 'float', dimensions: b.dimensions };
}

/** One embedding vector: `float`: a JSON array; `base64`: its float32 little-endian bytes, base64 (OpenAI's encoding). */
export type EmbeddingVector = number[] | string;

/**
 * An embeddings answer in OpenAI's shape. Each vector is `dim` values of `vectors` (row-major,
 * one row per input) in the request's format. `usage` is the prompt tokens when the model counts
 * them (an llm does; a feature-extraction pipeline does not say, and the answer has no `usage`).
 * @throws FerryError INVALID_PARAMETER_VALUE when the request asked for `dimensions` other than `dim`.
 */
export function encodeEmbeddingResponse(
  req: EmbeddingRequest, modelName: string, vectors: Float32Array, dim: number, promptTokens: number | undefined,
): { object: 'list'; model: string; data: Array<{ object: 'embedding'; index: number; embedding: EmbeddingVector }>; usage?: { prompt_tokens: number; total_tokens: number } } {
  if (req.dimensions !== undefined && req.dimensions !== dim) throw invalidParameter('dimensions', req.dimensions, `${dim}, the size of this model's embeddings (or no dimensions)`);
  const data = Array.from({ length: vectors.length / dim }, (_, index) => {
    const v = vectors.subarray(index * dim, (index + 1) * dim);
    return { object: 'embedding' as const, index, embedding: req.format === 'base64' ? float32Base64(v) : Array.from(v) };
  });
  return { object: 'list', model: modelName, data, ...(promptTokens === undefined ? {} : { usage: { prompt_tokens: promptTokens, total_tokens: promptTokens } }) };
}

/** float32 values as base64 of their little-endian bytes (what OpenAI's base64 embeddings are). */
function float32Base64(v: Float32Array): string {
  const bytes = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (IS_LITTLE_ENDIAN) return bytes.toString('base64');
  const le = Buffer.alloc(v.byteLength);
  for (let i = 0; i < v.length; i++) le.writeFloatLE(v[i] as number, i * 4);
  return le.toString('base64');
}

const IS_LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * The content type of an OpenAI event stream. The charset is named: readers built on Python's
 * `requests` otherwise decode `text/*` as ISO-8859-1 and garble non-ASCII text.
 */
export const EVENT_STREAM = 'text/event-stream; charset=utf-8';

/** Which OpenAI request a body is, for `/invocations` on an llm endpoint (Databricks accepts all three there). */
export function openAiKind(body: unknown): 'chat' | 'completion' | 'embedding' | undefined {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  if ('messages' in body) return 'chat';
  if ('prompt' in body) return 'completion';
  if ('input' in body) return 'embedding';
  return undefined;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export function usage(promptTokens: number, completionTokens: number): Usage {
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
}

/** An id in OpenAI's style, e.g. "chatcmpl-3f9c…". */
export function completionId(prefix: 'chatcmpl' | 'cmpl'): string {
  return `${prefix}-${randomBytes(12).toString('hex')}`;
}

/** One Server-Sent Event carrying `value` as JSON. */
export function sseData(value: unknown): string {
  return `data: ${JSON.stringify(value)}\n\n`;
}

/** The last event of an OpenAI stream. */
export const SSE_DONE = 'data: [DONE]\n\n';

/** OpenAI's error `type` for an HTTP status. */
function errorType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  return status >= 500 ? 'server_error' : 'invalid_request_error';
}

export interface OpenAiErrorBody {
  error: { message: string; type: string; param: string | null; code: string };
}

/** Ferry's error body in OpenAI's shape; `code` keeps Ferry's error code. */
export function openAiError(status: number, body: ErrorBody): OpenAiErrorBody {
  return { error: { message: body.message, type: errorType(status), param: null, code: body.error_code } };
}
