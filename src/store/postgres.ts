/**
 * Postgres metadata store (node-postgres 8), for a server whose state must outlive its machine
 * (Kubernetes, several gateways later). Same schema and semantics as the SQLite store: a write is
 * committed (and, with Postgres' default synchronous_commit=on, flushed to its WAL) before the API
 * acknowledges it. Multi-statement changes run in one transaction on one pooled client; read-then-
 * write steps lock the rows they read (`FOR UPDATE`) or use one atomic statement (`ON CONFLICT DO
 * NOTHING`, `next_version = next_version + 1 RETURNING`), so concurrent servers or requests cannot
 * hand out one version number twice or create one name twice.
 */
import pg from 'pg';
import { FerryError, notFound } from '../errors.js';
import { PG_MIGRATIONS } from './postgres-migrations.js';
import { numbered } from './tracking-rows.js';
import { PostgresTracking } from './tracking-postgres.js';
import type { TrackingStore } from './tracking.js';
import {
  artifactParams, auditPage, MODEL_EDIT_LEVELS, afterToken, decodePageToken, endpointParams, filterSql, keysetPage, orderSql, renameModelSql, toEndpoint, toGatewayLoad, toPrincipal, toModel, toToken, toVersion as toVersionRow, type Row,
} from './rows.js';
import type {
  AuditQuery, AuditRecord, EndpointRecord, GatewayLoadReport, Grant, MetadataStore, ModelFilter, ModelOrder, ModelVersionPatch, ModelVersionRecord, ObjectType, Page,
  PageResult, PrincipalRecord, RegisteredModelRecord, TokenRecord, BulkVersionEntry,
} from './types.js';

/** A pool or one of its clients (inside a transaction): both run queries. */
type Db = pg.Pool | pg.PoolClient;

/**
 * Key of the advisory lock that serializes migrations: servers starting at once against one
 * database migrate one after the other, and the later ones find nothing left to do.
 */
const MIGRATION_LOCK_KEY = 0x4665_7272_79; // "Ferry"

/** Opens a pool on `url` (postgres://user:pass@host:5432/db) and brings the schema up to date. */
export async function openPostgresStore(url: string): Promise<MetadataStore> {
  return new PostgresStore(await openPool(url));
}

/** A pool on `url` with the schema up to date (also used by the Postgres inference table). */
export async function openPool(url: string): Promise<pg.Pool> {
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  // An idle client that loses its connection (server restart) emits 'error' on the pool; without
  // a listener that would crash the process. The next query gets a fresh connection.
  pool.on('error', () => undefined);
  try {
    await migrate(pool);
  } catch (err) {
    await pool.end();
    throw err;
  }
  return pool;
}

/**
 * Applies the migrations newer than the database's schema version, each in its own transaction,
 * under an advisory lock held on one connection for the whole run.
 */
async function migrate(pool: pg.Pool): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    try {
      await client.query('CREATE TABLE IF NOT EXISTS ferry_schema_version (version INTEGER NOT NULL)');
      const { rows } = await client.query<{ version: number }>('SELECT version FROM ferry_schema_version');
      const current = rows[0]?.version ?? 0;
      if (current > PG_MIGRATIONS.length) {
        throw new FerryError('INTERNAL_ERROR', `The metadata database is at schema version ${current}, newer than this Ferry (${PG_MIGRATIONS.length}). Upgrade Ferry.`);
      }
      for (let v = current; v < PG_MIGRATIONS.length; v++) {
        await inTransaction(client, async () => {
          await client.query(PG_MIGRATIONS[v] ?? '');
          await client.query('DELETE FROM ferry_schema_version');
          await client.query('INSERT INTO ferry_schema_version (version) VALUES ($1)', [v + 1]);
        });
      }
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
    }
  } finally {
    client.release();
  }
}

/** BEGIN, `fn`, COMMIT; ROLLBACK (and rethrow) when `fn` throws. */
async function inTransaction<T>(client: pg.PoolClient, fn: () => Promise<T>): Promise<T> {
  await client.query('BEGIN');
  try {
    const result = await fn();
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

async function all(db: Db, sql: string, params: unknown[] = []): Promise<Row[]> {
  return (await db.query<Row>(sql, params)).rows;
}

async function one(db: Db, sql: string, params: unknown[] = []): Promise<Row | undefined> {
  return (await db.query<Row>(sql, params)).rows[0];
}

async function changes(db: Db, sql: string, params: unknown[] = []): Promise<number> {
  return (await db.query(sql, params)).rowCount ?? 0;
}

const ENDPOINT_FIELDS = [
  ['name', 'name'], ['id', 'id'], ['creator', 'creator'], ['created_ms', 'createdMs'], ['updated_ms', 'updatedMs'], ['description', 'description'],
  ['tags', 'tags'], ['config', 'config'], ['pending_config', 'pendingConfig'], ['config_update', 'configUpdate'], ['update_message', 'updateMessage'],
  ['ai_gateway', 'aiGateway'],
] as const;

/** An endpoint's values in ENDPOINT_FIELDS order ($1 is the name). */
function endpointValues(e: EndpointRecord): unknown[] {
  const p = endpointParams(e);
  return ENDPOINT_FIELDS.map(([, key]) => p[key]);
}

class PostgresStore implements MetadataStore {
  readonly tracking: TrackingStore;

  constructor(private readonly pool: pg.Pool) {
    this.tracking = new PostgresTracking(pool, (fn) => this.tx(fn));
  }

  // ---- registered models -------------------------------------------------------------------

  async createRegisteredModel(m: { name: string; description: string; tags: Record<string, string>; creator?: string }, nowMs: number): Promise<RegisteredModelRecord> {
    return this.tx(async (c) => {
      // A concurrent insert of the same name waits for the first to commit, then inserts nothing.
      const inserted = await changes(c, `INSERT INTO registered_models (name, description, created_ms, updated_ms, next_version) VALUES ($1, $2, $3, $3, 1)
        ON CONFLICT (name) DO NOTHING`, [m.name, m.description, nowMs]);
      if (inserted === 0) throw new FerryError('RESOURCE_ALREADY_EXISTS', `Registered model '${m.name}' already exists.`);
      if (m.creator !== undefined) await replaceGrants(c, 'registered-model', m.name, [{ grantee: m.creator, level: 'CAN_MANAGE' }]);
      for (const [k, v] of Object.entries(m.tags)) await c.query('INSERT INTO registered_model_tags (name, key, value) VALUES ($1, $2, $3)', [m.name, k, v]);
      return loadModel(c, m.name);
    });
  }

  async getRegisteredModel(name: string): Promise<RegisteredModelRecord | undefined> {
    return (await modelRow(this.pool, name)) ? loadModel(this.pool, name) : undefined;
  }

  async updateRegisteredModel(name: string, patch: { description: string }, nowMs: number): Promise<RegisteredModelRecord> {
    return this.tx(async (c) => {
      await requireModel(c, name);
      await c.query('UPDATE registered_models SET description = $1, updated_ms = $2 WHERE name = $3', [patch.description, nowMs, name]);
      return loadModel(c, name);
    });
  }

  async deleteRegisteredModel(name: string): Promise<ModelVersionRecord[]> {
    return this.tx(async (c) => {
      await requireModel(c, name);
      const versions = await toVersions(c, await all(c, 'SELECT * FROM model_versions WHERE name = $1 ORDER BY version', [name]));
      // Tags, aliases and versions go with the model (ON DELETE CASCADE); grants are not keyed to it.
      await c.query('DELETE FROM registered_models WHERE name = $1', [name]);
      await replaceGrants(c, 'registered-model', name, []);
      return versions;
    });
  }

  async searchRegisteredModels(filter: ModelFilter, order: ModelOrder, page: Page): Promise<PageResult<RegisteredModelRecord>> {
    const { where, params } = filterSql(filter, 'registered_model_tags', 'm', 'postgres');
    const orderBy = orderSql(order);
    const after = afterToken(where, page.pageToken, order, 'm', 'postgres', params);
    const rows = await all(this.pool, `SELECT m.name, m.updated_ms FROM registered_models m ${after} ORDER BY ${orderBy} LIMIT $${params.length + 1}`,
      [...params, page.maxResults + 1]);
    const names = keysetPage(rows, page.maxResults, order, (r) => String(r.name));
    // A model deleted between the two reads is left out rather than failing the whole page.
    const items = await Promise.all(names.items.map(async (n) => ((await modelRow(this.pool, n)) ? loadModel(this.pool, n) : undefined)));
    return { items: items.filter((m) => m !== undefined), nextPageToken: names.nextPageToken };
  }

  renameRegisteredModel(name: string, newName: string, nowMs: number): Promise<RegisteredModelRecord> {
    return this.tx(async (c) => {
      await requireModel(c, name);
      if (await modelRow(c, newName)) throw new FerryError('RESOURCE_ALREADY_EXISTS', `Registered model '${newName}' already exists.`);
      for (const [sql, params] of renameModelSql(name, newName, nowMs)) await c.query(numbered(sql), params);
      return loadModel(c, newName);
    });
  }

  async setRegisteredModelTag(name: string, key: string, value: string, nowMs: number): Promise<void> {
    await this.tx(async (c) => {
      await requireModel(c, name);
      await c.query('INSERT INTO registered_model_tags (name, key, value) VALUES ($1, $2, $3) ON CONFLICT (name, key) DO UPDATE SET value = excluded.value', [name, key, value]);
      await touchModel(c, name, nowMs);
    });
  }

  async deleteRegisteredModelTag(name: string, key: string, nowMs: number): Promise<void> {
    await this.tx(async (c) => {
      await requireModel(c, name);
      await c.query('DELETE FROM registered_model_tags WHERE name = $1 AND key = $2', [name, key]);
      await touchModel(c, name, nowMs);
    });
  }

  // ---- model versions ----------------------------------------------------------------------

  async createModelVersion(v: { name: string; source: string; runId: string; description: string; tags: Record<string, string> }, nowMs: number): Promise<ModelVersionRecord> {
    return this.tx(async (c) => {
      // One statement reads and bumps the counter under the row lock: no two callers get one number.
      const bumped = await one(c, 'UPDATE registered_models SET next_version = next_version + 1, updated_ms = $2 WHERE name = $1 RETURNING next_version - 1 AS version',
        [v.name, nowMs]);
      if (!bumped) throw notFound(`Registered model '${v.name}'`);
      const version = Number(bumped.version);
      await c.query(`INSERT INTO model_versions (name, version, created_ms, updated_ms, description, source, run_id, status, status_message)
        VALUES ($1, $2, $3, $3, $4, $5, $6, 'PENDING_REGISTRATION', '')`, [v.name, version, nowMs, v.description, v.source, v.runId]);
      for (const [k, val] of Object.entries(v.tags)) {
        await c.query('INSERT INTO model_version_tags (name, version, key, value) VALUES ($1, $2, $3, $4)', [v.name, version, k, val]);
      }
      return loadVersion(c, v.name, version);
    });
  }

  async createReadyModelVersions(entries: readonly BulkVersionEntry[], nowMs: number): Promise<Array<number | undefined>> {
    return this.tx(async (c) => {
      const versions: Array<number | undefined> = [];
      for (const e of entries) {
        const created = await changes(c, `INSERT INTO registered_models (name, description, created_ms, updated_ms, next_version) VALUES ($1, '', $2, $2, 1)
          ON CONFLICT (name) DO NOTHING`, [e.name, nowMs]);
        if (created === 1 && e.creator !== undefined) await replaceGrants(c, 'registered-model', e.name, [{ grantee: e.creator, level: 'CAN_MANAGE' }]);
        if (created === 0 && e.editors !== undefined) {
          // The model row's lock (FOR SHARE) keeps it from being deleted and re-created while its grants are read.
          await c.query('SELECT 1 FROM registered_models WHERE name = $1 FOR SHARE', [e.name]);
          const grant = await one(c, `SELECT 1 FROM permissions WHERE object_type = 'registered-model' AND object_name = $1 AND grantee = ANY($2::text[]) AND level = ANY($3::text[])`,
            [e.name, [...e.editors], [...MODEL_EDIT_LEVELS]]);
          if (grant === undefined) {
            versions.push(undefined);
            continue;
          }
        }
        const bumped = await one(c, 'UPDATE registered_models SET next_version = next_version + 1, updated_ms = $2 WHERE name = $1 RETURNING next_version - 1 AS version',
          [e.name, nowMs]);
        const version = Number(bumped?.version);
        await c.query(`INSERT INTO model_versions (name, version, created_ms, updated_ms, description, source, run_id, status, status_message,
            artifact_path, flavor, model_file, signature, input_example, sha256, size_bytes)
          VALUES ($1, $2, $3, $3, '', $4, '', 'READY', '', $5, $6, $7, $8, $9, $10, $11)`, [e.name, version, nowMs, e.source, ...artifactParams(e.artifact)]);
        versions.push(version);
      }
      return versions;
    });
  }

  async getModelVersion(name: string, version: number): Promise<ModelVersionRecord | undefined> {
    const row = await one(this.pool, 'SELECT * FROM model_versions WHERE name = $1 AND version = $2', [name, version]);
    return row ? toVersion(this.pool, row) : undefined;
  }

  async latestModelVersion(name: string): Promise<ModelVersionRecord | undefined> {
    const row = await one(this.pool, 'SELECT * FROM model_versions WHERE name = $1 ORDER BY version DESC LIMIT 1', [name]);
    return row ? toVersion(this.pool, row) : undefined;
  }

  async updateModelVersion(name: string, version: number, patch: ModelVersionPatch, nowMs: number): Promise<ModelVersionRecord> {
    return this.tx(async (c) => {
      const current = await loadVersion(c, name, version, 'FOR UPDATE');
      await c.query(`UPDATE model_versions SET description = $1, status = $2, status_message = $3, stage = $4, updated_ms = $5,
          artifact_path = $6, flavor = $7, model_file = $8, signature = $9, input_example = $10, sha256 = $11, size_bytes = $12
        WHERE name = $13 AND version = $14`, [
        patch.description ?? current.description, patch.status ?? current.status, patch.statusMessage ?? current.statusMessage, patch.stage ?? current.stage, nowMs,
        ...artifactParams(patch.artifact ?? current.artifact), name, version,
      ]);
      return loadVersion(c, name, version);
    });
  }

  async deleteModelVersion(name: string, version: number): Promise<ModelVersionRecord | undefined> {
    return this.tx(async (c) => {
      const row = await one(c, 'SELECT * FROM model_versions WHERE name = $1 AND version = $2 FOR UPDATE', [name, version]);
      if (!row) return undefined;
      const record = await toVersion(c, row);
      await c.query('DELETE FROM model_versions WHERE name = $1 AND version = $2', [name, version]);
      return record;
    });
  }

  async searchModelVersions(filter: ModelFilter, page: Page): Promise<PageResult<ModelVersionRecord>> {
    const { where, params } = filterSql(filter, 'model_version_tags', 'v', 'postgres');
    const after = afterToken(where, page.pageToken, 'versions', 'v', 'postgres', params);
    const rows = await all(this.pool, `SELECT v.* FROM model_versions v ${after} ORDER BY v.name ASC, v.version DESC LIMIT $${params.length + 1}`,
      [...params, page.maxResults + 1]);
    const shown = keysetPage(rows, page.maxResults, 'versions', (r) => r);
    return { items: await toVersions(this.pool, shown.items), nextPageToken: shown.nextPageToken };
  }

  async pendingModelVersions(): Promise<ModelVersionRecord[]> {
    return toVersions(this.pool, await all(this.pool, "SELECT * FROM model_versions WHERE status = 'PENDING_REGISTRATION' ORDER BY name, version"));
  }

  async artifactPathInUse(prefix: string): Promise<boolean> {
    // LIKE over a text_pattern_ops index: the collation's order does not matter to it.
    const rows = await all(this.pool, "SELECT 1 FROM model_versions WHERE artifact_path LIKE $1 ESCAPE '\\' LIMIT 1", [`${prefix.replace(/[\\%_]/g, '\\$&')}%`]);
    return rows.length > 0;
  }

  async setModelVersionTag(name: string, version: number, key: string, value: string, nowMs: number): Promise<void> {
    await this.tx(async (c) => {
      await loadVersion(c, name, version, 'FOR UPDATE');
      await c.query(`INSERT INTO model_version_tags (name, version, key, value) VALUES ($1, $2, $3, $4)
        ON CONFLICT (name, version, key) DO UPDATE SET value = excluded.value`, [name, version, key, value]);
      await c.query('UPDATE model_versions SET updated_ms = $1 WHERE name = $2 AND version = $3', [nowMs, name, version]);
    });
  }

  async deleteModelVersionTag(name: string, version: number, key: string, nowMs: number): Promise<void> {
    await this.tx(async (c) => {
      await loadVersion(c, name, version, 'FOR UPDATE');
      await c.query('DELETE FROM model_version_tags WHERE name = $1 AND version = $2 AND key = $3', [name, version, key]);
      await c.query('UPDATE model_versions SET updated_ms = $1 WHERE name = $2 AND version = $3', [nowMs, name, version]);
    });
  }

  // ---- aliases -----------------------------------------------------------------------------

  async setAlias(name: string, alias: string, version: number, nowMs: number): Promise<void> {
    await this.tx(async (c) => {
      await loadVersion(c, name, version, 'FOR UPDATE');
      await c.query('INSERT INTO model_aliases (name, alias, version) VALUES ($1, $2, $3) ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version', [name, alias, version]);
      await touchModel(c, name, nowMs);
    });
  }

  async deleteAlias(name: string, alias: string, nowMs: number): Promise<boolean> {
    return this.tx(async (c) => {
      await requireModel(c, name);
      const deleted = await changes(c, 'DELETE FROM model_aliases WHERE name = $1 AND alias = $2', [name, alias]);
      if (deleted > 0) await touchModel(c, name, nowMs);
      return deleted > 0;
    });
  }

  // ---- endpoints ---------------------------------------------------------------------------

  async createEndpoint(e: EndpointRecord): Promise<void> {
    await this.tx(async (c) => {
      const columns = ENDPOINT_FIELDS.map(([col]) => col).join(', ');
      const placeholders = ENDPOINT_FIELDS.map((_, i) => `$${i + 1}`).join(', ');
      const inserted = await changes(c, `INSERT INTO endpoints (${columns}) VALUES (${placeholders}) ON CONFLICT (name) DO NOTHING`, endpointValues(e));
      if (inserted === 0) throw new FerryError('RESOURCE_ALREADY_EXISTS', `Serving endpoint '${e.name}' already exists.`);
      await replaceGrants(c, 'serving-endpoint', e.name, [{ grantee: e.creator, level: 'CAN_MANAGE' }]);
    });
  }

  async getEndpoint(name: string): Promise<EndpointRecord | undefined> {
    const row = await one(this.pool, 'SELECT * FROM endpoints WHERE name = $1', [name]);
    return row ? toEndpoint(row) : undefined;
  }

  async listEndpoints(): Promise<EndpointRecord[]> {
    return (await all(this.pool, 'SELECT * FROM endpoints ORDER BY name')).map(toEndpoint);
  }

  async putEndpoint(e: EndpointRecord): Promise<void> {
    const sets = ENDPOINT_FIELDS.slice(1).map(([col], i) => `${col} = $${i + 2}`).join(', ');
    if (await changes(this.pool, `UPDATE endpoints SET ${sets} WHERE name = $1`, endpointValues(e)) === 0) throw notFound(`Serving endpoint '${e.name}'`);
  }

  async deleteEndpoint(name: string): Promise<boolean> {
    return this.tx(async (c) => {
      await replaceGrants(c, 'serving-endpoint', name, []);
      return (await changes(c, 'DELETE FROM endpoints WHERE name = $1', [name])) > 0;
    });
  }

  // ---- gateway load ------------------------------------------------------------------------

  async putGatewayLoad(r: GatewayLoadReport): Promise<void> {
    await this.pool.query(`INSERT INTO gateway_load (server, reported_ms, entities) VALUES ($1, $2, $3)
      ON CONFLICT (server) DO UPDATE SET reported_ms = excluded.reported_ms, entities = excluded.entities`, [r.server, r.reportedMs, JSON.stringify(r.entities)]);
  }

  async listGatewayLoad(): Promise<GatewayLoadReport[]> {
    return (await all(this.pool, 'SELECT * FROM gateway_load ORDER BY server')).map(toGatewayLoad);
  }

  async deleteGatewayLoad(beforeMs: number): Promise<number> {
    return changes(this.pool, 'DELETE FROM gateway_load WHERE reported_ms < $1', [beforeMs]);
  }

  // ---- principals and permissions ----------------------------------------------------------

  async createPrincipal(p: PrincipalRecord): Promise<void> {
    const inserted = await changes(this.pool, `INSERT INTO principals (name, kind, admin, created_ms, created_by) VALUES ($1, $2, $3, $4, $5)
      ON CONFLICT (name) DO NOTHING`, [p.name, p.kind, p.admin, p.createdMs, p.createdBy]);
    if (inserted === 0) throw new FerryError('RESOURCE_ALREADY_EXISTS', `Principal '${p.name}' already exists.`);
  }

  async getPrincipal(name: string): Promise<PrincipalRecord | undefined> {
    const r = await one(this.pool, 'SELECT * FROM principals WHERE name = $1', [name]);
    return r === undefined ? undefined : toPrincipal(r);
  }

  async listPrincipals(): Promise<PrincipalRecord[]> {
    return (await all(this.pool, 'SELECT * FROM principals ORDER BY name')).map(toPrincipal);
  }

  async setPrincipalAdmin(name: string, admin: boolean): Promise<PrincipalRecord> {
    const r = await one(this.pool, 'UPDATE principals SET admin = $1 WHERE name = $2 RETURNING *', [admin, name]);
    if (r === undefined) throw notFound(`Principal '${name}'`);
    return toPrincipal(r);
  }

  async deletePrincipal(name: string): Promise<boolean> {
    return this.tx(async (c) => {
      await c.query('DELETE FROM tokens WHERE principal = $1', [name]);
      await c.query('DELETE FROM permissions WHERE grantee = $1', [name]);
      return (await changes(c, 'DELETE FROM principals WHERE name = $1', [name])) > 0;
    });
  }

  async getGrants(type: ObjectType, name: string): Promise<Grant[]> {
    return (await all(this.pool, 'SELECT grantee, level FROM permissions WHERE object_type = $1 AND object_name = $2 ORDER BY grantee', [type, name]))
      .map((r) => ({ grantee: String(r.grantee), level: String(r.level) }));
  }

  async setGrants(type: ObjectType, name: string, grants: Grant[]): Promise<void> {
    await this.tx((c) => replaceGrants(c, type, name, grants));
  }

  async grantsOf(type: ObjectType, grantees: string[]): Promise<Map<string, Grant[]>> {
    const out = new Map<string, Grant[]>();
    // Grouped by grantee in the order given, as the SQLite store answers.
    const rows = await all(this.pool, `SELECT object_name, grantee, level FROM permissions WHERE grantee = ANY($1::text[]) AND object_type = $2
      ORDER BY array_position($1::text[], grantee::text), object_name`, [grantees, type]);
    for (const r of rows) {
      const name = String(r.object_name);
      out.set(name, [...(out.get(name) ?? []), { grantee: String(r.grantee), level: String(r.level) }]);
    }
    return out;
  }

  // ---- audit log ---------------------------------------------------------------------------

  async appendAudit(e: Omit<AuditRecord, 'id'>): Promise<number> {
    const { rows } = await this.pool.query<{ id: string }>(`INSERT INTO audit_log (time_ms, principal, source_address, method, path, action, status, error_code, count)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id`, [e.timeMs, e.principal, e.sourceAddress, e.method, e.path, e.action, e.status, e.errorCode, e.count]);
    return Number(rows[0]?.id);
  }

  async finishAudit(id: number, status: number, errorCode: string): Promise<void> {
    await this.pool.query('UPDATE audit_log SET status = $1, error_code = $2 WHERE id = $3', [status, errorCode, id]);
  }

  async deleteAuditBefore(beforeMs: number): Promise<number> {
    return (await this.pool.query('DELETE FROM audit_log WHERE time_ms < $1', [beforeMs])).rowCount ?? 0;
  }

  async searchAudit(q: AuditQuery): Promise<PageResult<AuditRecord>> {
    const before = q.pageToken === undefined ? Number.MAX_SAFE_INTEGER : decodePageToken(q.pageToken);
    const rows = await all(this.pool, `SELECT * FROM audit_log WHERE id < $1 AND time_ms >= $2 AND ($3::text IS NULL OR principal = $3)
      ORDER BY id DESC LIMIT $4`, [before, q.sinceMs ?? 0, q.principal ?? null, q.maxResults + 1]);
    return auditPage(rows, q.maxResults);
  }

  // ---- tokens ------------------------------------------------------------------------------

  async putToken(t: TokenRecord): Promise<void> {
    await this.pool.query(`INSERT INTO tokens (id, principal, hash, created_ms, expires_ms, description) VALUES ($1, $2, $3, $4, $5, $6)
      ON CONFLICT (id) DO UPDATE SET principal = excluded.principal, hash = excluded.hash, created_ms = excluded.created_ms,
        expires_ms = excluded.expires_ms, description = excluded.description`,
    [t.id, t.principal, t.hash, t.createdMs, t.expiresMs ?? null, t.description]);
  }

  async findTokenByHash(hash: string): Promise<TokenRecord | undefined> {
    const r = await one(this.pool, 'SELECT * FROM tokens WHERE hash = $1', [hash]);
    return r === undefined ? undefined : toToken(r);
  }

  async listTokens(principal?: string): Promise<TokenRecord[]> {
    const rows = principal === undefined
      ? await all(this.pool, 'SELECT * FROM tokens ORDER BY created_ms, id')
      : await all(this.pool, 'SELECT * FROM tokens WHERE principal = $1 ORDER BY created_ms, id', [principal]);
    return rows.map(toToken);
  }

  async deleteToken(id: string): Promise<TokenRecord | undefined> {
    const r = await one(this.pool, 'DELETE FROM tokens WHERE id = $1 RETURNING *', [id]);
    return r === undefined ? undefined : toToken(r);
  }

  async deleteTokensOf(principal: string): Promise<void> {
    await this.pool.query('DELETE FROM tokens WHERE principal = $1', [principal]);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  // ---- helpers -----------------------------------------------------------------------------

  /** Runs `fn` in a transaction on one pooled client; a thrown error rolls it back. */
  private async tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      return await inTransaction(client, () => fn(client));
    } finally {
      client.release();
    }
  }
}

/** Replaces the grants on one object; call inside a transaction. */
async function replaceGrants(c: Db, type: ObjectType, name: string, grants: Grant[]): Promise<void> {
  await c.query('DELETE FROM permissions WHERE object_type = $1 AND object_name = $2', [type, name]);
  for (const g of grants) {
    await c.query(`INSERT INTO permissions (object_type, object_name, grantee, level) VALUES ($1, $2, $3, $4)
      ON CONFLICT (object_type, object_name, grantee) DO UPDATE SET level = excluded.level`, [type, name, g.grantee, g.level]);
  }
}

function modelRow(db: Db, name: string, lock = ''): Promise<Row | undefined> {
  return one(db, `SELECT * FROM registered_models WHERE name = $1 ${lock}`, [name]);
}

/** The model's row, locked until the transaction ends: changes to one model run one at a time. */
async function requireModel(c: pg.PoolClient, name: string): Promise<Row> {
  const row = await modelRow(c, name, 'FOR UPDATE');
  if (!row) throw notFound(`Registered model '${name}'`);
  return row;
}

async function touchModel(c: Db, name: string, nowMs: number): Promise<void> {
  await c.query('UPDATE registered_models SET updated_ms = $1 WHERE name = $2', [nowMs, name]);
}

async function loadModel(db: Db, name: string): Promise<RegisteredModelRecord> {
  const row = await modelRow(db, name);
  if (!row) throw notFound(`Registered model '${name}'`);
  const tags = await all(db, 'SELECT key, value FROM registered_model_tags WHERE name = $1 ORDER BY key', [name]);
  return toModel(row, tags, await all(db, 'SELECT alias, version FROM model_aliases WHERE name = $1 ORDER BY alias', [name]));
}

/** The version, or RESOURCE_DOES_NOT_EXIST; `lock` ('FOR UPDATE') keeps it until the transaction ends. */
async function loadVersion(db: Db, name: string, version: number, lock = ''): Promise<ModelVersionRecord> {
  const row = await one(db, `SELECT * FROM model_versions WHERE name = $1 AND version = $2 ${lock}`, [name, version]);
  if (!row) throw notFound(`Model version '${name}' version ${version}`);
  return toVersion(db, row);
}

async function toVersions(db: Db, rows: Row[]): Promise<ModelVersionRecord[]> {
  const out: ModelVersionRecord[] = [];
  for (const r of rows) out.push(await toVersion(db, r));
  return out;
}

async function toVersion(db: Db, row: Row): Promise<ModelVersionRecord> {
  return toVersionRow(row, await all(db, 'SELECT key, value FROM model_version_tags WHERE name = $1 AND version = $2 ORDER BY key', [row.name, row.version]));
}
