/**
 * The inference table API under `/api/2.0/serving-endpoints/{name}/inference-table`: pages of rows
 * (newest first), a streamed export (JSON Lines or CSV) and the writer's counts. Rows hold the
 * callers' inputs and the model's outputs, so reading them needs CAN_MANAGE on the endpoint; the
 * counts say nothing about the data and need CAN_VIEW.
 */
import type { ServerResponse } from 'node:http';
import { z } from 'zod';
import type { InferenceTablePage, InferenceTableRow, InferenceTableStatus } from '../api/index.js';
import { access, type ServerRouter } from '../auth/index.js';
import { configError } from '../config/index.js';
import { invalidParameter, notFound } from '../errors.js';
import type { Context } from '../http/index.js';
import type { InferenceRow, InferenceRowQuery, InferenceTableStore } from '../store/index.js';
import type { InferenceTableSettings, InferenceTableWriter } from './writer.js';

/** Most rows one page may ask for. */
export const MAX_PAGE_ROWS = 1000;
const DEFAULT_PAGE_ROWS = 100;

/** A row in the API's shape (snake_case, absent values as null so every row has every column). */
export function rowView(r: InferenceRow): InferenceTableRow {
  return {
    request_id: r.requestId, client_request_id: r.clientRequestId ?? null, endpoint_name: r.endpoint, timestamp_ms: r.timestampMs,
    status_code: r.statusCode, error_code: r.errorCode ?? null, execution_time_ms: r.executionTimeMs,
    served_entity: r.servedEntity, model_name: r.modelName, model_version: r.modelVersion, principal: r.principal,
    request: r.request ?? null, response: r.response ?? null, sampling_fraction: r.samplingFraction,
  };
}

/** The columns of a row, in CSV order. */
export const COLUMNS = [
  'request_id', 'client_request_id', 'endpoint_name', 'timestamp_ms', 'status_code', 'error_code', 'execution_time_ms',
  'served_entity', 'model_name', 'model_version', 'principal', 'request', 'response', 'sampling_fraction',
] as const satisfies ReadonlyArray<keyof InferenceTableRow>;
/** Every field of a row is a column (checked by tsc: a field missing from `COLUMNS` is an error here). */
const everyFieldIsAColumn = (k: keyof InferenceTableRow): (typeof COLUMNS)[number] => k;
void everyFieldIsAColumn;

/**
 * One CSV field (RFC 4180): quoted when it holds a quote, comma or line break; null is empty.
 * Text that a spreadsheet would run as a formula (starting with = + - @, a tab or a carriage
 * return: a caller's `client_request_id` or body is caller-chosen) gets a leading single quote,
 * OWASP's advice against CSV injection: `=HYPERLINK("http://x")` → `'=HYPERLINK("http://x")`.
 * Numbers are Ferry's own (a status, a time) and stay as they are.
 */
export function csvField(v: string | number | null): string {
  if (v === null) return '';
  const s = typeof v === 'string' && /^[=+\-@\t\r]/.test(v) ? `'${v}` : String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** A row as one CSV line, its fields in `COLUMNS` order. */
function csvLine(row: InferenceTableRow): string {
  return COLUMNS.map((c) => csvField(row[c])).join(',');
}

const millis = (what: string) => z.string().regex(/^\d{1,15}$/, `expected ${what} in milliseconds since the epoch`).transform(Number);
const filters = {
  start_ms: millis('the earliest time').optional(),
  end_ms: millis('the time after the last row').optional(),
  status: z.string().regex(/^[1-5]\d\d$/, 'expected an HTTP status code such as 500').transform(Number).optional(),
  served_entity: z.string().min(1, 'expected a served entity name').optional(),
};
const listQuery = z.strictObject({
  ...filters,
  max_results: z.string().regex(/^\d+$/, `expected a whole number from 1 to ${MAX_PAGE_ROWS}`).transform(Number)
    .pipe(z.number().int().min(1, `expected a whole number from 1 to ${MAX_PAGE_ROWS}`).max(MAX_PAGE_ROWS, `expected a whole number from 1 to ${MAX_PAGE_ROWS}`)).optional(),
  page_token: z.string().optional(),
});
const FORMATS = {
  jsonl: { contentType: 'application/x-ndjson', header: undefined, line: (r: InferenceRow) => JSON.stringify(rowView(r)) },
  csv: { contentType: 'text/csv; charset=utf-8', header: COLUMNS.join(','), line: (r: InferenceRow) => csvLine(rowView(r)) },
} as const;
const exportQuery = z.strictObject({
  ...filters,
  format: z.enum(['jsonl', 'csv'], { error: 'expected "jsonl" or "csv"' }).default('jsonl'),
});

export interface InferenceTableApiDeps {
  store: InferenceTableStore;
  writer: InferenceTableWriter;
  /** The endpoint's settings; undefined when there is no such endpoint (404). */
  settingsOf: (endpoint: string) => InferenceTableSettings | undefined;
}

export function inferenceTableRoutes(router: ServerRouter, deps: InferenceTableApiDeps): void {
  const base = '/api/2.0/serving-endpoints/:name/inference-table';
  const endpoint = (ctx: Context): { name: string; settings: InferenceTableSettings } => {
    const name = ctx.params.name ?? '';
    const settings = deps.settingsOf(name);
    if (settings === undefined) throw notFound(`Serving endpoint '${name}'`);
    return { name, settings };
  };
  const parse = <T extends z.ZodType>(schema: T, ctx: Context): z.output<T> => {
    const raw = Object.fromEntries(ctx.query);
    const r = schema.safeParse(raw);
    if (!r.success) throw configError(r.error, raw);
    const q = r.data as { start_ms?: number; end_ms?: number };
    if (q.start_ms !== undefined && q.end_ms !== undefined && q.end_ms <= q.start_ms) {
      throw invalidParameter('end_ms', q.end_ms, `a time after start_ms (${q.start_ms})`);
    }
    return r.data;
  };
  const rowQuery = (name: string, s: InferenceTableSettings, q: z.output<typeof exportQuery> | z.output<typeof listQuery>, maxResults: number): InferenceRowQuery => ({
    endpoint: name, endpointId: s.endpointId, maxResults,
    ...(q.start_ms === undefined ? {} : { startMs: q.start_ms }),
    ...(q.end_ms === undefined ? {} : { endMs: q.end_ms }),
    ...(q.status === undefined ? {} : { statusCode: q.status }),
    ...(q.served_entity === undefined ? {} : { servedEntity: q.served_entity }),
  });

  router
    .add('GET', base, async (ctx) => {
      const { name, settings } = endpoint(ctx);
      const q = parse(listQuery, ctx);
      const page = await deps.store.query({
        ...rowQuery(name, settings, q, q.max_results ?? DEFAULT_PAGE_ROWS),
        ...(q.page_token === undefined ? {} : { pageToken: q.page_token }),
      });
      return { body: { rows: page.items.map(rowView), ...(page.nextPageToken === undefined ? {} : { next_page_token: page.nextPageToken }) } satisfies InferenceTablePage };
    }, access.endpoint('CAN_MANAGE'))
    .add('GET', `${base}/export`, async (ctx) => {
      const { name, settings } = endpoint(ctx);
      const q = parse(exportQuery, ctx);
      const format = FORMATS[q.format];
      // The first page is read before the answer starts, so a failure is still a clean error.
      let page = await deps.store.query(rowQuery(name, settings, q, MAX_PAGE_ROWS));
      ctx.res.writeHead(200, {
        'content-type': format.contentType,
        'content-disposition': `attachment; filename="${name}-inference-table.${q.format}"`,
        'cache-control': 'no-store',
      });
      if (format.header !== undefined) await write(ctx.res, format.header + '\r\n');
      for (;;) {
        if (page.items.length > 0) await write(ctx.res, page.items.map((r) => format.line(r) + (q.format === 'csv' ? '\r\n' : '\n')).join(''));
        if (page.nextPageToken === undefined || ctx.res.destroyed) break;
        page = await deps.store.query({ ...rowQuery(name, settings, q, MAX_PAGE_ROWS), pageToken: page.nextPageToken });
      }
      ctx.res.end();
      return undefined;
    }, access.endpoint('CAN_MANAGE'))
    .add('GET', `${base}/status`, (ctx) => {
      const { name, settings } = endpoint(ctx);
      const c = deps.writer.countsOf(name);
      return {
        body: {
          enabled: settings.enabled, sample_fraction: settings.sampleFraction,
          queued_rows: c.queuedRows, written_rows: c.writtenRows, dropped_rows: c.droppedRows,
        } satisfies InferenceTableStatus,
      };
    }, access.endpoint('CAN_VIEW'));
}

/** Writes a chunk, waiting while the client's buffer is full (an export can be large). */
async function write(res: ServerResponse, chunk: string): Promise<void> {
  if (res.write(chunk) || res.destroyed) return;
  await new Promise<void>((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}
