/**
 * The observation step around each gateway route: per request, when someone needs it, one
 * `GatewayRequestEvent` (./events.ts), one debug log line and the gateway's span with the replica
 * spans that came back. The forwarding step (./forward.ts) fills the request's observation as it goes.
 */
import { withOutcome, type Context, type Handler } from '../http/index.js';
import { traceOf, unixMicros, type OtlpExporter, type RequestTrace, type Span } from '../tracing/index.js';
import { gatewayRequests, newObservation, type GatewayRequestEvent, type Observation } from './events.js';
import type { GatewayOptions } from './options.js';

/**
 * A request's observation, kept on its Context under a private symbol: a WeakMap entry per request
 * cost ~0.2–0.3 µs here (see src/tracing/middleware.ts), a property a few ns.
 */
export const OBSERVATION = Symbol('ferry.observation');
export type ObservedContext = Context & { [OBSERVATION]?: Observation };

/** Wraps a route's handler in the observation step; `inference`: a model call, not metadata or readiness. */
export type Observed = (method: string, pattern: string, inference: boolean, h: Handler) => Handler;

/**
 * Per request, when someone needs it: publishes one `GatewayRequestEvent` (when someone
 * listens), logs one debug line (at debug level) and exports the gateway span with the replica
 * spans that came back (when exporting, for sampled traces). `forward` fills the request's
 * observation (entity, queue time, bodies, replica spans) as it goes.
 */
export function observer(opts: GatewayOptions): Observed {
  const debug = opts.logLevel === 'debug';
  const exporter = opts.exporter;
  return (method, pattern, inference, h) => {
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
}

/** The request-scoped fields of a log line. */
export function requestFields(trace: RequestTrace | undefined): Record<string, unknown> {
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
