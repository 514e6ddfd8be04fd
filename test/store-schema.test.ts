/**
 * The SQLite and Postgres schemas are written once per dialect (src/store/migrations.ts,
 * postgres-migrations.ts, and inference-table.ts for SQLite's separate inference-table file; see
 * docs/storage.md, "Two schemas"). This test keeps them the same: after every migration, both
 * have the same tables, each with the same columns, nullability and kind of type, and the same
 * indexes but for the listed dialect-only ones.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import Database from 'better-sqlite3';
import pg from 'pg';
import { openInferenceTableStore, openStore } from '../src/store/index.js';
import { tempDir } from './support/index.js';
import { postgresUnavailable, startPostgres, type TestPostgres } from './support/postgres.js';

/** What a column's declared type stores, in either dialect. */
const KIND: Record<string, string> = {
  INTEGER: 'integer', BIGINT: 'integer', BOOLEAN: 'integer', TEXT: 'text', REAL: 'float', 'DOUBLE PRECISION': 'float',
};
/** Bookkeeping, not schema: SQLite's AUTOINCREMENT counters; Postgres's `user_version`. */
const BOOKKEEPING = new Set(['sqlite_sequence', 'ferry_schema_version']);
/** Indexes one dialect has for what only it does: Postgres's partial index for the registry's pending scan. */
const DIALECT_INDEXES = new Set(['model_versions_pending']);

type Schema = Record<string, string[]>;

async function sqliteSchema(dir: string): Promise<{ tables: Schema; indexes: string[] }> {
  const files = [path.join(dir, 'ferry.db'), path.join(dir, 'inference.db')];
  await (await openStore({ kind: 'sqlite', path: files[0]! })).close();
  await (await openInferenceTableStore({ kind: 'sqlite', path: files[1]! })).close();
  const tables: Schema = {};
  const indexes: string[] = [];
  for (const file of files) {
    const db = new Database(file, { readonly: true });
    try {
      for (const { name, type } of db.prepare("SELECT name, type FROM sqlite_master WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite_autoindex%'").all() as Array<{ name: string; type: string }>) {
        if (BOOKKEEPING.has(name)) continue;
        if (type === 'index') {
          indexes.push(name);
          continue;
        }
        const columns = db.prepare(`PRAGMA table_info(${name})`).all() as Array<{ name: string; type: string; notnull: number; pk: number }>;
        // A SQLite INTEGER PRIMARY KEY is the rowid: never null, as Postgres's identity column.
        tables[name] = columns.map((c) => `${c.name} ${KIND[c.type] ?? c.type}${c.notnull || c.pk ? ' not null' : ''}`).sort();
      }
    } finally {
      db.close();
    }
  }
  return { tables, indexes: indexes.sort() };
}

async function postgresSchema(url: string): Promise<{ tables: Schema; indexes: string[] }> {
  await (await openStore({ kind: 'postgres', url })).close();
  await (await openInferenceTableStore({ kind: 'postgres', url })).close();
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    const tables: Schema = {};
    const { rows } = await db.query<{ table_name: string; column_name: string; data_type: string; is_nullable: string }>(
      "SELECT table_name, column_name, upper(data_type) AS data_type, is_nullable FROM information_schema.columns WHERE table_schema = 'public'",
    );
    for (const c of rows) {
      if (BOOKKEEPING.has(c.table_name)) continue;
      (tables[c.table_name] ??= []).push(`${c.column_name} ${KIND[c.data_type] ?? c.data_type}${c.is_nullable === 'NO' ? ' not null' : ''}`);
    }
    for (const columns of Object.values(tables)) columns.sort();
    // Constraint-backed indexes (primary keys, UNIQUE) are not SQLite `CREATE INDEX`es either.
    const idx = await db.query<{ indexname: string }>(
      "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND indexname NOT IN (SELECT conname FROM pg_constraint)",
    );
    return { tables, indexes: idx.rows.map((r) => r.indexname).filter((n) => !DIALECT_INDEXES.has(n)).sort() };
  } finally {
    await db.end();
  }
}

const unavailable = postgresUnavailable();
let postgres: TestPostgres | undefined;

before(async () => {
  if (unavailable === undefined) postgres = await startPostgres();
});

after(async () => {
  await postgres?.stop();
});

test('SQLite and Postgres end with the same tables, columns and indexes', { skip: unavailable }, async () => {
  const dir = await tempDir();
  const lite = await sqliteSchema(dir).finally(() => fsp.rm(dir, { recursive: true, force: true }));
  const pgSchema = await postgresSchema(await postgres!.createDatabase());
  assert.ok(Object.keys(lite.tables).length >= 10 && lite.tables.endpoints?.includes('config_update text not null'), JSON.stringify(lite.tables));
  assert.deepEqual(pgSchema.tables, lite.tables);
  assert.deepEqual(pgSchema.indexes, lite.indexes);
});
