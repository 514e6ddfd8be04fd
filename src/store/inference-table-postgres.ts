/**
 * The inference table in Postgres: the `inference_rows` table beside the metadata tables (schema in
 * postgres-migrations.ts), with the SQLite store's semantics and page tokens (inference-table.ts).
 * A batch is one multi-row INSERT: all of it is stored or none.
 */
import type pg from 'pg';
import { decodeCursor, encodeCursor, toRecord, type InferenceRow, type InferenceRowQuery, type InferenceTableStore } from './inference-table.js';
import { openPool } from './postgres.js';
import type { PageResult } from './types.js';

const COLUMNS = ['endpoint', 'endpoint_id', 'request_id', 'client_request_id', 'timestamp_ms', 'status_code', 'error_code', 'execution_time_ms',
  'served_entity', 'model_name', 'model_version', 'principal', 'request', 'response', 'sampling_fraction'];

/** Rows per INSERT statement: 15 parameters each stays under Postgres' 65,535 parameters. */
const ROWS_PER_INSERT = 1000;

export async function openPostgresInferenceTable(url: string): Promise<InferenceTableStore> {
  return new PostgresInferenceTable(await openPool(url));
}

class PostgresInferenceTable implements InferenceTableStore {
  constructor(private readonly pool: pg.Pool) {}

  async append(rows: readonly InferenceRow[]): Promise<void> {
    if (rows.length === 0) return;
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      try {
        for (let start = 0; start < rows.length; start += ROWS_PER_INSERT) {
          const chunk = rows.slice(start, start + ROWS_PER_INSERT);
          const tuples = chunk.map((_, i) => `(${COLUMNS.map((__, j) => `$${i * COLUMNS.length + j + 1}`).join(', ')})`);
          const params = chunk.flatMap((r) => [r.endpoint, r.endpointId, r.requestId, r.clientRequestId ?? null, r.timestampMs, r.statusCode, r.errorCode ?? null,
            r.executionTimeMs, r.servedEntity, r.modelName, r.modelVersion, r.principal, r.request ?? null, r.response ?? null, r.samplingFraction]);
          await client.query(`INSERT INTO inference_rows (${COLUMNS.join(', ')}) VALUES ${tuples.join(', ')}`, params);
        }
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
    } finally {
      client.release();
    }
  }

  async query(q: InferenceRowQuery): Promise<PageResult<InferenceRow>> {
    const [beforeMs, beforeSeq] = q.pageToken === undefined ? [Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER] : decodeCursor(q.pageToken);
    // The cursor is the (timestamp, seq) of the last row shown, as in the SQLite store.
    const { rows } = await this.pool.query<Record<string, unknown>>(`SELECT * FROM inference_rows
      WHERE endpoint = $1 AND endpoint_id = $2 AND timestamp_ms >= $3 AND timestamp_ms < $4
        AND ($5::integer IS NULL OR status_code = $5) AND ($6::text IS NULL OR served_entity = $6)
        AND (timestamp_ms, seq) < ($7, $8)
      ORDER BY timestamp_ms DESC, seq DESC LIMIT $9`, [q.endpoint, q.endpointId, q.startMs ?? 0, q.endMs ?? Number.MAX_SAFE_INTEGER,
      q.statusCode ?? null, q.servedEntity ?? null, beforeMs, beforeSeq, q.maxResults + 1]);
    const shown = rows.slice(0, q.maxResults);
    const last = shown[shown.length - 1];
    return { items: shown.map(toRecord), nextPageToken: rows.length > q.maxResults && last ? encodeCursor(last) : undefined };
  }

  async deleteBefore(beforeMs: number): Promise<number> {
    return (await this.pool.query('DELETE FROM inference_rows WHERE timestamp_ms < $1', [beforeMs])).rowCount ?? 0;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
