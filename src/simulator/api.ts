/**
 * `POST /api/2.0/serving-endpoints/{name}/simulate` (CAN_MANAGE: the answer shows traffic and
 * latency, and a recommendation is a config change in waiting). The trace comes from the
 * request (a file's text, a pattern, a bundled trace) or from the endpoint itself: its per-5-s
 * request rate of the last hour (`series`) or its inference-table timestamps (`inference_table`).
 * The replica model comes from the entity's own measurements (model-call histogram, cold starts)
 * unless the request gives it. The simulation itself runs on a worker thread (./thread.ts).
 */
import { access, type ServerRouter } from '../auth/index.js';
import type { EndpointController, ScalingFields, ServedEntityConfig } from '../control/index.js';
import { invalidParameter } from '../errors.js';
import { readJsonObject, type JsonLimits } from '../http/index.js';
import type { InferenceTableStore } from '../store/index.js';
import { MODEL_SECONDS_BUCKETS, SERIES_RESOLUTION_MS, type HistogramSnapshot, type Telemetry } from '../telemetry/index.js';
import type { ServiceTime } from './engine.js';
import { localTrace, parseSimulateRequest, type TraceSource } from './request.js';
import { simulateOnThread } from './thread.js';
import { MAX_TRACE_REQUESTS, traceFromRates, traceFromTimes, type Trace } from './trace.js';

export interface SimulatorApiDeps {
  controller: EndpointController;
  telemetry: Telemetry;
  inferenceStore: InferenceTableStore;
  /** The endpoint's inference-table settings (its id), as the inference-table API reads them. */
  inferenceTableOf: (name: string) => { endpointId: string; enabled: boolean } | undefined;
  gateway: { maxConcurrencyPerReplica: number; maxQueued: number; queueTimeoutMs: number };
  now: () => number;
  maxBodyBytes: number;
  jsonLimits: JsonLimits;
}

/** Inference-table rows read per page while building a trace. */
const PAGE_ROWS = 10_000;

/** A compiled served entity's scaling fields, back in API shape (what a candidate overrides). */
export function scalingFieldsOf(e: ServedEntityConfig): ScalingFields {
  const s = e.scaling;
  return {
    workload_size: e.workloadSize,
    workload_type: e.workloadType,
    scale_to_zero_enabled: e.scaleToZeroEnabled,
    ...(e.minProvisionedConcurrency === undefined ? {} : { min_provisioned_concurrency: e.minProvisionedConcurrency }),
    ...(e.maxProvisionedConcurrency === undefined ? {} : { max_provisioned_concurrency: e.maxProvisionedConcurrency }),
    autoscaling: {
      target_concurrency: s.targetConcurrency, stable_window_ms: s.stableWindowMs, panic_window_ms: s.panicWindowMs, panic_threshold: s.panicThreshold,
      scale_down_delay_ms: s.scaleDownDelayMs, scale_to_zero_grace_ms: s.scaleToZeroGraceMs, max_scale_up_rate: s.maxScaleUpRate,
    },
  };
}

/** The model-call histogram (seconds) as a service-time distribution in ms. */
function serviceTimeOf(h: HistogramSnapshot | undefined): ServiceTime | undefined {
  return h === undefined ? undefined : { kind: 'histogram', boundsMs: MODEL_SECONDS_BUCKETS.map((s) => s * 1000), counts: h.counts, meanMs: (h.sum / h.count) * 1000 };
}

export function simulatorRoutes(router: ServerRouter, deps: SimulatorApiDeps): void {
  /** The endpoint's own traffic as a trace. */
  const endpointTrace = async (name: string, entity: string, source: TraceSource): Promise<Trace> => {
    if (source.source === 'series') {
      const series = deps.telemetry.seriesOf(name, source.window_ms);
      const points = series.served_entities[entity] ?? series.points;
      return traceFromRates(points.map((p) => p.qps), SERIES_RESOLUTION_MS);
    }
    if (source.source !== 'inference_table') throw invalidParameter('trace.source', source.source, 'a trace source'); // unreachable: local sources come first
    const table = deps.inferenceTableOf(name);
    if (table === undefined || !table.enabled) throw invalidParameter('trace.source', 'inference_table', `an inference table enabled on endpoint '${name}' (ai_gateway.inference_table_config), or another source`);
    const times: number[] = [];
    const startMs = deps.now() - source.window_ms;
    let pageToken: string | undefined;
    do {
      const page = await deps.inferenceStore.query({ endpoint: name, endpointId: table.endpointId, startMs, servedEntity: entity, maxResults: PAGE_ROWS, ...(pageToken === undefined ? {} : { pageToken }) });
      // A sampled row stands for 1 / fraction requests at its time.
      for (const row of page.items) for (let k = Math.round(1 / row.samplingFraction); k > 0; k--) times.push(row.timestampMs);
      if (times.length > MAX_TRACE_REQUESTS) throw invalidParameter('trace.window_ms', source.window_ms, `a window with at most ${MAX_TRACE_REQUESTS} requests (this one has more)`);
      pageToken = page.nextPageToken;
    } while (pageToken !== undefined);
    if (times.length === 0) throw invalidParameter('trace.window_ms', source.window_ms, `a window with requests in the inference table of '${name}' (it has none)`);
    return traceFromTimes(times);
  };

  router.add('POST', '/api/2.0/serving-endpoints/:name/simulate', async (ctx) => {
    const name = ctx.params.name ?? '';
    const req = parseSimulateRequest(await readJsonObject(ctx.req, deps.maxBodyBytes, deps.jsonLimits));
    const found = deps.controller.servedEntity(name, req.served_entity_name);
    if (found === undefined) {
      throw invalidParameter('served_entity_name', req.served_entity_name ?? null, `a served entity of endpoint '${name}'${req.served_entity_name === undefined ? ' (it has none serving yet)' : ''}`);
    }
    const entity = found.config.name;
    const trace = localTrace(req.trace) ?? await endpointTrace(name, entity, req.trace);
    const measured = await deps.telemetry.modelSecondsOf(name, entity);
    return {
      body: {
        endpoint: name, served_entity_name: entity,
        ...await simulateOnThread(req, {
          trace, current: scalingFieldsOf(found.config), measuredServiceTime: serviceTimeOf(measured), measuredColdStartsMs: found.coldStartsMs,
          // Only the numbers: the options object may carry hooks, which cannot cross to the thread.
          gateway: { maxConcurrencyPerReplica: deps.gateway.maxConcurrencyPerReplica, maxQueued: deps.gateway.maxQueued, queueTimeoutMs: deps.gateway.queueTimeoutMs },
        }),
      },
    };
  }, access.endpoint('CAN_MANAGE'));
}
