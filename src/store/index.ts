/**
 * The metadata store: registered models, versions, aliases, tags and API tokens. One interface
 * (`MetadataStore`, in types.ts), implemented by SQLite (default, embedded) and later Postgres.
 * Every method is async so both implementations fit; every acknowledged write is durable (SQLite:
 * WAL + synchronous=FULL). Nothing outside this folder writes SQL.
 */
import type { MetadataStore } from './types.js';
import { openSqliteStore } from './sqlite.js';

export type * from './types.js';
export { openInferenceTableStore, type InferenceRow, type InferenceRowQuery, type InferenceTableStore, type InferenceTableStoreOptions } from './inference-table.js';

export interface StoreOptions {
  kind: 'sqlite';
  /** SQLite database file. */
  path: string;
}

export function openStore(opts: StoreOptions): Promise<MetadataStore> {
  return openSqliteStore(opts.path);
}
