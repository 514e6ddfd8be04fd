/**
 * The small HTTP layer shared by the server and replicas: a router with path parameters,
 * middleware as `(next) => handler` (auth, rate limits, request ids, metrics: each cross-cutting
 * step is one, never a branch in a handler), bounded body reading, and the one error
 * response shape. Built on node:http directly: the data plane cannot afford a framework's
 * per-request overhead, and the control plane needs nothing more.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { clientError, FerryError, toFerryError, type ErrorCode } from '../errors.js';
import { checkJsonLimits, DEFAULT_JSON_LIMITS, type JsonLimits } from './json-limits.js';

export { checkJsonLimits, DEFAULT_JSON_LIMITS, type JsonLimits } from './json-limits.js';
export { inject, type InjectedRequest, type InjectedResponse, type Injection } from './inject.js';

export interface Context {
  req: IncomingMessage;
  res: ServerResponse;
  method: string;
  /** Path without the query string, not decoded. */
  path: string;
  query: URLSearchParams;
  /** Decoded path parameters. */
  params: Record<string, string>;
  /** Set by the authentication middleware: who is calling. */
  principal?: string;
  /** Set with `principal`: whether the caller is an admin. */
  admin?: boolean;
  /**
   * Headers every answer the listener writes carries (a returned body or an error), e.g. the
   * request id; a handler that writes its answer itself adds them to its own `writeHead`.
   */
  answerHeaders?: Record<string, string>;
}

/** What a handler returns: a JSON body to send, or nothing when it wrote the response itself. */
export interface Reply {
  status?: number;
  body: unknown;
  headers?: Record<string, string>;
}

export type Handler = (ctx: Context) => Promise<Reply | undefined> | Reply | undefined;
/** A cross-cutting step (auth, request ids, rate limits, …). `meta` is the route's metadata, e.g. its access rule. */
export type Middleware<M = unknown> = (next: Handler, meta: M | undefined, route: { method: string; pattern: string }) => Handler;

interface Route<H, M> {
  method: string;
  /** The pattern as added, e.g. "/api/2.0/serving-endpoints/:name". */
  pattern: string;
  segments: string[];
  /** Trailing `*name` parameter that captures the rest of the path. */
  rest: string | undefined;
  handler: H;
  meta: M | undefined;
}

/**
 * Routes requests to handlers of type `H` (HTTP handlers by default; replicas also route frames),
 * each with metadata of type `M` that middlewares read (the server's routes carry access rules).
 */
export class Router<H = Handler, M = unknown> {
  private readonly routes: Array<Route<H, M>> = [];
  /** Routes by their first literal segment, so a match looks at a handful of routes, not all. */
  private readonly byFirst = new Map<string, Array<Route<H, M>>>();
  /** Routes whose first segment is a parameter (or that have none): checked for every path. */
  private readonly anyFirst: Array<Route<H, M>> = [];

  /**
   * Adds a route. Pattern segments: literal, `:param` (one segment), or a final `*param`
   * (the rest of the path, at least one segment).
   */
  add(method: string, pattern: string, handler: H, meta?: M): this {
    const segments = pattern.split('/').filter((s) => s !== '');
    const last = segments[segments.length - 1];
    const rest = last?.startsWith('*') ? last.slice(1) : undefined;
    if (rest !== undefined) segments.pop();
    const route: Route<H, M> = { method, pattern, segments, rest, handler, meta };
    this.routes.push(route);
    const first = segments[0];
    if (first === undefined || first.startsWith(':')) this.anyFirst.push(route);
    else this.byFirst.set(first, [...(this.byFirst.get(first) ?? []), route]);
    return this;
  }

  /** Every route with its handler and metadata, in match order (for route-table tests, docs and gateway workers). */
  list(): Array<{ method: string; pattern: string; handler: H; meta: M | undefined }> {
    return this.routes.map((r) => ({ method: r.method, pattern: r.pattern, handler: r.handler, meta: r.meta }));
  }

  /** Finds the route for a request; throws 404 (no route) or 405 (route exists, other method). */
  match(method: string, path: string): { route: Route<H, M>; params: Record<string, string> } {
    // Empty segments are kept ("a//b" is not "a/b") so that a rest parameter sees them and key
    // validation can refuse them; one trailing slash is ignored.
    const parts = path.split('/').slice(1);
    if (parts.length > 0 && parts[parts.length - 1] === '') parts.pop();
    let methodMismatch = false;
    const candidates = this.byFirst.get(parts[0] ?? '');
    for (const route of candidates === undefined ? this.anyFirst : this.anyFirst.length === 0 ? candidates : [...candidates, ...this.anyFirst]) {
      const params = matchSegments(route, parts);
      if (!params) continue;
      if (route.method !== method && !(method === 'HEAD' && route.method === 'GET')) {
        methodMismatch = true;
        continue;
      }
      return { route, params };
    }
    if (methodMismatch) throw new FerryError('METHOD_NOT_ALLOWED', `Method ${method} is not allowed on ${path}.`);
    throw new FerryError('ENDPOINT_NOT_FOUND', `No API route ${method} ${path}.`);
  }
}

function matchSegments(route: Route<unknown, unknown>, parts: string[]): Record<string, string> | undefined {
  const n = route.segments.length;
  if (route.rest === undefined ? parts.length !== n : parts.length <= n) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < n; i++) {
    const seg = route.segments[i] as string;
    const part = parts[i] as string;
    if (seg.startsWith(':')) params[seg.slice(1)] = decodeSegment(part);
    else if (seg !== part) return undefined;
  }
  if (route.rest !== undefined) params[route.rest] = parts.slice(n).map(decodeSegment).join('/');
  return params;
}

function decodeSegment(s: string): string {
  if (!s.includes('%')) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    throw new FerryError('INVALID_PARAMETER_VALUE', `Malformed percent-encoding in path segment ${JSON.stringify(s)}.`);
  }
}


/**
 * Runs `handler` and tells `done` how the request ended, before the result settles: the reply's
 * status (or the one the handler wrote itself) and no error code, or a thrown error's status and
 * code. The audit trail and the gateway's request events share it.
 */
export async function withOutcome(handler: Handler, ctx: Context, done: (status: number, errorCode: ErrorCode | undefined) => void | Promise<void>): Promise<Reply | undefined> {
  let status = 200;
  let errorCode: ErrorCode | undefined;
  try {
    const reply = await handler(ctx);
    status = reply?.status ?? ctx.res.statusCode;
    return reply;
  } catch (err) {
    const e = toFerryError(err);
    status = e.status;
    errorCode = e.code;
    throw err;
  } finally {
    await done(status, errorCode);
  }
}

/**
 * Reads a request body up to `maxBytes`, refusing more while it streams (413) rather than
 * after buffering it all. A declared Content-Length over the limit is refused before reading.
 */
export function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) return Promise.reject(tooLarge(maxBytes));
  // Plain 'data'/'end' events: an async iterator over the stream costs several µs per request
  // on the data path.
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const onData = (chunk: Buffer): void => {
      total += chunk.length;
      if (total > maxBytes) {
        cleanup();
        req.resume(); // discard the rest without buffering it
        reject(tooLarge(maxBytes));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, total));
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(new FerryError('MALFORMED_REQUEST', `Reading the request body failed: ${err.message}`));
    };
    const cleanup = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('aborted', onAborted);
    };
    const onAborted = (): void => onError(new Error('client aborted'));
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('aborted', onAborted);
  });
}

function tooLarge(maxBytes: number): FerryError {
  return new FerryError('PAYLOAD_TOO_LARGE', `Request body exceeds the limit of ${maxBytes} bytes.`);
}

/**
 * Parses a JSON body; malformed JSON → 400 MALFORMED_REQUEST, nesting or a value count over
 * `limits` → 400 BAD_REQUEST (checked before parsing). An empty body is `{}`.
 */
export function parseJson(body: Buffer, limits: JsonLimits = DEFAULT_JSON_LIMITS): unknown {
  if (body.length === 0) return {};
  checkJsonLimits(body, limits);
  try {
    return JSON.parse(body.toString('utf8')) as unknown;
  } catch (err) {
    throw new FerryError('MALFORMED_REQUEST', `Request body is not valid JSON: ${(err as Error).message}.`);
  }
}

export async function readJson(req: IncomingMessage, maxBytes: number, limits: JsonLimits = DEFAULT_JSON_LIMITS): Promise<unknown> {
  return parseJson(await readBody(req, maxBytes), limits);
}

/** Reads a JSON object body: anything but an object is a 400. */
export async function readJsonObject(req: IncomingMessage, maxBytes: number, limits: JsonLimits = DEFAULT_JSON_LIMITS): Promise<Record<string, unknown>> {
  const value = await readJson(req, maxBytes, limits);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new FerryError('MALFORMED_REQUEST', 'Request body must be a JSON object.');
  }
  return value as Record<string, unknown>;
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/**
 * Writes any error as the shared error body (or `body(e)` when given: another API's shape). A
 * FerryError's message is meant for the client and is sent as it is (a 5xx too, e.g. a model's
 * MODEL_ERROR); an unexpected error is answered with a generic 500 naming the request id (the
 * `x-request-id` of `extraHeaders`), its details only in the log (`listener`'s `onError`).
 */
export function sendError(res: ServerResponse, err: unknown, body: (e: FerryError) => unknown = (e) => e.toBody(), extraHeaders?: Record<string, string>): void {
  const e = clientError(toFerryError(err), extraHeaders?.['x-request-id']);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const headers: Record<string, string> = { ...extraHeaders };
  if (e.retryAfterS !== undefined) headers['retry-after'] = String(e.retryAfterS);
  sendJson(res, e.status, body(e), headers);
}

/**
 * A node:http request listener that routes, runs the handler under the middlewares, and turns
 * every failure into the shared error shape. Nothing a client sends can make it throw.
 */
export function listener<M>(
  router: Router<Handler, M>, middlewares: Array<Middleware<M>> = [], onError?: (err: unknown, ctx: Context) => void,
  /** The error body for a request's path, when some routes answer errors in another API's shape. */
  errorBody?: (path: string, e: FerryError) => unknown,
) {
  // Each route's handler composed with the middlewares (the first listed runs first) once, not per request.
  const composed = new Map<Route<Handler, M>, Handler>();
  const handlerFor = (route: Route<Handler, M>): Handler => {
    let h = composed.get(route);
    if (!h) {
      h = middlewares.reduceRight<Handler>((next, mw) => mw(next, route.meta, route), route.handler);
      composed.set(route, h);
    }
    return h;
  };
  return (req: IncomingMessage, res: ServerResponse): void => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const ctx: Context = {
      req,
      res,
      method: req.method ?? 'GET',
      path: q === -1 ? url : url.slice(0, q),
      query: q === -1 ? EMPTY_QUERY : new URLSearchParams(url.slice(q + 1)),
      params: {},
    };
    const run = async (): Promise<void> => {
      const { route, params } = router.match(ctx.method, ctx.path);
      ctx.params = params;
      const reply = await handlerFor(route)(ctx);
      if (reply && !res.headersSent) sendJson(res, reply.status ?? 200, reply.body, ctx.answerHeaders === undefined ? reply.headers : { ...ctx.answerHeaders, ...reply.headers });
    };
    run().catch((err: unknown) => {
      const status = toFerryError(err).status;
      if (onError && status >= 500) onError(err, ctx);
      // A caller refused for who it is (401, 403) gets no more of the server's time: the answer
      // closes the connection instead of waiting for a body it may trickle in for bodyTimeout.
      const close = !req.complete && (status === 401 || status === 403);
      sendError(res, err, errorBody && ((e) => errorBody(ctx.path, e)), close ? { ...ctx.answerHeaders, connection: 'close' } : ctx.answerHeaders);
      // Drain (bounded) what is left of any other refused body so the client reads the answer.
      if (!req.complete) req.resume();
    });
  };
}

/** Shared by requests without a query string; nothing writes to a request's query. */
const EMPTY_QUERY = new URLSearchParams();
