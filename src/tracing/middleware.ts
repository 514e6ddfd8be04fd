/**
 * The request-id and trace-context step of the server (a `(next) => handler` middleware): it runs first, so every
 * answer, a 401 included, carries `x-request-id` and `traceparent`; the gateway reads what it
 * decided with `traceOf(ctx)` to pass them on to replicas, log and export spans.
 */
import type { Context, Handler } from '../http/index.js';
import { formatTraceparent, newSpanId, newTraceId, parseTraceparent, requestIdFrom, SAMPLED_FLAG, tracestateFrom } from './context.js';

/** What the server decided about one request's identity and trace. */
export interface RequestTrace {
  /** The client's sane `x-request-id`, else a generated one; answered in `x-request-id`. */
  requestId: string;
  /** The caller's trace (valid incoming traceparent), else a new one. */
  traceId: string;
  /** This request's own span in the server (the gateway span). */
  spanId: string;
  /** The caller's span; undefined when this request starts the trace. */
  parentSpanId: string | undefined;
  /** Whether spans of this request are recorded: the caller's flag bit 0, else yes (Ferry records the traces it starts). */
  sampled: boolean;
  /** A traceparent naming this request's span: answered to the client, passed on to replicas. */
  traceparent: string;
  /** The caller's tracestate, passed on unchanged with a valid traceparent; else undefined. */
  tracestate: string | undefined;
  /** `performance.now()` when the request reached this step. */
  startMs: number;
}

/**
 * Where a request's trace is kept: a property of its Context under a private symbol. Not a
 * WeakMap: measured here, a WeakMap entry per request cost ~0.2–0.3 µs, a property a few ns.
 */
const TRACE = Symbol('ferry.trace');
type TracedContext = Context & { [TRACE]?: RequestTrace };

/**
 * Middleware: gives each request its `RequestTrace`, and its answer the `x-request-id` and
 * `traceparent` headers: through `ctx.answerHeaders` for every answer the listener writes (a
 * returned body, an error), and in the gateway's own `writeHead` for forwarded answers (see
 * `traceOf`; a `setHeader` before `writeHead` would cost ~1.5 µs per request, node's `writeHead`
 * then taking its slow path, measured here). The step is synchronous: no promise of its own per
 * request.
 */
export function requestTracing(): (next: Handler) => Handler {
  return (next) => (ctx) => {
    const headers = ctx.req.headers;
    const startMs = performance.now();
    const requestId = requestIdFrom(headers['x-request-id']);
    const parent = parseTraceparent(headers.traceparent);
    const traceId = parent?.traceId ?? newTraceId();
    const spanId = newSpanId();
    const flags = parent?.flags ?? SAMPLED_FLAG;
    const traceparent = formatTraceparent(traceId, spanId, flags);
    (ctx as TracedContext)[TRACE] = {
      requestId, traceId, spanId, parentSpanId: parent?.parentId, sampled: (flags & SAMPLED_FLAG) !== 0,
      traceparent, tracestate: parent === undefined ? undefined : tracestateFrom(headers.tracestate), startMs,
    };
    ctx.answerHeaders = { 'x-request-id': requestId, traceparent };
    return next(ctx);
  };
}

/** The trace `requestTracing` gave this request; undefined when the step is not installed. */
export function traceOf(ctx: Context): RequestTrace | undefined {
  return (ctx as TracedContext)[TRACE];
}

/** Microseconds since the epoch of a `performance.now()` reading (span timestamps). */
export function unixMicros(perfNowMs: number): number {
  return Math.round((performance.timeOrigin + perfNowMs) * 1000);
}
