/**
 * Telemetry: Prometheus metrics and per-endpoint time series, built from what the gateway and the
 * controller publish on node:diagnostics_channel (src/diagnostics.ts) plus, at scrape time, the
 * controller's gauges and the replicas' own model-side metrics. Nothing here runs per request
 * except the event handler (a few counter and histogram updates); replica metrics are read only
 * when `/metrics` is. docs/observability.md lists every metric.
 *
 * Routes: `GET /metrics` (any principal; only the endpoints it can view; admins also get the
 * process metrics), `GET /api/2.0/serving-endpoints/{name}/metrics` and
 * `GET /api/2.0/serving-endpoints/{name}/metrics/series?window=15m` (CAN_VIEW).
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import type { MetricsSeries } from '../api/index.js';
import { access, identityOf, type Authorizer, type ServerRouter } from '../auth/index.js';
import { parseDurationMs } from '../config/index.js';
import type { EntityGauges } from '../control/index.js';
import {
  ENDPOINT_DELETED_CHANNEL, GATEWAY_REQUEST_CHANNEL, GATEWAY_STREAM_CHANNEL, INFERENCE_TABLE_DROP_CHANNEL, REPLICA_EXIT_CHANNEL, REPLICA_READY_CHANNEL,
  type EndpointDeletedEvent, type GatewayRequestEvent, type GatewayStreamEvent, type InferenceTableDropEvent, type ReplicaExitEvent, type ReplicaReadyEvent,
} from '../diagnostics.js';
import { invalidParameter, notFound } from '../errors.js';
import type { Context } from '../http/index.js';
import type { ReplicaHandle } from '../runtime/index.js';
import { EXPOSITION_CONTENT_TYPE, writeExposition } from './exposition.js';
import { ServingMetrics } from './metrics.js';
import { ProcessMetrics } from './process.js';
import { entityKey, ReplicaScraper, type ScrapeOptions } from './scrape.js';
import type { HistogramSnapshot } from './histogram.js';
import { v2ModelStats, type V2ModelStats } from './v2-stats.js';
import { SERIES_RESOLUTION_MS, SERIES_SLOTS, SeriesRing } from './series.js';

export { EXPOSITION_CONTENT_TYPE, escapeLabelValue, formatValue, writeExposition, type Labels, type MetricFamily } from './exposition.js';
export {
  BATCH_ROWS_BUCKETS, COLD_START_SECONDS_BUCKETS, Histogram, MODEL_SECONDS_BUCKETS, QUEUE_SECONDS_BUCKETS, REQUEST_SECONDS_BUCKETS,
  type HistogramSnapshot,
} from './histogram.js';
export { rejectReason } from './metrics.js';
export { ModelCallMetrics, type ReplicaMetricsSnapshot } from './replica.js';
export { SERIES_RESOLUTION_MS, SERIES_SLOTS, SeriesRing, latencyBucket, type GaugeSample } from './series.js';

export interface TelemetryOptions {
  /** Wall clock (ms since the epoch) for the series; injected so tests walk virtual time. */
  now: () => number;
  /** Every served entity's replica counts and load (the controller's `entityGauges`). */
  entities: () => readonly EntityGauges[];
  /** The live replicas (the runtime's `list`), read for model-side metrics. */
  replicas: () => readonly ReplicaHandle[];
  /** Whether the gateway routes an endpoint: requests to others (404s for unknown names) are not counted, so no caller can add series. */
  routed: (endpoint: string) => boolean;
  /** How replicas are read; default 8 at a time, 1 s each. */
  scrape?: ScrapeOptions;
  /** The span exporter's counts, when `otlpEndpoint` is set. */
  spanExport?: () => { exported: number; dropped: number };
}

/** How often gauges are sampled into the series. */
const SAMPLE_INTERVAL_MS = 1000;
export const DEFAULT_SERIES_WINDOW_MS = 15 * 60_000;
export const MAX_SERIES_WINDOW_MS = SERIES_RESOLUTION_MS * SERIES_SLOTS;
const DEFAULT_SCRAPE: ScrapeOptions = { concurrency: 8, timeoutMs: 1000 };

interface EndpointSeries {
  all: SeriesRing;
  entities: Map<string, SeriesRing>;
}

export class Telemetry {
  private readonly metrics = new ServingMetrics();
  private readonly scraper: ReplicaScraper;
  private readonly processMetrics = new ProcessMetrics();
  private readonly series = new Map<string, EndpointSeries>();
  private readonly timer: NodeJS.Timeout;
  private readonly subscriptions: Array<[string, (message: unknown) => void]>;

  /** Subscribes to the channels and starts sampling gauges; `close` undoes both. */
  constructor(private readonly options: TelemetryOptions) {
    this.scraper = new ReplicaScraper(options.scrape ?? DEFAULT_SCRAPE);
    this.subscriptions = [
      [GATEWAY_REQUEST_CHANNEL, (m) => this.onRequest(m as GatewayRequestEvent)],
      [REPLICA_READY_CHANNEL, (m) => this.metrics.onReplicaReady(m as ReplicaReadyEvent)],
      [REPLICA_EXIT_CHANNEL, (m) => this.metrics.onReplicaExit(m as ReplicaExitEvent)],
      [ENDPOINT_DELETED_CHANNEL, (m) => this.forget((m as EndpointDeletedEvent).endpoint)],
      [INFERENCE_TABLE_DROP_CHANNEL, (m) => this.metrics.onInferenceTableDrop(m as InferenceTableDropEvent)],
      [GATEWAY_STREAM_CHANNEL, (m) => { const ev = m as GatewayStreamEvent; if (this.options.routed(ev.endpoint)) this.metrics.onStream(ev); }],
    ];
    for (const [name, fn] of this.subscriptions) diagnosticsChannel.subscribe(name, fn);
    this.timer = setInterval(() => this.sample(), SAMPLE_INTERVAL_MS);
    this.timer.unref();
  }

  close(): void {
    for (const [name, fn] of this.subscriptions) diagnosticsChannel.unsubscribe(name, fn);
    clearInterval(this.timer);
    this.processMetrics.close();
  }

  /** Whether an endpoint exists (has served entities, or a route). */
  has(endpoint: string): boolean {
    return this.options.routed(endpoint) || this.options.entities().some((g) => g.endpoint === endpoint);
  }

  /**
   * The exposition text for the endpoints in `visible` (reading their replicas first), with the
   * process metrics when `process` is set.
   */
  async exposition(visible: (endpoint: string) => boolean, process: boolean): Promise<string> {
    await this.scraper.scrape(this.options.replicas(), visible);
    const families = [
      ...this.metrics.families({ visible, gauges: this.options.entities(), model: this.scraper.totals(), scrapeErrors: this.scraper.errors }),
      ...this.scraper.familyMetrics(visible),
    ];
    if (process) {
      families.push(...this.processMetrics.families());
      const spans = this.options.spanExport?.();
      if (spans !== undefined) {
        families.push(
          { name: 'ferry_otlp_spans_exported_total', type: 'counter', help: 'Spans the OpenTelemetry collector accepted.', samples: [{ labels: {}, value: spans.exported }] },
          { name: 'ferry_otlp_spans_dropped_total', type: 'counter', help: 'Spans lost: the export queue was full, or their POST failed.', samples: [{ labels: {}, value: spans.dropped }] },
        );
      }
    }
    return writeExposition(families);
  }

  /**
   * A served entity's model-call time histogram (all its replicas, live and gone), read from the
   * replicas first; undefined before any call was measured. Buckets: `MODEL_SECONDS_BUCKETS`.
   */
  async modelSecondsOf(endpoint: string, servedEntity: string): Promise<HistogramSnapshot | undefined> {
    await this.scraper.scrape(this.options.replicas(), (e) => e === endpoint);
    const t = this.scraper.totals().get(entityKey(endpoint, servedEntity));
    return t === undefined || t.modelSeconds.count === 0 ? undefined : t.modelSeconds;
  }

  /**
   * OIP v2 statistics of the served entities of `endpoints` that have answered, `version` only
   * when given (the replicas' model-call totals read first).
   */
  async v2Statistics(endpoints: (endpoint: string) => boolean, version: string | undefined): Promise<{ model_stats: V2ModelStats[] }> {
    await this.scraper.scrape(this.options.replicas(), endpoints);
    const totals = this.scraper.totals();
    const stats = this.metrics.entitiesOf(endpoints)
      .filter((e) => version === undefined || e.counters.modelVersion === version)
      .map((e) => v2ModelStats(e.endpoint, e.counters, totals.get(entityKey(e.endpoint, e.servedEntity))));
    return { model_stats: stats };
  }

  /** The last `windowMs` of an endpoint, per `SERIES_RESOLUTION_MS` slot, and of each of its served entities. */
  seriesOf(endpoint: string, windowMs: number): MetricsSeries {
    this.sample();
    const now = this.options.now();
    const s = this.series.get(endpoint);
    const empty = new SeriesRing();
    return {
      endpoint,
      interval_s: SERIES_RESOLUTION_MS / 1000,
      points: (s?.all ?? empty).points(now, windowMs),
      served_entities: Object.fromEntries([...(s?.entities ?? [])].sort(([a], [b]) => a.localeCompare(b)).map(([name, ring]) => [name, ring.points(now, windowMs)])),
    };
  }

  private seriesFor(endpoint: string): EndpointSeries {
    let s = this.series.get(endpoint);
    if (s === undefined) this.series.set(endpoint, s = { all: new SeriesRing(), entities: new Map() });
    return s;
  }

  private entityRing(s: EndpointSeries, entity: string): SeriesRing {
    let r = s.entities.get(entity);
    if (r === undefined) s.entities.set(entity, r = new SeriesRing());
    return r;
  }

  /** Metadata and readiness calls are not counted: they would skew qps and latency. */
  private onRequest(ev: GatewayRequestEvent): void {
    if (!ev.inference || !this.options.routed(ev.endpoint)) return;
    this.metrics.onRequest(ev);
    const now = this.options.now();
    const s = this.seriesFor(ev.endpoint);
    s.all.recordRequest(now, ev.status, ev.durationMs);
    if (ev.servedEntity !== '') this.entityRing(s, ev.servedEntity).recordRequest(now, ev.status, ev.durationMs);
  }

  /** Drops everything held for a deleted endpoint at once (not at the next sample: its name may be reused within the second). */
  private forget(endpoint: string): void {
    const other = (e: string): boolean => e !== endpoint;
    this.series.delete(endpoint);
    this.metrics.prune(other);
    this.scraper.prune(other);
  }

  /** Once a second (and before a series is read): gauges into the series; state of deleted endpoints dropped. */
  private sample(): void {
    const now = this.options.now();
    const gauges = this.options.entities();
    const sums = new Map<string, { ready: number; desired: number; inFlight: number; queued: number }>();
    for (const g of gauges) {
      const s = this.seriesFor(g.endpoint);
      this.entityRing(s, g.servedEntity).recordGauges(now, g);
      const sum = sums.get(g.endpoint) ?? { ready: 0, desired: 0, inFlight: 0, queued: 0 };
      sum.ready += g.ready;
      sum.desired += g.desired;
      sum.inFlight += g.inFlight;
      sum.queued += g.queued;
      sums.set(g.endpoint, sum);
    }
    for (const [endpoint, sum] of sums) this.seriesFor(endpoint).all.recordGauges(now, sum);
    const exists = (endpoint: string): boolean => sums.has(endpoint) || this.options.routed(endpoint);
    for (const endpoint of this.series.keys()) if (!exists(endpoint)) this.series.delete(endpoint);
    this.metrics.prune(exists);
    this.scraper.prune(exists);
  }
}

/** `?window=` of the series API: a duration from one slot (5 s) to the whole ring (1 h); default 15 min. */
export function parseSeriesWindow(raw: string | null): number {
  if (raw === null) return DEFAULT_SERIES_WINDOW_MS;
  const ms = parseDurationMs(raw);
  if (ms === undefined || ms < SERIES_RESOLUTION_MS || ms > MAX_SERIES_WINDOW_MS) {
    throw invalidParameter('window', raw, `a duration from ${SERIES_RESOLUTION_MS / 1000}s to ${MAX_SERIES_WINDOW_MS / 60_000}m, such as "15m"`);
  }
  return ms;
}

function sendText(ctx: Context, text: string): undefined {
  ctx.res.writeHead(200, { 'content-type': EXPOSITION_CONTENT_TYPE, 'content-length': Buffer.byteLength(text) });
  ctx.res.end(text);
  return undefined;
}

/**
 * The telemetry routes. `/metrics` is open to every principal but shows only the endpoints it can
 * view (a principal without grants sees the metric names and no samples); the per-endpoint routes
 * need CAN_VIEW on the endpoint.
 */
export function telemetryRoutes(router: ServerRouter, telemetry: Telemetry, authz: Authorizer): void {
  const existing = (ctx: Context): string => {
    const name = ctx.params.name ?? '';
    if (!telemetry.has(name)) throw notFound(`Serving endpoint '${name}'`);
    return name;
  };
  router.add('GET', '/metrics', async (ctx) => {
    const who = identityOf(ctx);
    return sendText(ctx, await telemetry.exposition(await authz.visible(who, 'serving-endpoint'), who.admin));
  }, access.user);
  router.add('GET', '/api/2.0/serving-endpoints/:name/metrics', async (ctx) => {
    const name = existing(ctx);
    return sendText(ctx, await telemetry.exposition((endpoint) => endpoint === name, false));
  }, access.endpoint('CAN_VIEW'));
  // The OIP v2 statistics extension: every endpoint the caller may view, or one (CAN_VIEW).
  router.add('GET', '/v2/models/stats', async (ctx) => ({ body: await telemetry.v2Statistics(await authz.visible(identityOf(ctx), 'serving-endpoint'), undefined) }), access.user);
  router.add('GET', '/v2/models/:name/stats', async (ctx) => {
    const name = existing(ctx);
    return { body: await telemetry.v2Statistics((endpoint) => endpoint === name, undefined) };
  }, access.endpoint('CAN_VIEW'));
  router.add('GET', '/v2/models/:name/versions/:version/stats', async (ctx) => {
    const name = existing(ctx);
    return { body: await telemetry.v2Statistics((endpoint) => endpoint === name, ctx.params.version ?? '') };
  }, access.endpoint('CAN_VIEW'));
  router.add('GET', '/api/2.0/serving-endpoints/:name/metrics/series', (ctx) => {
    const windowMs = parseSeriesWindow(ctx.query.get('window'));
    return { body: telemetry.seriesOf(existing(ctx), windowMs) };
  }, access.endpoint('CAN_VIEW'));
}
