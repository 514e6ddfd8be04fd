/**
 * Forwarding a request to a replica of its endpoint: the served entity picked by traffic weight
 * (or named by a version path), fallback to the next entities, shadow copies, the concurrency and
 * stats accounting of each attempt, the binary tensor suffix, and the answer written back
 * (relayed as it comes when the replica streams it).
 */
import { FerryError, invalidParameter, notFound } from '../errors.js';
import type { Context, Handler } from '../http/index.js';
import { readBinaryAnswer } from '../protocols/index.js';
import type { ChannelRequest, ChannelResponse, RequestMeta } from '../channel/index.js';
import { traceOf } from '../tracing/index.js';
import type { InferenceBodies } from './bodies.js';
import { errorBodyIn, errorBodyOf, type Protocol } from './error-bodies.js';
import { familyModelOf, isFamily, type FamilyRoute, type FamilyTargets } from './family.js';
import { OBSERVATION, requestFields, type ObservedContext } from './observe.js';
import type { GatewayOptions } from './options.js';
import type { RouteHandler } from './rate-limit.js';
import { clientGone, relay } from './relay.js';
import { pickEntity, type EndpointRoute, type EntityRoute, type RoutingTable } from './routing.js';
import { send } from './send.js';

/** Seconds a client should wait before retrying when no replica is ready. */
const NO_REPLICA_RETRY_AFTER_S = 1;

/** The binary tensor extension's header: the length of the JSON part of the body. */
const INFERENCE_HEADER_LENGTH = 'inference-header-content-length';

export class Forwarder {
  constructor(
    private readonly table: RoutingTable, private readonly opts: Pick<GatewayOptions, 'stats' | 'log'>,
    private readonly bodies: InferenceBodies, private readonly family: FamilyTargets,
  ) {}

  /** The endpoint a request's `:name` names; 404 when there is none. */
  route(ctx: Context): EndpointRoute {
    const name = ctx.params.name ?? '';
    const r = this.table.get(name);
    if (!r) throw notFound(`Serving endpoint '${name}'`);
    return r;
  }

  /** The entities a request may go to: all of the endpoint's, or those its version path names. */
  entitiesFor(ctx: Context, r: EndpointRoute): readonly EntityRoute[] {
    const version = ctx.params.version;
    // On a family endpoint the version segment names the model (see `familyModelOf`).
    if (version === undefined || isFamily(r)) return r.entities;
    const matching = r.entities.filter((e) => e.modelVersion === version || e.name === version);
    if (matching.length === 0) throw notFound(`Version '${version}' of serving endpoint '${r.name}'`);
    // A version path addresses those entities directly, whatever their traffic share.
    return matching.map((e) => ({ ...e, trafficPercentage: 1 }));
  }

  /** A handler of the endpoint the request's `:name` names. */
  withRoute(h: RouteHandler<EndpointRoute>): Handler {
    return (ctx) => h(ctx, this.route(ctx));
  }

  /**
   * Forwards to a replica of the endpoint. `openAi` routes take the body their access rule already
   * read, answer errors in OpenAI's shape, and cancel the replica's work when the client goes away
   * before the answer is complete; any route relays a streamed answer as it comes and cancels it
   * when the client goes away. The answer given to the client is reported to `meter` (token limits).
   */
  forward(replicaPath: (ctx: Context, r: EndpointRoute) => string, protocol: Protocol = 'ferry', familyRoute?: FamilyRoute): RouteHandler<EndpointRoute> {
    return async (ctx, r, meter) => {
      const startMs = performance.now();
      const obs = (ctx as ObservedContext)[OBSERVATION];
      const trace = traceOf(ctx);
      const openAi = protocol === 'openai';
      const model = isFamily(r) ? familyModelOf(ctx, r, familyRoute) : undefined;
      const entities = this.entitiesFor(ctx, r);
      const first = pickEntity(entities, Math.random());
      if (!first) throw noReplica(r.name);
      // The binary tensor extension: the replica is told where the JSON header ends.
      const binarySuffix = familyRoute === 'infer' ? binaryInferSuffix(ctx) : '';
      const body = openAi ? await this.bodies.openAi(ctx, r) : ctx.method === 'POST' ? await this.bodies.read(ctx, r) : undefined;
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
        if (s.entity !== first && Math.random() * 100 < s.mirrorPercentage) this.mirror(s.entity, meta?.wantSpan === true ? { ...req, meta: { ...meta, wantSpan: false } } : req, r.timeoutMs);
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
          const target = model === undefined || familyRoute === undefined ? undefined : await this.family.target(ctx, entity, model, familyRoute, req, binarySuffix);
          if (obs && target !== undefined) {
            obs.modelName = target.member.name;
            obs.modelVersion = String(target.member.version);
          }
          const res = await this.measured(entity, () => send(entity, target?.req ?? req, r.timeoutMs, obs, target?.affinity));
          if (res.span !== undefined) obs?.replicaSpans?.push({ ...res.span, entity, status: res.status });
          if (res.status >= 500 && !last) continue;
          // Thrown errors are logged by the server; this is the model's own error answer.
          if (res.status >= 500) this.opts.log('error', 'model answered with an error', { ...requestFields(trace), endpoint: r.name, served_entity: entity.name, status: res.status });
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
  }

  /** Runs one attempt on `entity`, counted in its concurrency and recorded in the stats. */
  private async measured(entity: EntityRoute, attempt: () => Promise<ChannelResponse>): Promise<ChannelResponse> {
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
      this.opts.stats.record(entity.statsKey, status, performance.now() - t0);
    }
  }

  /** Sends a copy to a shadow entity; nobody waits for it, its answer only counts in the stats. */
  private mirror(entity: EntityRoute, req: ChannelRequest, timeoutMs: number): void {
    this.measured(entity, () => send(entity, req, timeoutMs)).catch(() => undefined);
  }
}

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

/** 503 with Retry-After: the endpoint has no replica ready to take the request. */
export function noReplica(endpoint: string): FerryError {
  return new FerryError('TEMPORARILY_UNAVAILABLE', `Serving endpoint '${endpoint}' has no ready replica; retry shortly.`, { retryAfterS: NO_REPLICA_RETRY_AFTER_S });
}
