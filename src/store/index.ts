/**
 * The metadata store: registered models, versions, aliases, tags, endpoints, principals, tokens,
 * grants, the audit log and MLflow tracking (experiments and runs, `store.tracking`). One interface (`MetadataStore`, in types.ts), implemented by SQLite
 * (default, embedded) and Postgres (`databaseUrl`). Every method is async so both implementations
 * fit; every acknowledged write is durable (SQLite: WAL + synchronous=FULL; Postgres: committed).
 * Nothing outside this folder writes SQL.
 */
import path from 'node:path';
import type { MetadataStore } from './types.js';
import { openSqliteInferenceTable, type InferenceTableStore, type InferenceTableStoreOptions } from './inference-table.js';
import { guardStore } from './guard.js';
import { openSqliteStore } from './sqlite.js';

export type * from './types.js';
export type * from './tracking.js';
export { DEFAULT_EXPERIMENT_ID } from './tracking.js';
export type { InferenceRow, InferenceRowQuery, InferenceTableStore, InferenceTableStoreOptions } from './inference-table.js';

export type StoreOptions =
  | {
    kind: 'sqlite'; /** SQLite database file. */ path: string;
    /**
     * Another process of this server (its primary) opened, checked and migrated the file already:
     * open it without the integrity checks and migrations (a gateway worker's read connection).
     */
    opened?: boolean;
  }
  | { kind: 'postgres'; /** postgres://user:pass@host:5432/db (libpq-style query parameters such as ?host=/socket/dir work too). */ url: string };

/**
 * Opens the store and brings its schema up to date (migrations run once, under a lock). Postgres
 * is imported only when chosen: every `ferry` process, replicas included, loads this folder.
 */
export async function openStore(opts: StoreOptions): Promise<MetadataStore> {
  return opts.kind === 'postgres'
    ? guardStore(await (await import('./postgres.js')).openPostgresStore(opts.url), 'the metadata database (Postgres)')
    : guardStore(await openSqliteStore(opts.path, opts.opened === true), `the metadata database ${path.basename(opts.path)}`);
}

/** Opens the inference table store (SQLite file, or a table beside the Postgres metadata). */
export async function openInferenceTableStore(opts: InferenceTableStoreOptions): Promise<InferenceTableStore> {
  return opts.kind === 'postgres'
    ? guardStore(await (await import('./inference-table-postgres.js')).openPostgresInferenceTable(opts.url), 'the inference table (Postgres)')
    : guardStore(await openSqliteInferenceTable(opts.path), `the inference table database ${path.basename(opts.path)}`);
}
