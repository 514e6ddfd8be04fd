/**
 * The inference table store: one row per logged inference call (src/inference-tables writes them,
 * its API reads them). An interface with two implementations: Postgres (inference-table-postgres.ts,
 * beside the metadata tables) and SQLite here, in its own file (`<data-dir>/inference.db`) so that bulk request logging never contends with the metadata
 * database's writes.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { FerryError } from '../errors.js';
import { checkWal, openError } from './sqlite-integrity.js';
import type { PageResult } from './types.js';

/** One logged inference call. */
export interface InferenceRow {
  /** Ferry's id of the request (unique). */
  requestId: string;
  /** The request body's top-level `client_request_id` string, when it had one. */
  clientRequestId: string | undefined;
  endpoint: string;
  /** The id of the endpoint the row belongs to: a new endpoint of the same name does not see it. */
  endpointId: string;
  /** When the request arrived (ms since the epoch). */
  timestampMs: number;
  statusCode: number;
  /** The error code of an answer produced by Ferry rather than the model. */
  errorCode: string | undefined;
  executionTimeMs: number;
  servedEntity: string;
  modelName: string;
  modelVersion: string;
  principal: string;
  /** Bodies as UTF-8 text (or the omission marker); undefined when the request had none. */
  request: string | undefined;
  response: string | undefined;
  /** The endpoint's sample fraction when the row was taken (1: every call logged). */
  samplingFraction: number;
}

/** Rows of one endpoint, newest first; `startMs` inclusive, `endMs` exclusive. */
export interface InferenceRowQuery {
  endpoint: string;
  endpointId: string;
  startMs?: number;
  endMs?: number;
  statusCode?: number;
  servedEntity?: string;
  maxResults: number;
  /** `nextPageToken` of the previous page. */
  pageToken?: string;
}

export interface InferenceTableStore {
  /** Appends rows in one transaction: when it resolves all of them are stored, when it rejects none. */
  append(rows: readonly InferenceRow[]): Promise<void>;
  /** Newest first (by timestamp, then by arrival); a bad page token is a 400 naming `page_token`. */
  query(q: InferenceRowQuery): Promise<PageResult<InferenceRow>>;
  /** Deletes every row with a timestamp before `beforeMs`; resolves with how many went. */
  deleteBefore(beforeMs: number): Promise<number>;
  close(): Promise<void>;
}

export type InferenceTableStoreOptions =
  | { kind: 'sqlite'; /** SQLite database file. */ path: string }
  | { kind: 'postgres'; /** The metadata store's postgres:// URL: the rows go to a table of the same database. */ url: string };


/** Schema versions, applied in order (`user_version` counts the applied ones). */
const MIGRATIONS = [`
  CREATE TABLE inference_rows (
    seq INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    client_request_id TEXT,
    timestamp_ms INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    error_code TEXT,
    execution_time_ms REAL NOT NULL,
    served_entity TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    principal TEXT NOT NULL,
    request TEXT,
    response TEXT,
    sampling_fraction REAL NOT NULL
  );
  CREATE INDEX inference_rows_endpoint_time ON inference_rows (endpoint, endpoint_id, timestamp_ms, seq);
  CREATE INDEX inference_rows_time ON inference_rows (timestamp_ms);
`];

type Row = Record<string, unknown>;

export async function openSqliteInferenceTable(file: string): Promise<InferenceTableStore> {
  const what = 'The inference table database';
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  // The WAL check and damaged-file message as for the metadata database; no quick_check at start,
  // as this file can grow to gigabytes of logged requests (a damaged page shows as a 500 naming it).
  checkWal(file, what);
  let db: Database.Database | undefined;
  try {
    db = new Database(file);
    db.pragma('journal_mode = WAL');
    // NORMAL, not FULL: a committed batch survives a crash of the server; a power cut may lose the
    // last batches, as a crash loses the rows still queued in memory anyway. It saves an fsync per
    // batch on the disk the metadata database needs for its own durable writes.
    db.pragma('synchronous = NORMAL');
    db.pragma('busy_timeout = 5000');
    const current = db.pragma('user_version', { simple: true }) as number;
    if (current > MIGRATIONS.length) {
      throw new FerryError('INTERNAL_ERROR', `The inference table database ${file} is at schema version ${current}, newer than this Ferry (${MIGRATIONS.length}). Upgrade Ferry.`);
    }
    const opened = db;
    for (let v = current; v < MIGRATIONS.length; v++) {
      opened.transaction(() => {
        opened.exec(MIGRATIONS[v] ?? '');
        opened.pragma(`user_version = ${v + 1}`);
      })();
    }
  } catch (err) {
    db?.close();
    throw openError(err, file, what);
  }
  return new SqliteInferenceTable(db);
}

class SqliteInferenceTable implements InferenceTableStore {
  private readonly insert: Database.Statement;
  private readonly select: Database.Statement;
  private readonly prune: Database.Statement;
  private readonly appendAll: (rows: readonly InferenceRow[]) => void;

  constructor(private readonly db: Database.Database) {
    this.insert = db.prepare(`INSERT INTO inference_rows (endpoint, endpoint_id, request_id, client_request_id, timestamp_ms, status_code,
      error_code, execution_time_ms, served_entity, model_name, model_version, principal, request, response, sampling_fraction)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
    // The cursor is the (timestamp, seq) of the last row shown: rows arriving meanwhile cannot
    // shift the pages, as offsets would.
    this.select = db.prepare(`SELECT * FROM inference_rows
      WHERE endpoint = ? AND endpoint_id = ? AND timestamp_ms >= ? AND timestamp_ms < ?
        AND (? IS NULL OR status_code = ?) AND (? IS NULL OR served_entity = ?)
        AND (timestamp_ms, seq) < (?, ?)
      ORDER BY timestamp_ms DESC, seq DESC LIMIT ?`);
    this.prune = db.prepare('DELETE FROM inference_rows WHERE timestamp_ms < ?');
    this.appendAll = db.transaction((rows: readonly InferenceRow[]) => {
      for (const r of rows) {
        this.insert.run(r.endpoint, r.endpointId, r.requestId, r.clientRequestId ?? null, r.timestampMs, r.statusCode, r.errorCode ?? null,
          r.executionTimeMs, r.servedEntity, r.modelName, r.modelVersion, r.principal, r.request ?? null, r.response ?? null, r.samplingFraction);
      }
    });
  }

  async append(rows: readonly InferenceRow[]): Promise<void> {
    this.appendAll(rows);
  }

  async query(q: InferenceRowQuery): Promise<PageResult<InferenceRow>> {
    const [beforeMs, beforeSeq] = q.pageToken === undefined ? [Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER] : decodeCursor(q.pageToken);
    const rows = this.select.all(q.endpoint, q.endpointId, q.startMs ?? 0, q.endMs ?? Number.MAX_SAFE_INTEGER,
      q.statusCode ?? null, q.statusCode ?? null, q.servedEntity ?? null, q.servedEntity ?? null, beforeMs, beforeSeq, q.maxResults + 1) as Row[];
    const shown = rows.slice(0, q.maxResults);
    const last = shown[shown.length - 1];
    return {
      items: shown.map(toRecord),
      nextPageToken: rows.length > q.maxResults && last ? encodeCursor(last) : undefined,
    };
  }

  async deleteBefore(beforeMs: number): Promise<number> {
    return this.prune.run(beforeMs).changes;
  }

  async close(): Promise<void> {
    this.db.close();
  }
}

/** The page token after `last`, the last row shown: its (timestamp, seq). */
export function encodeCursor(last: Row): string {
  return Buffer.from(`row:${Number(last.timestamp_ms)}:${Number(last.seq)}`).toString('base64url');
}

export function decodeCursor(token: string): [number, number] {
  const m = /^row:(\d{1,15}):(\d{1,15})$/.exec(Buffer.from(token, 'base64url').toString('utf8'));
  if (!m) throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid value ${JSON.stringify(token.slice(0, 80))} for 'page_token': use the next_page_token of a previous response.`);
  return [Number(m[1]), Number(m[2])];
}

const optional = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

export function toRecord(r: Row): InferenceRow {
  return {
    requestId: String(r.request_id), clientRequestId: optional(r.client_request_id), endpoint: String(r.endpoint), endpointId: String(r.endpoint_id),
    timestampMs: Number(r.timestamp_ms), statusCode: Number(r.status_code), errorCode: optional(r.error_code), executionTimeMs: Number(r.execution_time_ms),
    servedEntity: String(r.served_entity), modelName: String(r.model_name), modelVersion: String(r.model_version), principal: String(r.principal),
    request: optional(r.request), response: optional(r.response), samplingFraction: Number(r.sampling_fraction),
  };
}
