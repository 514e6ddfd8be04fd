/**
 * Span export to an OpenTelemetry collector over OTLP/HTTP with the JSON encoding
 * (`POST {endpoint}/v1/traces`, an `ExportTraceServiceRequest`; spec:
 * https://opentelemetry.io/docs/specs/otlp/#otlphttp). Written here rather than taken from the
 * OpenTelemetry SDK: Ferry needs only this encoder and a bounded batch queue, not the SDK's
 * dependencies or its per-span overhead.
 *
 * Never in a request's way: `add` only pushes onto a bounded queue (dropping, and counting, when
 * it is full); batches leave from a timer, one POST at a time, each with a deadline. A failed POST
 * loses its batch (counted too): retrying would only pile spans up behind a collector that is down.
 */
import http from 'node:http';
import https from 'node:https';
import type { LogFn } from '../logs/index.js';

/** A finished span, ready to export. */
export interface Span {
  /** `service.name` of the resource it belongs to: "ferry" (gateway) or "ferry-replica". */
  service: string;
  /** 32 hex digits. */
  traceId: string;
  /** 16 hex digits. */
  spanId: string;
  /** 16 hex digits; undefined for a trace's root span. */
  parentSpanId: string | undefined;
  name: string;
  kind: 'server' | 'internal';
  /** Microseconds since the epoch. */
  startUnixUs: number;
  endUnixUs: number;
  attributes: Record<string, string | number | boolean>;
  /** Sets the span status to ERROR (for server spans: a 5xx answer). */
  error: boolean;
}

export interface OtlpExporterOptions {
  /** Collector base URL, e.g. "http://127.0.0.1:4318"; spans are POSTed to `{endpoint}/v1/traces`. */
  endpoint: string;
  /**
   * Spans held while waiting for export; more are dropped and counted. Default 2048 (the
   * OpenTelemetry SDK's batch processor default): at 1 span per request and 1 s between batches
   * it covers ~2,000 requests per second, more while a POST is slow.
   */
  maxQueuedSpans?: number;
  /** Spans per POST; a full batch leaves at once instead of waiting for the timer. Default 512. */
  maxBatchSpans?: number;
  /** Time between batches. Default 1000 ms: spans show up in a second, at most one POST per second at low load. */
  flushIntervalMs?: number;
  /** A POST that has not been answered in this time fails (its batch is lost). Default 10,000 ms. */
  exportTimeoutMs?: number;
  /** Where lost spans and failed POSTs are reported (warn, at most once a minute after the first). */
  log?: LogFn;
}

/** Counters since the exporter started. */
export interface ExportStats {
  /** Spans the collector accepted (2xx). */
  exported: number;
  /** Spans lost: the queue was full, or their POST failed. */
  dropped: number;
}

const SPAN_KIND = { internal: 1, server: 2 } as const;
const STATUS_CODE_ERROR = 2;
const DROP_REPORT_INTERVAL_MS = 60_000;

/** Batches spans to an OTLP/HTTP collector (see the file comment). */
export class OtlpExporter {
  private queue: Span[] = [];
  private sending: Promise<void> | undefined;
  private readonly timer: NodeJS.Timeout;
  private readonly url: URL;
  private readonly maxQueuedSpans: number;
  private readonly maxBatchSpans: number;
  private readonly exportTimeoutMs: number;
  private readonly counts: ExportStats = { exported: 0, dropped: 0 };
  /** `dropped` when last reported, and when (performance.now(); -Infinity: never). */
  private reportedDropped = 0;
  private reportedAtMs = -Infinity;
  private closed = false;

  constructor(private readonly opts: OtlpExporterOptions) {
    this.url = new URL(`${opts.endpoint.replace(/\/+$/, '')}/v1/traces`);
    this.maxQueuedSpans = opts.maxQueuedSpans ?? 2048;
    this.maxBatchSpans = opts.maxBatchSpans ?? 512;
    this.exportTimeoutMs = opts.exportTimeoutMs ?? 10_000;
    this.timer = setInterval(() => this.send(), opts.flushIntervalMs ?? 1000);
    this.timer.unref();
  }

  get stats(): ExportStats {
    return { ...this.counts };
  }

  /** Queues a finished span; never blocks. Dropped (and counted) when the queue is full or closed. */
  add(span: Span): void {
    if (this.closed || this.queue.length >= this.maxQueuedSpans) {
      this.counts.dropped++;
      return;
    }
    this.queue.push(span);
    if (this.queue.length >= this.maxBatchSpans) this.send();
  }

  /**
   * Stops the timer and exports what is queued, batch after batch, starting batches for up to
   * `exportTimeoutMs`; what is left then is dropped. Resolves once no POST is under way. For
   * server shutdown.
   */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    const deadline = performance.now() + this.exportTimeoutMs;
    while (performance.now() < deadline && (this.sending !== undefined || this.queue.length > 0)) {
      this.send();
      await this.sending;
    }
    await this.sending;
    this.counts.dropped += this.queue.length;
    this.queue = [];
    this.reportDrops(undefined);
  }

  /** Starts a POST of the next batch unless one is under way. */
  private send(): void {
    if (this.sending !== undefined || this.queue.length === 0) {
      this.reportDrops(undefined);
      return;
    }
    const batch = this.queue.length <= this.maxBatchSpans ? this.queue : this.queue.slice(0, this.maxBatchSpans);
    this.queue = batch === this.queue ? [] : this.queue.slice(batch.length);
    this.sending = this.post(JSON.stringify(encodeSpans(batch))).then(
      () => {
        this.counts.exported += batch.length;
        this.reportDrops(undefined);
      },
      (err: unknown) => {
        this.counts.dropped += batch.length;
        this.reportDrops(err instanceof Error ? err.message : String(err));
      },
    ).finally(() => {
      this.sending = undefined;
      // More than a batch queued meanwhile: no need to wait for the timer (close() sends its own).
      if (!this.closed && this.queue.length >= this.maxBatchSpans) this.send();
    });
  }

  private post(body: string): Promise<void> {
    const url = this.url;
    const client = url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const req = client.request(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        timeout: this.exportTimeoutMs,
        agent: false,
      }, (res) => {
        res.resume();
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) resolve();
        else reject(new Error(`collector answered ${status}`));
      });
      // The socket timeout covers an idle connection; this one the whole POST.
      const deadline = setTimeout(() => req.destroy(new Error(`no answer within ${this.exportTimeoutMs} ms`)), this.exportTimeoutMs);
      deadline.unref();
      req.on('close', () => clearTimeout(deadline));
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.exportTimeoutMs} ms`)));
      req.on('error', reject);
      req.end(body);
    });
  }

  /** Logs lost spans: the first loss at once, later ones at most once a minute. */
  private reportDrops(error: string | undefined): void {
    const log = this.opts.log;
    if (log === undefined || this.counts.dropped === this.reportedDropped) return;
    const now = performance.now();
    if (now - this.reportedAtMs < DROP_REPORT_INTERVAL_MS) return;
    log('warn', 'OTLP spans dropped', {
      endpoint: this.opts.endpoint, spans_dropped: this.counts.dropped - this.reportedDropped, spans_dropped_total: this.counts.dropped,
      spans_exported_total: this.counts.exported, ...(error === undefined ? {} : { error }),
    });
    this.reportedDropped = this.counts.dropped;
    this.reportedAtMs = now;
  }
}

type AnyValue = { stringValue: string } | { intValue: string } | { doubleValue: number } | { boolValue: boolean };

function anyValue(v: string | number | boolean): AnyValue {
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  // int64 is a string in the protobuf JSON mapping.
  return Number.isSafeInteger(v) ? { intValue: String(v) } : { doubleValue: v };
}

/** Microseconds since the epoch as the decimal string of a fixed64 in nanoseconds. */
function unixNanos(us: number): string {
  return `${Math.round(us)}000`;
}

/**
 * The OTLP/JSON `ExportTraceServiceRequest` for `spans`: one resource per service, ids in hex (the
 * OTLP JSON exception to the protobuf mapping's base64), times as nanosecond strings.
 * E.g. one gateway span → `{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name",
 * "value":{"stringValue":"ferry"}}]},"scopeSpans":[{"scope":{"name":"ferry"},"spans":[{"traceId":…,
 * "spanId":…,"name":"POST /serving-endpoints/:name/invocations","kind":2,…}]}]}]}`.
 */
export function encodeSpans(spans: readonly Span[]): unknown {
  const byService = new Map<string, Span[]>();
  for (const s of spans) {
    const list = byService.get(s.service);
    if (list === undefined) byService.set(s.service, [s]);
    else list.push(s);
  }
  return {
    resourceSpans: [...byService].map(([service, list]) => ({
      resource: { attributes: [{ key: 'service.name', value: { stringValue: service } }] },
      scopeSpans: [{
        scope: { name: 'ferry' },
        spans: list.map((s) => ({
          traceId: s.traceId,
          spanId: s.spanId,
          ...(s.parentSpanId === undefined ? {} : { parentSpanId: s.parentSpanId }),
          name: s.name,
          kind: SPAN_KIND[s.kind],
          startTimeUnixNano: unixNanos(s.startUnixUs),
          endTimeUnixNano: unixNanos(s.endUnixUs),
          attributes: Object.entries(s.attributes).map(([key, value]) => ({ key, value: anyValue(value) })),
          ...(s.error ? { status: { code: STATUS_CODE_ERROR } } : {}),
        })),
      }],
    })),
  };
}
