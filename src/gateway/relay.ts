/**
 * The client's side of a forwarded request: relaying a streamed answer as it comes, and noticing
 * when the client goes away before its answer is complete (which cancels the replica's work).
 */
import { toFerryError } from '../errors.js';
import type { Context } from '../http/index.js';
import { EVENT_STREAM, openAiError, sseData } from '../protocols/openai.js';
import type { ResponseStream } from '../channel/index.js';
import { gatewayStreams, type GatewayStreamEvent } from './events.js';
import type { TokenMeter } from './rate-limit.js';

/** Aborted when the client's connection closes before the response was finished. */
export function clientGone(ctx: Context): AbortSignal {
  const c = new AbortController();
  ctx.res.once('close', () => {
    if (!ctx.res.writableFinished) c.abort();
  });
  return c.signal;
}

/**
 * Writes a streamed answer's chunks as they arrive. A stream that fails after the head can no
 * longer change the status: an event stream gets an OpenAI error event, then ends. When the client
 * goes away the stream is cancelled, which tells the replica to stop. Each chunk written goes to
 * `meter` when the endpoint counts tokens.
 */
export async function relay(
  ctx: Context, stream: ResponseStream, contentType: string | undefined, about: { endpoint: string; servedEntity: string; startMs: number }, meter: TokenMeter | undefined,
): Promise<void> {
  let cancelled = false;
  ctx.res.once('close', () => {
    if (ctx.res.writableFinished) return;
    cancelled = true;
    stream.cancel();
  });
  let firstMs: number | undefined;
  let chunks = 0;
  let outcome: GatewayStreamEvent['outcome'] = 'complete';
  try {
    for await (const chunk of stream) {
      firstMs ??= performance.now();
      chunks++;
      meter?.chunk(chunk);
      ctx.res.write(chunk);
    }
  } catch (err) {
    outcome = cancelled ? 'cancelled' : 'failed';
    const e = toFerryError(err);
    if (!ctx.res.destroyed && contentType === EVENT_STREAM) ctx.res.write(sseData(openAiError(e.status, e.toBody())));
  }
  ctx.res.end();
  if (gatewayStreams.hasSubscribers) {
    const event: GatewayStreamEvent = {
      endpoint: about.endpoint, servedEntity: about.servedEntity, firstChunkMs: firstMs === undefined ? undefined : firstMs - about.startMs, chunks,
      streamMs: firstMs === undefined ? 0 : performance.now() - firstMs, outcome,
    };
    gatewayStreams.publish(event);
  }
}
