/**
 * The inference table writer: subscribes to the gateway's `ferry:gateway:request` events and turns
 * sampled inference calls of endpoints with `ai_gateway.inference_table_config.enabled` into rows.
 *
 * The subscriber runs inside the request's handler, so it only does O(1) work: check the
 * endpoint's settings, draw the sample, keep references to the bodies and append to a bounded
 * in-memory queue. It never awaits and never touches storage. A background flusher turns queued
 * captures into rows (bodies to text, `client_request_id` parsed) and writes them in batches, one
 * transaction each, at most `FLUSH_INTERVAL_MS` after the first row queued or as soon as
 * `FLUSH_BATCH_ROWS` are waiting. The queue is bounded (rows and bytes): when it is full a row is dropped and counted.
 */
import { randomUUID } from 'node:crypto';
import diagnosticsChannel from 'node:diagnostics_channel';
import { GATEWAY_REQUEST_CHANNEL, INFERENCE_TABLE_DROP_CHANNEL, type GatewayRequestEvent, type InferenceTableDropEvent } from '../diagnostics.js';
export { INFERENCE_TABLE_DROP_CHANNEL, type InferenceTableDropEvent } from '../diagnostics.js';
import type { InferenceRow, InferenceTableStore } from '../store/index.js';

/** Bodies larger than this (1 MiB, Databricks' limit) are replaced by `omittedBody(size)`. */
export const MAX_LOGGED_BODY_BYTES = 1024 * 1024;

/**
 * What a row holds instead of a body over `MAX_LOGGED_BODY_BYTES`: exactly
 * `{"ferry_body_omitted":true,"size_bytes":N}` (N the body's size in bytes), valid JSON that no
 * scoring request or response has.
 */
export function omittedBody(sizeBytes: number): string {
  return `{"ferry_body_omitted":true,"size_bytes":${sizeBytes}}`;
}

/**
 * Bodies held in the queue, in total. 10,000 queued rows of up to 1 MiB twice would be 20 GiB;
 * 256 MiB bounds the queue's memory whatever the row limit, and holds about 6 s of a busy
 * endpoint's traffic at 10,000 req/s of 2 KiB bodies.
 */
export const MAX_QUEUED_BODY_BYTES = 256 * 1024 * 1024;
/**
 * A row waits at most this long for its write: short enough that a reader sees a request almost
 * at once, long enough that a busy endpoint's rows share one transaction.
 */
export const FLUSH_INTERVAL_MS = 100;
/** Rows per transaction; a full batch is written at once, without waiting for the interval. */
export const FLUSH_BATCH_ROWS = 500;
/** How often old rows are deleted (and once at start): an hour is noise against a retention of days. */
const RETENTION_CHECK_MS = 3_600_000;

/** The channel the writer publishes an `InferenceTableDropEvent` on for every row it drops. */
const drops = diagnosticsChannel.channel(INFERENCE_TABLE_DROP_CHANNEL);


/** An endpoint's table settings, read per request. */
export interface InferenceTableSettings {
  /** Rows carry it, so a new endpoint of the same name does not see an old one's rows. */
  endpointId: string;
  enabled: boolean;
  /** Share of calls logged, 0 < f ≤ 1. */
  sampleFraction: number;
}

export interface InferenceTableWriterOptions {
  store: InferenceTableStore;
  /** The endpoint's settings; undefined when there is no such endpoint. */
  settingsOf: (endpoint: string) => InferenceTableSettings | undefined;
  /** Most rows held in memory, the batch being written included. */
  bufferRows: number;
  retentionMs: number;
  now?: () => number;
  /** A failed write or retention run (the rows are dropped and counted). */
  onError?: (err: unknown) => void;
}

/** Rows queued, written and dropped for one endpoint since the server started. */
export interface InferenceTableCounts {
  queuedRows: number;
  writtenRows: number;
  droppedRows: number;
}

/**
 * A captured call waiting for the flusher: the row's fields, with the bodies kept as received
 * (text and `client_request_id` come later, off the request path). It holds no reference to the
 * event, so an omitted body's buffer is not kept alive.
 */
interface Capture {
  row: Omit<InferenceRow, 'request' | 'response' | 'clientRequestId'>;
  request: Buffer | BinaryBody | string | undefined;
  response: Buffer | BinaryBody | string | undefined;
  bodyBytes: number;
}

export class InferenceTableWriter {
  private queue: Capture[] = [];
  /** Rows in the batch being written: they still count against `bufferRows`. */
  private writingRows = 0;
  private queuedBodyBytes = 0;
  private writing: Promise<void> | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private retentionTimer: NodeJS.Timeout | undefined;
  private subscribed = false;
  private readonly counts = new Map<string, InferenceTableCounts>();
  private readonly now: () => number;

  constructor(private readonly options: InferenceTableWriterOptions) {
    this.now = options.now ?? Date.now;
  }

  /** Deletes expired rows, then subscribes to the gateway's events and starts the retention timer. */
  async start(): Promise<void> {
    await this.enforceRetention();
    diagnosticsChannel.subscribe(GATEWAY_REQUEST_CHANNEL, this.onEvent);
    this.subscribed = true;
    this.retentionTimer = setInterval(() => {
      this.enforceRetention().catch((err: unknown) => this.options.onError?.(err));
    }, Math.min(RETENTION_CHECK_MS, this.options.retentionMs));
    this.retentionTimer.unref();
  }

  /** Deletes rows older than the retention; resolves with how many went. */
  enforceRetention(): Promise<number> {
    return this.options.store.deleteBefore(this.now() - this.options.retentionMs);
  }

  /** Rows queued, written and dropped for `endpoint` since the start (zeros when none). */
  countsOf(endpoint: string): InferenceTableCounts {
    return { ...(this.counts.get(endpoint) ?? { queuedRows: 0, writtenRows: 0, droppedRows: 0 }) };
  }

  /** Dropped rows per endpoint since the start (the metrics count them from the drop events instead). */
  droppedRows(): Map<string, number> {
    return new Map([...this.counts].map(([endpoint, c]) => [endpoint, c.droppedRows]));
  }

  /**
   * Takes one gateway event (the diagnostics_channel subscriber). Never throws: an exception in a
   * subscriber would surface as an uncaught exception in the server.
   */
  readonly onEvent = (message: unknown): void => {
    try {
      this.capture(message as GatewayRequestEvent);
    } catch (err) {
      this.options.onError?.(err);
    }
  };

  private capture(e: GatewayRequestEvent): void {
    if (!e.inference) return;
    const settings = this.options.settingsOf(e.endpoint);
    if (settings === undefined || !settings.enabled) return;
    if (settings.sampleFraction < 1 && Math.random() >= settings.sampleFraction) return;
    const request = kept(e.requestBody, e.requestHeaderBytes);
    const response = kept(e.responseBody, e.responseHeaderBytes);
    const bodyBytes = bodyLength(request) + bodyLength(response);
    const counts = this.countsFor(e.endpoint);
    if (this.queue.length + this.writingRows >= this.options.bufferRows || this.queuedBodyBytes + bodyBytes > MAX_QUEUED_BODY_BYTES) {
      this.drop(e.endpoint, 'queue_full', 1);
      return;
    }
    const row = {
      requestId: e.requestId === '' ? randomUUID() : e.requestId, endpoint: e.endpoint, endpointId: settings.endpointId, timestampMs: e.startMs,
      statusCode: e.status, errorCode: e.errorCode, executionTimeMs: Math.round(e.durationMs * 1000) / 1000,
      servedEntity: e.servedEntity, modelName: e.modelName, modelVersion: e.modelVersion, principal: e.principal,
      samplingFraction: settings.sampleFraction,
    };
    this.queue.push({ row, request, response, bodyBytes });
    this.queuedBodyBytes += bodyBytes;
    counts.queuedRows++;
    this.schedule();
  }

  /** Starts a write soon: at once when a batch is full, else after the interval. */
  private schedule(): void {
    if (this.writing !== undefined) return; // the running write schedules the next one
    const full = this.queue.length >= Math.min(FLUSH_BATCH_ROWS, this.options.bufferRows);
    if (this.flushTimer !== undefined && !full) return;
    clearTimeout(this.flushTimer);
    this.flushTimer = setTimeout(() => this.writeNext(), full ? 0 : FLUSH_INTERVAL_MS);
    this.flushTimer.unref();
  }

  /** Writes one batch in the background; when done, schedules the next if rows are waiting. */
  private writeNext(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.writing !== undefined || this.queue.length === 0) return;
    this.writing = this.writeBatch().finally(() => {
      this.writing = undefined;
      if (this.queue.length > 0) this.schedule();
    });
  }

  private async writeBatch(): Promise<void> {
    const batch = this.queue.splice(0, FLUSH_BATCH_ROWS);
    this.writingRows = batch.length;
    for (const c of batch) {
      this.queuedBodyBytes -= c.bodyBytes;
      this.countsFor(c.row.endpoint).queuedRows--;
    }
    try {
      await this.options.store.append(batch.map(toRow));
      for (const c of batch) this.countsFor(c.row.endpoint).writtenRows++;
    } catch (err) {
      const byEndpoint = new Map<string, number>();
      for (const c of batch) byEndpoint.set(c.row.endpoint, (byEndpoint.get(c.row.endpoint) ?? 0) + 1);
      for (const [endpoint, rows] of byEndpoint) this.drop(endpoint, 'write_failed', rows);
      this.options.onError?.(err);
    } finally {
      this.writingRows = 0;
    }
  }

  /** Resolves once every row queued before the call is written (or dropped by a failed write). */
  async flush(): Promise<void> {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    while (this.writing !== undefined || this.queue.length > 0) {
      if (this.writing === undefined) this.writeNext();
      await this.writing;
    }
  }

  /** Stops listening and writes what is queued. The store stays open (its owner closes it). */
  async close(): Promise<void> {
    if (this.subscribed) diagnosticsChannel.unsubscribe(GATEWAY_REQUEST_CHANNEL, this.onEvent);
    this.subscribed = false;
    clearInterval(this.retentionTimer);
    await this.flush();
  }

  private drop(endpoint: string, reason: InferenceTableDropEvent['reason'], rows: number): void {
    this.countsFor(endpoint).droppedRows += rows;
    if (drops.hasSubscribers) drops.publish({ endpoint, reason, rows } satisfies InferenceTableDropEvent);
  }

  private countsFor(endpoint: string): InferenceTableCounts {
    let c = this.counts.get(endpoint);
    if (c === undefined) {
      c = { queuedRows: 0, writtenRows: 0, droppedRows: 0 };
      this.counts.set(endpoint, c);
    }
    return c;
  }
}

/**
 * A body to keep: the buffer itself (no copy on the request path), or the marker when too large.
 * A body with binary tensor data (its JSON header `headerBytes` long) is kept as a binary body,
 * written as text by `bodyText`.
 */
function kept(body: Buffer | undefined, headerBytes: number | undefined): Buffer | BinaryBody | string | undefined {
  if (body === undefined) return undefined;
  if (body.length > MAX_LOGGED_BODY_BYTES) return omittedBody(body.length);
  return headerBytes === undefined ? body : { body, headerBytes };
}

/** An OIP v2 body with binary tensor data: a JSON header of `headerBytes`, then raw tensor bytes. */
interface BinaryBody {
  body: Buffer;
  headerBytes: number;
}

/**
 * A kept body as the row's text: JSON bodies as they came; a binary one as
 * `{"inference_header": <its JSON header>, "binary_data_base64": "<the tensor bytes>"}`, so the
 * row stays valid JSON and loses nothing.
 */
function bodyText(b: Buffer | BinaryBody | string | undefined): string | undefined {
  if (b === undefined || typeof b === 'string') return b;
  if (Buffer.isBuffer(b)) return b.toString('utf8');
  return `{"inference_header":${b.body.subarray(0, b.headerBytes).toString('utf8')},"binary_data_base64":"${b.body.subarray(b.headerBytes).toString('base64')}"}`;
}

const bodyLength = (b: Buffer | BinaryBody | string | undefined): number => (b === undefined || typeof b === 'string' ? 0 : Buffer.isBuffer(b) ? b.length : b.body.length);

const CLIENT_REQUEST_ID = Buffer.from('"client_request_id"');

/** Databricks' `client_request_id`: a top-level string of a JSON object body; parsed only when the key is there. */
function clientRequestIdOf(body: Buffer | BinaryBody | string | undefined): string | undefined {
  if (!Buffer.isBuffer(body) || !body.includes(CLIENT_REQUEST_ID)) return undefined;
  try {
    const parsed = JSON.parse(body.toString('utf8')) as unknown;
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined;
    const id = (parsed as Record<string, unknown>).client_request_id;
    return typeof id === 'string' ? id : undefined;
  } catch {
    return undefined; // the model answered the malformed body; the row still logs it
  }
}

function toRow(c: Capture): InferenceRow {
  return {
    ...c.row,
    clientRequestId: clientRequestIdOf(c.request),
    request: bodyText(c.request),
    response: bodyText(c.response),
  };
}
