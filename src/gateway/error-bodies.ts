/**
 * The shape of an error body per API family: Ferry's, OpenAI's on `/v1/*`, the Open Inference
 * Protocol's on `/v2/*`; and a replica's error answer read back as Ferry's error body.
 */
import type { FerryError, ErrorBody } from '../errors.js';
import { openAiError } from '../protocols/openai.js';

/** The API family of a path, for the shape of its errors. */
export type Protocol = 'ferry' | 'openai' | 'v2';

/**
 * The error body of a failed request: OpenAI's shape on the OpenAI-compatible routes (`/v1/*`),
 * Ferry's everywhere else. For the server's listener, so that authentication and access errors
 * of those routes have that shape too.
 */
export function errorBodyFor(path: string, e: FerryError): unknown {
  return errorBodyIn(protocolOf(path), e.status, e.toBody());
}

function protocolOf(path: string): Protocol {
  if (path.startsWith('/v1/')) return 'openai';
  return path === '/v2' || path.startsWith('/v2/') ? 'v2' : 'ferry';
}

/**
 * An error body in the shape of its API family: OpenAI's on `/v1/*`, the Open Inference
 * Protocol's `{"error": "..."}` on `/v2/*` (what KServe and Triton clients decode), Ferry's elsewhere.
 */
export function errorBodyIn(protocol: Protocol, status: number, body: ErrorBody): unknown {
  if (protocol === 'openai') return openAiError(status, body);
  if (protocol === 'v2') return { error: body.message };
  return body;
}

/** A replica's error answer as Ferry's error body (what an unexpected body says is kept as its message). */
export function errorBodyOf(body: Buffer): ErrorBody {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as Partial<ErrorBody>;
    if (typeof parsed.error_code === 'string' && typeof parsed.message === 'string') return { error_code: parsed.error_code, message: parsed.message };
  } catch {
    // Not JSON: described below.
  }
  return { error_code: 'MODEL_ERROR', message: body.toString('utf8').slice(0, 1000) };
}
