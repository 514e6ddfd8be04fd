/**
 * The gateway (data plane): the inference routes clients call. Per request: authenticate (the
 * server's middleware), apply the endpoint's rate limits (./rate-limit.ts), read the body within
 * the endpoint's limit (or the server's), pick a served entity by traffic weight and
 * a replica by power of two choices, forward through the replica's channel, answer with the
 * replica's response and a `served-model-name` header. The body is forwarded as received: the
 * replica parses and validates it. The request id and trace context the server's `requestTracing`
 * step chose go to the replica with the request (docs/observability.md, "Logs and tracing").
 */
import { access, identityOf, type Authorizer, type NameOf, type ServerRouter } from '../auth/index.js';
import { FerryError, invalidParameter, notFound, toFerryError, type ErrorBody } from '../errors.js';
import { parseJson, readBody, withOutcome, type Context, type Handler, type Reply } from '../http/index.js';
import { EVENT_STREAM, openAiError, sseData } from '../protocols/openai.js';
import { readBinaryAnswer } from '../protocols/index.js';
import { ChannelError, type ChannelRequest, type ChannelResponse, type RequestMeta, type ResponseStream } from '../channel/index.js';
import type { LogFn, LogLevel } from '../logs/index.js';
import { traceOf, unixMicros, type OtlpExporter, type RequestTrace, type Span } from '../tracing/index.js';
import { gatewayRequests, gatewayStreams, newObservation, type GatewayRequestEvent, type GatewayStreamEvent, type Observation } from './events.js';
import { rateLimited, type RouteHandler, type TokenMeter } from './rate-limit.js';
import { MODEL_HEADER, type FamilyMember } from '../multi/index.js';
import { modelAffinity, pickEntity, type Backend, type EndpointRoute, type EntityRoute, type RoutingTable } from './routing.js';
import type { GatewayStats } from './stats.js';
import { FERRY_VERSION } from '../version.js';

export { RoutingTable, pickAffine, pickBackend, pickEntity, modelAffinity, AFFINITY_LOAD_FACTOR, type Backend, type EndpointRoute, type EntityRoute } from './routing.js';
export { EntityTraffic, type TrafficOptions } from './traffic.js';
export { RATE_LIMIT_KEYS, RENEWAL_PERIOD_MS, RateLimiter, TokenMeter, type Admission, type RateLimit, type RateLimitKey, type RenewalPeriod } from './rate-limit.js';
export { GatewayStats, statsKey, type StatsSummary } from './stats.js';
export { drainAndClose } from './drain.js';
export { GATEWAY_REQUEST_CHANNEL, GATEWAY_STREAM_CHANNEL, gatewayRequests, gatewayStreams, type GatewayRequestEvent, type GatewayStreamEvent } from './events.js';

export interface GatewayOptions {
  maxBodyBytes: number;
  /** Per served entity status and latency, for canary analysis (in a gateway worker: sent to the primary). */
  stats: Pick<GatewayStats, 'record'>;
  /** The server's log; at `logLevel` debug the gateway logs one line per request. */
  log: LogFn;
  logLevel: LogLevel;
  /** Where spans go (`otlpEndpoint`); undefined: no spans are made. */
  exporter: OtlpExporter | undefined;
  /** Filters `GET /v1/models` to the endpoints the caller may view. */
  authz: Authorizer;
}

/**
 * The error body of a failed request: OpenAI's shape on the OpenAI-compatible routes (`/v1/*`),
 * Ferry's everywhere else. For the server's listener, so that authentication and access errors
 * of those routes have that shape too.
 */
export function errorBodyFor(path: string, e: FerryError): unknown {
  return errorBodyIn(protocolOf(path), e.status, e.toBody());
}

/** The API family of a path, for the shape of its errors. */
type Protocol = 'ferry' | 'openai' | 'v2';

function protocolOf(path: string): Protocol {
  if (path.startsWith('/v1/')) return 'openai';
  return path === '/v2' || path.startsWith('/v2/') ? 'v2' : 'ferry';
}

/**
 * An error body in the shape of its API family: OpenAI's on `/v1/*`, the Open Inference
 * Protocol's `{"error": "..."}` on `/v2/*` (what KServe and Triton clients decode), Ferry's elsewhere.
 */
function errorBodyIn(protocol: Protocol, status: number, body: ErrorBody): unknown {
  if (protocol === 'openai') return openAiError(status, body);
  if (protocol === 'v2') return { error: body.message };
  return body;
}

/**
 * A request's observation, kept on its Context under a private symbol: a WeakMap entry per request
 * cost ~0.2–0.3 µs here (see src/tracing/middleware.ts), a property a few ns.
 */
const OBSERVATION = Symbol('ferry.observation');
type ObservedContext = Context & { [OBSERVATION]?: Observation };

/** Seconds a client should wait before retrying when no replica is ready. */
const NO_REPLICA_RETRY_AFTER_S = 1;

/** Access: inference needs CAN_QUERY on the endpoint; metadata and readiness CAN_VIEW. */
export function gatewayRoutes(router: ServerRouter, table: RoutingTable, opts: GatewayOptions): void {
  const route = (ctx: Context): EndpointRoute => {
    const name = ctx.params.name ?? '';
    const r = table.get(name);
    if (!r) throw notFound(`Serving endpoint '${name}'`);
    return r;
  };
  const entitiesFor = (ctx: Context, r: EndpointRoute): readonly EntityRoute[] => {
    const version = ctx.params.version;
    // On a family endpoint the version segment names the model (see `familyModelOf`).
    if (version === undefined || isFamily(r)) return r.entities;
    const matching = r.entities.filter((e) => e.modelVersion === version || e.name === version);
    if (matching.length === 0) throw notFound(`Version '${version}' of serving endpoint '${r.name}'`);
    // A version path addresses those entities directly, whatever their traffic share.
    return matching.map((e) => ({ ...e, trafficPercentage: 1 }));
  };
  const withRoute = (h: RouteHandler<EndpointRoute>): Handler => (ctx) => h(ctx, route(ctx));
  /** Reads an inference body within the endpoint's own limit when it has one, else the server's. */
  const readInferenceBody = async (ctx: Context, r: EndpointRoute): Promise<Buffer> => {
    if (r.maxBodyBytes === undefined) return readBody(ctx.req, opts.maxBodyBytes);
    try {
      return await readBody(ctx.req, r.maxBodyBytes);
    } catch (err) {
      if (!(err instanceof FerryError) || err.code !== 'PAYLOAD_TOO_LARGE') throw err;
      throw new FerryError('PAYLOAD_TOO_LARGE', `Request body exceeds the limit of ${r.maxBodyBytes} bytes of serving endpoint '${r.name}' (ai_gateway.input_limits.max_body_bytes).`);
    }
  };
  /**
   * Forwards to a replica of the endpoint. `openAi` routes take the body their access rule already
   * read, answer errors in OpenAI's shape, and cancel the replica's work when the client goes away
   * before the answer is complete; any route relays a streamed answer as it comes and cancels it
   * when the client goes away. The answer given to the client is reported to `meter` (token limits).
   */
  const forward = (replicaPath: (ctx: Context, r: EndpointRoute) => string, protocol: Protocol = 'ferry', familyRoute?: FamilyRoute): RouteHandler<EndpointRoute> => async (ctx, r, meter) => {
    const startMs = performance.now();
    const obs = (ctx as ObservedContext)[OBSERVATION];
    const trace = traceOf(ctx);
    const openAi = protocol === 'openai';
    const model = isFamily(r) ? familyModelOf(ctx, r, familyRoute) : undefined;
    const entities = entitiesFor(ctx, r);
    const first = pickEntity(entities, Math.random());
    if (!first) throw noReplica(r.name);
    // The binary tensor extension: the replica is told where the JSON header ends.
    const binarySuffix = familyRoute === 'infer' ? binaryInferSuffix(ctx) : '';
    const body = openAi ? await openAiBody(ctx, r) : ctx.method === 'POST' ? await readInferenceBody(ctx, r) : undefined;
    if (obs) {
      obs.requestBody = body;
      if (binarySuffix !== '') obs.requestHeaderBytes = Number(binarySuffix.slice('/binary/'.length));
    }
    const meta: RequestMeta | undefined = trace === undefined
      ? undefined
      : { requestId: trace.requestId, traceparent: trace.traceparent, tracestate: trace.tracestate, wantSpan: obs?.replicaSpans !== undefined };
    const req: ChannelRequest = { method: ctx.method, path: replicaPath(ctx, r) + binarySuffix, body, meta, signal: openAi ? clientGone(ctx) : undefined };
    // A family endpoint has no shadows (config validation): each copy would need its own model.
    for (const s of r.shadows) {
      // A shadow's span is not wanted: its answer is thrown away.
      if (s.entity !== first && Math.random() * 100 < s.mirrorPercentage) mirror(s.entity, meta?.wantSpan === true ? { ...req, meta: { ...meta, wantSpan: false } } : req, r.timeoutMs);
    }
    // With fallback on, a 5xx or an unreachable entity passes the request to the next entities in
    // route order (Databricks fallback_config); otherwise the first answer is final.
    const order = r.fallback ? [first, ...entities.filter((e) => e !== first)] : [first];
    for (const [i, entity] of order.entries()) {
      const last = i === order.length - 1;
      if (obs) {
        obs.servedEntity = entity.name;
        obs.modelName = entity.modelName;
        obs.modelVersion = entity.modelVersion;
      }
      try {
        const target = model === undefined || familyRoute === undefined ? undefined : await familyTarget(ctx, entity, model, familyRoute, req, binarySuffix);
        if (obs && target !== undefined) {
          obs.modelName = target.member.name;
          obs.modelVersion = String(target.member.version);
        }
        const res = await measured(entity, () => send(entity, target?.req ?? req, r.timeoutMs, obs, target?.affinity));
        if (res.span !== undefined) obs?.replicaSpans?.push({ ...res.span, entity, status: res.status });
        if (res.status >= 500 && !last) continue;
        // Thrown errors are logged by the server; this is the model's own error answer.
        if (res.status >= 500) opts.log('error', 'model answered with an error', { ...requestFields(trace), endpoint: r.name, served_entity: entity.name, status: res.status });
        const failed = protocol !== 'ferry' && res.status >= 400 && res.stream === undefined;
        const binary = protocol === 'v2' && res.status < 400 ? readBinaryAnswer(res.body) : undefined;
        const answer = failed ? Buffer.from(JSON.stringify(errorBodyIn(protocol, res.status, errorBodyOf(res.body)))) : binary?.body ?? res.body;
        if (obs) {
          obs.responseBody = answer;
          obs.responseHeaderBytes = binary?.headerBytes;
        }
        const head: Record<string, string | number> = { 'content-type': binary === undefined ? res.contentType ?? 'application/json' : 'application/octet-stream', 'served-model-name': entity.name };
        if (binary !== undefined) head[INFERENCE_HEADER_LENGTH] = binary.headerBytes;
        if (res.stream === undefined) head['content-length'] = answer.length;
        else head['cache-control'] = 'no-cache';
        // Here rather than by the tracing step: see requestTracing.
        if (trace !== undefined) {
          head['x-request-id'] = trace.requestId;
          head.traceparent = trace.traceparent;
        }
        ctx.res.writeHead(res.status, head);
        if (res.stream === undefined) {
          meter?.answer(answer);
          ctx.res.end(answer);
        } else {
          await relay(ctx, res.stream, res.contentType, { endpoint: r.name, servedEntity: entity.name, startMs }, meter);
        }
        return undefined;
      } catch (err) {
        if (last || !(err instanceof FerryError) || err.status < 500) throw err;
      }
    }
    throw noReplica(r.name);
  };

  /** The body of an OpenAI route, read by its access rule; over the endpoint's own limit → 413. */
  const openAiBody = async (ctx: Context, r: EndpointRoute): Promise<Buffer> => {
    const { raw } = await openAiRequest(ctx);
    if (r.maxBodyBytes !== undefined && raw.length > r.maxBodyBytes) {
      throw new FerryError('PAYLOAD_TOO_LARGE', `Request body exceeds the limit of ${r.maxBodyBytes} bytes of serving endpoint '${r.name}' (ai_gateway.input_limits.max_body_bytes).`);
    }
    return raw;
  };
  /** Read once: the access rule needs `model` before the handler runs. */
  const openAiBodies = new WeakMap<Context, Promise<{ raw: Buffer; model: string }>>();
  const openAiRequest = (ctx: Context): Promise<{ raw: Buffer; model: string }> => {
    let p = openAiBodies.get(ctx);
    if (p === undefined) {
      p = (async () => {
        const raw = await readBody(ctx.req, opts.maxBodyBytes);
        const parsed = parseJson(raw);
        const model = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>).model : undefined;
        if (typeof model !== 'string' || model === '') throw invalidParameter('model', model, 'the name of a serving endpoint');
        return { raw, model };
      })();
      openAiBodies.set(ctx, p);
    }
    return p;
  };
  const modelOf: NameOf = async (ctx) => (await openAiRequest(ctx)).model;
  /** An OpenAI route: the endpoint is the body's `model`. */
  const openAiRoute = (replicaPath: string): Handler => async (ctx) => {
    const { model } = await openAiRequest(ctx);
    ctx.params.name = model; // for the request event, logs and spans, as on the other routes
    return rateLimited(forward(() => replicaPath, 'openai'))(ctx, route(ctx));
  };

  /**
   * The model a request to a family endpoint names: the `X-Ferry-Model` header, else (OIP v2) the
   * version segment of the path. 400 when neither is there, or on a route families do not serve.
   */
  const familyModelOf = (ctx: Context, r: EndpointRoute, familyRoute: FamilyRoute | undefined): { raw: string; field: string } => {
    if (familyRoute === undefined) {
      throw new FerryError('INVALID_PARAMETER_VALUE', `Serving endpoint '${r.name}' serves a model family: call /serving-endpoints/${r.name}/invocations or the OIP v2 routes with an X-Ferry-Model header.`);
    }
    const header = ctx.req.headers[MODEL_HEADER];
    if (typeof header === 'string' && header !== '') return { raw: header, field: 'X-Ferry-Model' };
    const version = ctx.params.version;
    if (version !== undefined) return { raw: version, field: 'versions/{model} path segment' };
    throw invalidParameter('X-Ferry-Model', undefined, `a header naming the model (name, name/<version> or name@<alias>): serving endpoint '${r.name}' serves a model family`);
  };
  /**
   * Where a family request goes on `entity`: the READY version it names (404 when there is none
   * in the family), which the caller must be able to read (403), the replica path that carries
   * it, and the model's affinity hash for routing.
   */
  const familyTarget = async (
    ctx: Context, entity: EntityRoute, model: { raw: string; field: string }, familyRoute: FamilyRoute, req: ChannelRequest, binarySuffix: string,
  ): Promise<{ member: FamilyMember; req: ChannelRequest; affinity: number }> => {
    const member = await (entity.family as NonNullable<EntityRoute['family']>).resolve(model.raw, model.field);
    await opts.authz.require(identityOf(ctx), 'registered-model', member.name, 'CAN_READ');
    const path = `/family/${member.name}/${member.version}${familyRoute === 'metadata' ? '' : `/${familyRoute}`}${binarySuffix}`;
    // Where the member's artifact is: a replica that fetches members itself (a pod) needs it on a miss.
    const meta: RequestMeta = { ...(req.meta ?? NO_TRACE), member: member.artifactMeta };
    return { member, req: { ...req, path, meta }, affinity: modelAffinity(`${member.name}/${member.version}`) };
  };

  /** Runs one attempt on `entity`, counted in its concurrency and recorded in the stats. */
  const measured = async (entity: EntityRoute, attempt: () => Promise<ChannelResponse>): Promise<ChannelResponse> => {
    entity.traffic.begin();
    const t0 = performance.now();
    let status = 500;
    try {
      const res = await attempt();
      status = res.status;
      return res;
    } catch (err) {
      status = err instanceof FerryError ? err.status : 500;
      throw err;
    } finally {
      entity.traffic.end();
      opts.stats.record(entity.statsKey, status, performance.now() - t0);
    }
  };

  /** Sends a copy to a shadow entity; nobody waits for it, its answer only counts in the stats. */
  const mirror = (entity: EntityRoute, req: ChannelRequest, timeoutMs: number): void => {
    measured(entity, () => send(entity, req, timeoutMs)).catch(() => undefined);
  };

  const v2 = (suffix: string) => (_ctx: Context, r: EndpointRoute): string => `/v2/models/${encodeURIComponent(r.name)}${suffix}`;
  const v2Version = (suffix: string) => (ctx: Context, r: EndpointRoute): string =>
    `/v2/models/${encodeURIComponent(r.name)}/versions/${encodeURIComponent(ctx.params.version ?? '')}${suffix}`;

  /**
   * Per request, when someone needs it: publishes one `GatewayRequestEvent` (when someone
   * listens), logs one debug line (at debug level) and exports the gateway span with the replica
   * spans that came back (when exporting, for sampled traces). `forward` fills the request's
   * observation (entity, queue time, bodies, replica spans) as it goes.
   */
  const debug = opts.logLevel === 'debug';
  const exporter = opts.exporter;
  const observed = (method: string, pattern: string, inference: boolean, h: Handler): Handler => {
    const routeName = `${method} ${pattern}`;
    return async (ctx) => {
      const trace = traceOf(ctx);
      const exporting = exporter !== undefined && trace?.sampled === true;
      if (!gatewayRequests.hasSubscribers && !debug && !exporting) return h(ctx);
      const obs = newObservation(exporting);
      (ctx as ObservedContext)[OBSERVATION] = obs;
      const startMs = Date.now();
      const t0 = performance.now();
      return withOutcome(h, ctx, (status, errorCode) => {
        const endMs = performance.now();
        const endpoint = ctx.params.name ?? '';
        if (gatewayRequests.hasSubscribers) {
          const event: GatewayRequestEvent = {
            route: routeName, inference, endpoint, servedEntity: obs.servedEntity, modelName: obs.modelName, modelVersion: obs.modelVersion,
            principal: ctx.principal ?? '', requestId: trace?.requestId ?? '', status, errorCode, startMs, durationMs: endMs - t0, queueMs: obs.queueMs,
            requestBody: obs.requestBody, responseBody: obs.responseBody, requestHeaderBytes: obs.requestHeaderBytes, responseHeaderBytes: obs.responseHeaderBytes,
          };
          gatewayRequests.publish(event);
        }
        if (debug) {
          opts.log('debug', 'gateway request', {
            ...requestFields(trace), span_id: trace?.spanId, route: routeName, endpoint, served_entity: obs.servedEntity, status, error_code: errorCode,
            duration_ms: round3(endMs - t0), queue_ms: round3(obs.queueMs),
          });
        }
        if (exporting && trace !== undefined) exportSpans(exporter, trace, { method, pattern, routeName, endpoint, status, errorCode, endMs }, obs);
      });
    };
  };
  const add = (method: 'GET' | 'POST', pattern: string, inference: boolean, h: Handler): void => {
    router.add(method, pattern, observed(method, pattern, inference, h), access.endpoint(inference ? 'CAN_QUERY' : 'CAN_VIEW'));
  };

  // OpenAI-compatible routes: the endpoint is the body's `model`; the same bodies are also
  // accepted at /serving-endpoints/{name}/invocations of an llm endpoint (the replica tells them apart).
  const addOpenAi = (pattern: string): void => {
    router.add('POST', pattern, observed('POST', pattern, true, openAiRoute(pattern)), access.endpoint('CAN_QUERY', modelOf));
  };
  addOpenAi('/v1/chat/completions');
  addOpenAi('/v1/completions');
  addOpenAi('/v1/embeddings');
  router.add('GET', '/v1/models', async (ctx) => {
    const visible = await opts.authz.visible(identityOf(ctx), 'serving-endpoint');
    return { body: { object: 'list', data: table.names().filter(visible).map(openAiModel) } };
  }, access.user);
  // `models.retrieve`: an endpoint the caller may view, else 404 (in OpenAI's shape, as on every /v1 route).
  const modelId: NameOf = (ctx) => ctx.params.id ?? '';
  router.add('GET', '/v1/models/:id', (ctx) => {
    const id = modelId(ctx) as string;
    if (table.get(id) === undefined) throw notFound(`Model '${id}'`);
    return { body: openAiModel(id) };
  }, access.endpoint('CAN_VIEW', modelId));

  // OIP v2 server metadata: public, like the health routes (it names no endpoint).
  router.add('GET', '/v2', () => ({ body: { name: 'ferry', version: FERRY_VERSION, extensions: V2_EXTENSIONS } }), access.public);
  // OIP v2 model repository index: the endpoints the caller may view, one entry per served model
  // version. Its load and unload are not served: endpoints come and go through the serving-endpoints API.
  router.add('POST', '/v2/repository/index', async (ctx) => {
    const body = await readBody(ctx.req, opts.maxBodyBytes);
    const filter = body.length === 0 ? {} : parseJson(body);
    const readyOnly = typeof filter === 'object' && filter !== null && (filter as { ready?: unknown }).ready === true;
    const visible = await opts.authz.visible(identityOf(ctx), 'serving-endpoint');
    const models = table.names().filter(visible).flatMap((name) => repositoryEntries(table.get(name)));
    return { body: readyOnly ? models.filter((m) => m.state === 'READY') : models };
  }, access.user);

  // Rate limits count inference calls only, not metadata or readiness probes.
  add('POST', '/serving-endpoints/:name/invocations', true, withRoute(rateLimited(forward(() => '/invocations', 'ferry', 'invocations'))));
  add('POST', '/v2/models/:name/infer', true, withRoute(rateLimited(forward(v2('/infer'), 'v2', 'infer'))));
  add('POST', '/v2/models/:name/versions/:version/infer', true, withRoute(rateLimited(forward(v2Version('/infer'), 'v2', 'infer'))));
  add('GET', '/v2/models/:name', false, withRoute(forward(v2(''), 'v2', 'metadata')));
  add('GET', '/v2/models/:name/versions/:version', false, withRoute(forward(v2Version(''), 'v2', 'metadata')));
  // OIP v2 model configuration extension: built by the replica from the signature and batching.
  add('GET', '/v2/models/:name/config', false, withRoute(forward(v2('/config'), 'v2')));
  add('GET', '/v2/models/:name/versions/:version/config', false, withRoute(forward(v2Version('/config'), 'v2')));
  add('GET', '/v2/models/:name/ready', false, (ctx) => readiness(route(ctx), entitiesFor(ctx, route(ctx))));
  add('GET', '/v2/models/:name/versions/:version/ready', false, (ctx) => readiness(route(ctx), entitiesFor(ctx, route(ctx))));
}

/** An endpoint as an OpenAI model object (`GET /v1/models[/{id}]`). */
function openAiModel(id: string): { id: string; object: 'model'; created: number; owned_by: string } {
  return { id, object: 'model', created: 0, owned_by: 'ferry' };
}

/** The binary tensor extension's header: the length of the JSON part of the body. */
const INFERENCE_HEADER_LENGTH = 'inference-header-content-length';

/**
 * The replica path suffix for a v2 inference with binary tensors (`/binary/{headerBytes}`, see
 * replica/model-routes.ts), '' for a JSON body. Compressed bodies are refused: the replica
 * decodes tensors straight from the bytes it gets.
 */
function binaryInferSuffix(ctx: Context): string {
  const encoding = ctx.req.headers['content-encoding'];
  if (encoding !== undefined && encoding !== 'identity') {
    throw new FerryError('UNSUPPORTED_MEDIA_TYPE', `Content-Encoding '${encoding}' is not supported on inference requests; send the body uncompressed.`);
  }
  const value = ctx.req.headers[INFERENCE_HEADER_LENGTH];
  if (value === undefined) return '';
  const declared = ctx.req.headers['content-length'];
  if (typeof value !== 'string' || !/^\d{1,10}$/.test(value) || (declared !== undefined && Number(value) > Number(declared))) {
    throw invalidParameter('Inference-Header-Content-Length', value, 'the byte length of the JSON header at the start of the body');
  }
  return `/binary/${Number(value)}`;
}

/** Aborted when the client's connection closes before the response was finished. */
function clientGone(ctx: Context): AbortSignal {
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
async function relay(
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

/** A replica's error answer as Ferry's error body (what an unexpected body says is kept as its message). */
function errorBodyOf(body: Buffer): ErrorBody {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as Partial<ErrorBody>;
    if (typeof parsed.error_code === 'string' && typeof parsed.message === 'string') return { error_code: parsed.error_code, message: parsed.message };
  } catch {
    // Not JSON: described below.
  }
  return { error_code: 'MODEL_ERROR', message: body.toString('utf8').slice(0, 1000) };
}

/** The request-scoped fields of a log line. */
function requestFields(trace: RequestTrace | undefined): Record<string, unknown> {
  return { request_id: trace?.requestId, trace_id: trace?.traceId };
}

const round3 = (ms: number): number => Math.round(ms * 1000) / 1000;

/**
 * Queues the gateway's span of one request (server kind, from the `requestTracing` step to the
 * end of the handler) and, as its children, the spans replicas sent back ("model call", by the
 * replica's clock). Attributes follow the OpenTelemetry HTTP conventions plus `ferry.*`.
 */
function exportSpans(
  exporter: OtlpExporter, trace: RequestTrace,
  req: { method: string; pattern: string; routeName: string; endpoint: string; status: number; errorCode: string | undefined; endMs: number }, obs: Observation,
): void {
  const attributes: Span['attributes'] = {
    'http.request.method': req.method, 'http.route': req.pattern, 'http.response.status_code': req.status,
    'ferry.endpoint': req.endpoint, 'ferry.request_id': trace.requestId,
  };
  if (obs.servedEntity !== '') attributes['ferry.served_entity'] = obs.servedEntity;
  if (req.errorCode !== undefined) attributes['ferry.error_code'] = req.errorCode;
  exporter.add({
    service: 'ferry', traceId: trace.traceId, spanId: trace.spanId, parentSpanId: trace.parentSpanId, name: req.routeName, kind: 'server',
    startUnixUs: unixMicros(trace.startMs), endUnixUs: unixMicros(req.endMs), attributes, error: req.status >= 500,
  });
  for (const s of obs.replicaSpans ?? []) {
    exporter.add({
      service: 'ferry-replica', traceId: trace.traceId, spanId: s.spanId, parentSpanId: trace.spanId, name: 'model call', kind: 'server',
      startUnixUs: s.startUnixUs, endUnixUs: s.startUnixUs + s.durationUs,
      attributes: {
        'ferry.endpoint': req.endpoint, 'ferry.served_entity': s.entity.name, 'ferry.model.name': s.entity.modelName, 'ferry.model.version': s.entity.modelVersion,
        'ferry.request_id': trace.requestId, 'http.response.status_code': s.status,
      },
      error: s.status >= 500,
    });
  }
}

/** Request metadata of a request without trace context (a family request still carries its member). */
const NO_TRACE: RequestMeta = { requestId: undefined, traceparent: undefined, tracestate: undefined, wantSpan: false };

/** What a family request asks its replica for: a model call in either protocol, or the model's metadata. */
type FamilyRoute = 'invocations' | 'infer' | 'metadata';

/** Family endpoints have family entities only (config validation), so the first one tells. */
function isFamily(r: EndpointRoute): boolean {
  return r.entities[0]?.family !== undefined;
}

/**
 * The OIP v2 extensions Ferry serves whole (`GET /v2`). Of `model_repository` only the index is
 * served (no load / unload), so it is not listed.
 */
const V2_EXTENSIONS = ['binary_tensor_data', 'model_configuration', 'statistics'];

/** An endpoint's entries in the OIP v2 repository index: one per served model version. */
function repositoryEntries(r: EndpointRoute | undefined): Array<{ name: string; version: string; state: 'READY' | 'UNAVAILABLE'; reason: string }> {
  if (r === undefined) return [];
  return r.entities.map((e) => {
    const ready = e.traffic.backends.length > 0;
    return { name: r.name, version: e.modelVersion, state: ready ? 'READY' : 'UNAVAILABLE', reason: ready ? '' : `served entity '${e.name}' has no ready replica` };
  });
}

function readiness(r: EndpointRoute, entities: readonly EntityRoute[]): Reply {
  if (!entities.some((e) => e.traffic.backends.length > 0)) throw noReplica(r.name);
  return { body: { name: r.name, ready: true } };
}

function noReplica(endpoint: string): FerryError {
  return new FerryError('TEMPORARILY_UNAVAILABLE', `Serving endpoint '${endpoint}' has no ready replica; retry shortly.`, { retryAfterS: NO_REPLICA_RETRY_AFTER_S });
}

/**
 * Sends to a replica of `entity` with room for it, waiting in the entity's buffer when there is
 * none (scale from zero, all replicas busy). A transport failure before the request reached the
 * replica (refused, gone, the frame never written) is retried once on another replica, within the
 * entity's retry budget: a caller should not pay for a replica that died before it. A request the
 * replica had received when it died is not retried: it may be what killed it (an input that
 * drives the model past its memory limit, or into a crash), and a retry would kill the next
 * replica too. Timeouts are not retried either (they would double the load on a slow model).
 */
async function send(entity: EntityRoute, req: ChannelRequest, timeoutMs: number, obs?: Observation, affinity?: number): Promise<ChannelResponse> {
  const traffic = entity.traffic;
  traffic.countRequest();
  let failed: Backend | undefined;
  for (let attempt = 0; ; attempt++) {
    const t0 = obs ? performance.now() : 0;
    const backend = await traffic.acquire(failed, affinity);
    if (obs) obs.queueMs += performance.now() - t0;
    let streaming = false;
    try {
      const res = await backend.channel.request(req, timeoutMs);
      traffic.markSuccess(backend);
      if (res.stream === undefined) return res;
      // A stream holds its replica slot until it ends.
      streaming = true;
      void res.stream.ended.then(() => traffic.release(backend));
      return res;
    } catch (err) {
      if (!(err instanceof ChannelError)) throw err;
      traffic.markFailure(backend);
      if (err.sent) {
        throw new FerryError('BAD_GATEWAY', `The replica stopped while it held this request (${err.message}); the request was not sent to another replica, as it may be what stopped it.`, { cause: err });
      }
      if (attempt === 1 || !traffic.tryRetry()) throw err;
      failed = backend;
    } finally {
      if (!streaming) traffic.release(backend);
    }
  }
}
