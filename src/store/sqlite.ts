/**
 * SQLite metadata store (better-sqlite3 12). WAL journal with synchronous=FULL: a write is on disk
 * before the API acknowledges it, so it survives `kill -9` of the server and a power cut. Calls are
 * synchronous under the hood (microseconds for this data); the async interface is for Postgres.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { FerryError, notFound } from '../errors.js';
import type {
  EndpointRecord, GatewayLoadReport, MetadataStore, ModelFilter, ModelOrder, ModelVersionPatch, ModelVersionRecord, Page, PageResult,
  RegisteredModelRecord, TokenRecord, PrincipalRecord, ObjectType, Grant, AuditRecord, AuditQuery, BulkVersionEntry,
} from './types.js';
import { MIGRATIONS } from './migrations.js';
import { checkWal, openError, quickCheck } from './sqlite-integrity.js';
import { SqliteTracking } from './tracking-sqlite.js';
import type { TrackingStore } from './tracking.js';
import { renameModelSql, artifactParams, auditPage, MODEL_EDIT_LEVELS, afterToken, decodePageToken, endpointParams, filterSql, keysetPage, orderSql, toEndpoint, toGatewayLoad, toModel, toPrincipal, toToken, toVersion as toVersionRow, type Row } from './rows.js';

/**
 * Opens (or creates) the metadata database. Damage stops the start with one line naming the file
 * and the recovery steps (sqlite-integrity.ts): a WAL whose replay would drop committed writes, a
 * file that is not a database or is truncated, a failed `PRAGMA quick_check`.
 */
export async function openSqliteStore(file: string, opened = false): Promise<MetadataStore> {
  const what = 'The metadata database';
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  if (!opened) checkWal(file, what);
  let db: Database.Database | undefined;
  try {
    db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
    if (!opened) {
      quickCheck(db, file, what);
      migrate(db);
    }
  } catch (err) {
    db?.close();
    throw openError(err, file, what);
  }
  return new SqliteStore(db);
}

/** Applies the migrations newer than the database's `user_version`, each in its own transaction. */
function migrate(db: Database.Database): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > MIGRATIONS.length) {
    throw new FerryError('INTERNAL_ERROR', `The metadata database is at schema version ${current}, newer than this Ferry (${MIGRATIONS.length}). Upgrade Ferry.`);
  }
  for (let v = current; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v] ?? '');
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}

class SqliteStore implements MetadataStore {
  /** Prepared statements by SQL text: preparing costs more than running these small queries. */
  private readonly statements = new Map<string, Database.Statement>();

  readonly tracking: TrackingStore;

  constructor(private readonly db: Database.Database) {
    this.tracking = new SqliteTracking((sql) => this.stmt(sql), (fn) => this.tx(fn));
  }

  private stmt(sql: string): Database.Statement {
    let s = this.statements.get(sql);
    if (!s) {
      // Search SQL varies with the filter (one clause per tag): keep the cache bounded.
      if (this.statements.size >= 256) this.statements.clear();
      s = this.db.prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }

  // ---- registered models -------------------------------------------------------------------

  async createRegisteredModel(m: { name: string; description: string; tags: Record<string, string>; creator?: string }, nowMs: number): Promise<RegisteredModelRecord> {
    return this.tx(() => {
      if (this.modelRow(m.name)) throw new FerryError('RESOURCE_ALREADY_EXISTS', `Registered model '${m.name}' already exists.`);
      this.stmt('INSERT INTO registered_models (name, description, created_ms, updated_ms, next_version) VALUES (?, ?, ?, ?, 1)')
        .run(m.name, m.description, nowMs, nowMs);
      if (m.creator !== undefined) this.replaceGrants('registered-model', m.name, [{ grantee: m.creator, level: 'CAN_MANAGE' }]);
      const tag = this.stmt('INSERT INTO registered_model_tags (name, key, value) VALUES (?, ?, ?)');
      for (const [k, v] of Object.entries(m.tags)) tag.run(m.name, k, v);
      return this.loadModel(m.name);
    });
  }

  async getRegisteredModel(name: string): Promise<RegisteredModelRecord | undefined> {
    return (this.modelRow(name) ? this.loadModel(name) : undefined);
  }

  async updateRegisteredModel(name: string, patch: { description: string }, nowMs: number): Promise<RegisteredModelRecord> {
    return this.tx(() => {
      this.requireModel(name);
      this.stmt('UPDATE registered_models SET description = ?, updated_ms = ? WHERE name = ?').run(patch.description, nowMs, name);
      return this.loadModel(name);
    });
  }

  async deleteRegisteredModel(name: string): Promise<ModelVersionRecord[]> {
    return this.tx(() => {
      this.requireModel(name);
      const versions = (this.stmt('SELECT * FROM model_versions WHERE name = ? ORDER BY version').all(name) as Row[]).map((r) => this.toVersion(r));
      // Tags, aliases and versions go with the model (ON DELETE CASCADE); grants are not keyed to it.
      this.stmt('DELETE FROM registered_models WHERE name = ?').run(name);
      this.replaceGrants('registered-model', name, []);
      return versions;
    });
  }

  async searchRegisteredModels(filter: ModelFilter, order: ModelOrder, page: Page): Promise<PageResult<RegisteredModelRecord>> {
    const { where, params } = filterSql(filter, 'registered_model_tags', 'm', 'sqlite');
    const orderBy = orderSql(order);
    const after = afterToken(where, page.pageToken, order, 'm', 'sqlite', params);
    const rows = this.stmt(`SELECT m.name, m.updated_ms FROM registered_models m ${after} ORDER BY ${orderBy} LIMIT ?`)
      .all(...params, page.maxResults + 1) as Row[];
    return keysetPage(rows, page.maxResults, order, (r) => this.loadModel(String(r.name)));
  }

  async renameRegisteredModel(name: string, newName: string, nowMs: number): Promise<RegisteredModelRecord> {
    return this.tx(() => {
      this.requireModel(name);
      if (this.modelRow(newName)) throw new FerryError('RESOURCE_ALREADY_EXISTS', `Registered model '${newName}' already exists.`);
      for (const [sql, params] of renameModelSql(name, newName, nowMs)) this.stmt(sql).run(...params);
      return this.loadModel(newName);
    });
  }

  async setRegisteredModelTag(name: string, key: string, value: string, nowMs: number): Promise<void> {
    return this.tx(() => {
      this.requireModel(name);
      this.stmt('INSERT INTO registered_model_tags (name, key, value) VALUES (?, ?, ?) ON CONFLICT (name, key) DO UPDATE SET value = excluded.value').run(name, key, value);
      this.touchModel(name, nowMs);
    });
  }

  async deleteRegisteredModelTag(name: string, key: string, nowMs: number): Promise<void> {
    return this.tx(() => {
      this.requireModel(name);
      this.stmt('DELETE FROM registered_model_tags WHERE name = ? AND key = ?').run(name, key);
      this.touchModel(name, nowMs);
    });
  }

  // ---- model versions ----------------------------------------------------------------------

  async createModelVersion(v: { name: string; source: string; runId: string; description: string; tags: Record<string, string> }, nowMs: number): Promise<ModelVersionRecord> {
    return this.tx(() => {
      const model = this.requireModel(v.name);
      const version = Number(model.next_version);
      this.stmt('UPDATE registered_models SET next_version = ?, updated_ms = ? WHERE name = ?').run(version + 1, nowMs, v.name);
      this.stmt(`INSERT INTO model_versions (name, version, created_ms, updated_ms, description, source, run_id, status, status_message)
        VALUES (?, ?, ?, ?, ?, ?, ?, 'PENDING_REGISTRATION', '')`).run(v.name, version, nowMs, nowMs, v.description, v.source, v.runId);
      const tag = this.stmt('INSERT INTO model_version_tags (name, version, key, value) VALUES (?, ?, ?, ?)');
      for (const [k, val] of Object.entries(v.tags)) tag.run(v.name, version, k, val);
      return this.loadVersion(v.name, version);
    });
  }

  async createReadyModelVersions(entries: readonly BulkVersionEntry[], nowMs: number): Promise<Array<number | undefined>> {
    return this.tx(() => {
      const next = this.stmt('SELECT next_version FROM registered_models WHERE name = ?');
      const mayEdit = (name: string, editors: readonly string[]): boolean => editors.some((grantee) =>
        this.stmt(`SELECT 1 FROM permissions WHERE object_type = 'registered-model' AND object_name = ? AND grantee = ? AND level IN (${MODEL_EDIT_LEVELS.map(() => '?').join(', ')})`)
          .get(name, grantee, ...MODEL_EDIT_LEVELS) !== undefined);
      const createModel = this.stmt('INSERT INTO registered_models (name, description, created_ms, updated_ms, next_version) VALUES (?, \'\', ?, ?, 1)');
      const bump = this.stmt('UPDATE registered_models SET next_version = ?, updated_ms = ? WHERE name = ?');
      const insert = this.stmt(`INSERT INTO model_versions (name, version, created_ms, updated_ms, description, source, run_id, status, status_message,
          artifact_path, flavor, model_file, signature, input_example, sha256, size_bytes)
        VALUES (?, ?, ?, ?, '', ?, '', 'READY', '', ?, ?, ?, ?, ?, ?, ?)`);
      return entries.map((e) => {
        let row = next.get(e.name) as Row | undefined;
        if (row && e.editors !== undefined && !mayEdit(e.name, e.editors)) return undefined;
        if (!row) {
          createModel.run(e.name, nowMs, nowMs);
          if (e.creator !== undefined) this.replaceGrants('registered-model', e.name, [{ grantee: e.creator, level: 'CAN_MANAGE' }]);
          row = { next_version: 1 };
        }
        const version = Number(row.next_version);
        bump.run(version + 1, nowMs, e.name);
        insert.run(e.name, version, nowMs, nowMs, e.source, ...artifactParams(e.artifact));
        return version;
      });
    });
  }

  async getModelVersion(name: string, version: number): Promise<ModelVersionRecord | undefined> {
    const row = this.stmt('SELECT * FROM model_versions WHERE name = ? AND version = ?').get(name, version) as Row | undefined;
    return (row ? this.toVersion(row) : undefined);
  }

  async latestModelVersion(name: string): Promise<ModelVersionRecord | undefined> {
    const row = this.stmt('SELECT * FROM model_versions WHERE name = ? ORDER BY version DESC LIMIT 1').get(name) as Row | undefined;
    return (row ? this.toVersion(row) : undefined);
  }

  async updateModelVersion(name: string, version: number, patch: ModelVersionPatch, nowMs: number): Promise<ModelVersionRecord> {
    return this.tx(() => {
      const current = this.loadVersion(name, version);
      this.stmt(`UPDATE model_versions SET description = ?, status = ?, status_message = ?, stage = ?, updated_ms = ?,
          artifact_path = ?, flavor = ?, model_file = ?, signature = ?, input_example = ?, sha256 = ?, size_bytes = ?
        WHERE name = ? AND version = ?`).run(
        patch.description ?? current.description, patch.status ?? current.status, patch.statusMessage ?? current.statusMessage, patch.stage ?? current.stage, nowMs,
        ...artifactParams(patch.artifact ?? current.artifact), name, version,
      );
      return this.loadVersion(name, version);
    });
  }

  async deleteModelVersion(name: string, version: number): Promise<ModelVersionRecord | undefined> {
    return this.tx(() => {
      const row = this.stmt('SELECT * FROM model_versions WHERE name = ? AND version = ?').get(name, version) as Row | undefined;
      if (!row) return undefined;
      const record = this.toVersion(row);
      this.stmt('DELETE FROM model_versions WHERE name = ? AND version = ?').run(name, version);
      return record;
    });
  }

  async searchModelVersions(filter: ModelFilter, page: Page): Promise<PageResult<ModelVersionRecord>> {
    const { where, params } = filterSql(filter, 'model_version_tags', 'v', 'sqlite');
    const after = afterToken(where, page.pageToken, 'versions', 'v', 'sqlite', params);
    const rows = this.stmt(`SELECT v.* FROM model_versions v ${after} ORDER BY v.name ASC, v.version DESC LIMIT ?`)
      .all(...params, page.maxResults + 1) as Row[];
    return keysetPage(rows, page.maxResults, 'versions', (r) => this.toVersion(r));
  }

  async pendingModelVersions(): Promise<ModelVersionRecord[]> {
    const rows = this.stmt("SELECT * FROM model_versions WHERE status = 'PENDING_REGISTRATION'").all() as Row[];
    return (rows.map((r) => this.toVersion(r)));
  }

  async artifactPathInUse(prefix: string): Promise<boolean> {
    if (prefix === '') throw new FerryError('INTERNAL_ERROR', 'artifactPathInUse needs a prefix.');
    // A range over the index (BINARY collation): the prefix up to the next string that is not one of its extensions.
    const upper = prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
    return this.stmt('SELECT 1 FROM model_versions WHERE artifact_path >= ? AND artifact_path < ? LIMIT 1').get(prefix, upper) !== undefined;
  }

  async setModelVersionTag(name: string, version: number, key: string, value: string, nowMs: number): Promise<void> {
    return this.tx(() => {
      this.loadVersion(name, version);
      this.stmt('INSERT INTO model_version_tags (name, version, key, value) VALUES (?, ?, ?, ?) ON CONFLICT (name, version, key) DO UPDATE SET value = excluded.value').run(name, version, key, value);
      this.stmt('UPDATE model_versions SET updated_ms = ? WHERE name = ? AND version = ?').run(nowMs, name, version);
    });
  }

  async deleteModelVersionTag(name: string, version: number, key: string, nowMs: number): Promise<void> {
    return this.tx(() => {
      this.loadVersion(name, version);
      this.stmt('DELETE FROM model_version_tags WHERE name = ? AND version = ? AND key = ?').run(name, version, key);
      this.stmt('UPDATE model_versions SET updated_ms = ? WHERE name = ? AND version = ?').run(nowMs, name, version);
    });
  }

  // ---- aliases -----------------------------------------------------------------------------

  async setAlias(name: string, alias: string, version: number, nowMs: number): Promise<void> {
    return this.tx(() => {
      this.loadVersion(name, version);
      this.stmt('INSERT INTO model_aliases (name, alias, version) VALUES (?, ?, ?) ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version').run(name, alias, version);
      this.touchModel(name, nowMs);
    });
  }

  async deleteAlias(name: string, alias: string, nowMs: number): Promise<boolean> {
    return this.tx(() => {
      this.requireModel(name);
      const { changes } = this.stmt('DELETE FROM model_aliases WHERE name = ? AND alias = ?').run(name, alias);
      if (changes > 0) this.touchModel(name, nowMs);
      return changes > 0;
    });
  }

  // ---- endpoints ---------------------------------------------------------------------------

  async createEndpoint(e: EndpointRecord): Promise<void> {
    this.tx(() => {
      if (this.stmt('SELECT 1 FROM endpoints WHERE name = ?').get(e.name)) {
        throw new FerryError('RESOURCE_ALREADY_EXISTS', `Serving endpoint '${e.name}' already exists.`);
      }
      this.stmt(`INSERT INTO endpoints (name, id, creator, created_ms, updated_ms, description, tags, config, pending_config, config_update, update_message, ai_gateway)
        VALUES (@name, @id, @creator, @createdMs, @updatedMs, @description, @tags, @config, @pendingConfig, @configUpdate, @updateMessage, @aiGateway)`).run(endpointParams(e));
      this.replaceGrants('serving-endpoint', e.name, [{ grantee: e.creator, level: 'CAN_MANAGE' }]);
    });
  }

  async getEndpoint(name: string): Promise<EndpointRecord | undefined> {
    const row = this.stmt('SELECT * FROM endpoints WHERE name = ?').get(name) as Row | undefined;
    return row ? toEndpoint(row) : undefined;
  }

  async listEndpoints(): Promise<EndpointRecord[]> {
    return (this.stmt('SELECT * FROM endpoints ORDER BY name').all() as Row[]).map(toEndpoint);
  }

  async putEndpoint(e: EndpointRecord): Promise<void> {
    const { changes } = this.stmt(`UPDATE endpoints SET id = @id, creator = @creator, created_ms = @createdMs, updated_ms = @updatedMs,
        description = @description, tags = @tags, config = @config, pending_config = @pendingConfig, config_update = @configUpdate,
        update_message = @updateMessage, ai_gateway = @aiGateway WHERE name = @name`).run(endpointParams(e));
    if (changes === 0) throw notFound(`Serving endpoint '${e.name}'`);
  }

  async deleteEndpoint(name: string): Promise<boolean> {
    return this.tx(() => {
      this.replaceGrants('serving-endpoint', name, []);
      return this.stmt('DELETE FROM endpoints WHERE name = ?').run(name).changes > 0;
    });
  }

  // ---- gateway load ------------------------------------------------------------------------

  async putGatewayLoad(r: GatewayLoadReport): Promise<void> {
    this.stmt(`INSERT INTO gateway_load (server, reported_ms, entities) VALUES (?, ?, ?)
      ON CONFLICT (server) DO UPDATE SET reported_ms = excluded.reported_ms, entities = excluded.entities`).run(r.server, r.reportedMs, JSON.stringify(r.entities));
  }

  async listGatewayLoad(): Promise<GatewayLoadReport[]> {
    return (this.stmt('SELECT * FROM gateway_load ORDER BY server').all() as Row[]).map(toGatewayLoad);
  }

  async deleteGatewayLoad(beforeMs: number): Promise<number> {
    return this.stmt('DELETE FROM gateway_load WHERE reported_ms < ?').run(beforeMs).changes;
  }

  // ---- principals and permissions ----------------------------------------------------------

  async createPrincipal(p: PrincipalRecord): Promise<void> {
    this.tx(() => {
      if (this.stmt('SELECT 1 FROM principals WHERE name = ?').get(p.name)) {
        throw new FerryError('RESOURCE_ALREADY_EXISTS', `Principal '${p.name}' already exists.`);
      }
      this.stmt('INSERT INTO principals (name, kind, admin, created_ms, created_by) VALUES (?, ?, ?, ?, ?)')
        .run(p.name, p.kind, p.admin ? 1 : 0, p.createdMs, p.createdBy);
    });
  }

  async getPrincipal(name: string): Promise<PrincipalRecord | undefined> {
    const r = this.stmt('SELECT * FROM principals WHERE name = ?').get(name) as Row | undefined;
    return r === undefined ? undefined : toPrincipal(r);
  }

  async listPrincipals(): Promise<PrincipalRecord[]> {
    return (this.stmt('SELECT * FROM principals ORDER BY name').all() as Row[]).map(toPrincipal);
  }

  async setPrincipalAdmin(name: string, admin: boolean): Promise<PrincipalRecord> {
    if (this.stmt('UPDATE principals SET admin = ? WHERE name = ?').run(admin ? 1 : 0, name).changes === 0) throw notFound(`Principal '${name}'`);
    return toPrincipal(this.stmt('SELECT * FROM principals WHERE name = ?').get(name) as Row);
  }

  async deletePrincipal(name: string): Promise<boolean> {
    return this.tx(() => {
      this.stmt('DELETE FROM tokens WHERE principal = ?').run(name);
      this.stmt('DELETE FROM permissions WHERE grantee = ?').run(name);
      return this.stmt('DELETE FROM principals WHERE name = ?').run(name).changes > 0;
    });
  }

  async getGrants(type: ObjectType, name: string): Promise<Grant[]> {
    return (this.stmt('SELECT grantee, level FROM permissions WHERE object_type = ? AND object_name = ? ORDER BY grantee').all(type, name) as Row[])
      .map((r) => ({ grantee: String(r.grantee), level: String(r.level) }));
  }

  async setGrants(type: ObjectType, name: string, grants: Grant[]): Promise<void> {
    this.tx(() => this.replaceGrants(type, name, grants));
  }

  async grantsOf(type: ObjectType, grantees: string[]): Promise<Map<string, Grant[]>> {
    const out = new Map<string, Grant[]>();
    const q = this.stmt('SELECT object_name, grantee, level FROM permissions WHERE grantee = ? AND object_type = ?');
    for (const grantee of grantees) {
      for (const r of q.all(grantee, type) as Row[]) {
        const name = String(r.object_name);
        out.set(name, [...(out.get(name) ?? []), { grantee: String(r.grantee), level: String(r.level) }]);
      }
    }
    return out;
  }

  // ---- audit log ---------------------------------------------------------------------------

  async appendAudit(e: Omit<AuditRecord, 'id'>): Promise<number> {
    return Number(this.stmt(`INSERT INTO audit_log (time_ms, principal, source_address, method, path, action, status, error_code, count)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`).run(e.timeMs, e.principal, e.sourceAddress, e.method, e.path, e.action, e.status, e.errorCode, e.count).lastInsertRowid);
  }

  async finishAudit(id: number, status: number, errorCode: string): Promise<void> {
    this.stmt('UPDATE audit_log SET status = ?, error_code = ? WHERE id = ?').run(status, errorCode, id);
  }

  async deleteAuditBefore(beforeMs: number): Promise<number> {
    return this.stmt('DELETE FROM audit_log WHERE time_ms < ?').run(beforeMs).changes;
  }

  async searchAudit(q: AuditQuery): Promise<PageResult<AuditRecord>> {
    const before = q.pageToken === undefined ? Number.MAX_SAFE_INTEGER : decodePageToken(q.pageToken);
    const rows = this.stmt(`SELECT * FROM audit_log WHERE id < ? AND time_ms >= ? AND (? IS NULL OR principal = ?)
      ORDER BY id DESC LIMIT ?`).all(before, q.sinceMs ?? 0, q.principal ?? null, q.principal ?? null, q.maxResults + 1) as Row[];
    return auditPage(rows, q.maxResults);
  }

  // ---- tokens ------------------------------------------------------------------------------

  async putToken(t: TokenRecord): Promise<void> {
    this.stmt(`INSERT INTO tokens (id, principal, hash, created_ms, expires_ms, description) VALUES (?, ?, ?, ?, ?, ?)
      ON CONFLICT (id) DO UPDATE SET principal = excluded.principal, hash = excluded.hash, created_ms = excluded.created_ms,
        expires_ms = excluded.expires_ms, description = excluded.description`)
      .run(t.id, t.principal, t.hash, t.createdMs, t.expiresMs ?? null, t.description);
  }

  async findTokenByHash(hash: string): Promise<TokenRecord | undefined> {
    const r = this.stmt('SELECT * FROM tokens WHERE hash = ?').get(hash) as Row | undefined;
    return r === undefined ? undefined : toToken(r);
  }

  async listTokens(principal?: string): Promise<TokenRecord[]> {
    const rows = (principal === undefined
      ? this.stmt('SELECT * FROM tokens ORDER BY created_ms, id').all()
      : this.stmt('SELECT * FROM tokens WHERE principal = ? ORDER BY created_ms, id').all(principal)) as Row[];
    return rows.map(toToken);
  }

  async deleteToken(id: string): Promise<TokenRecord | undefined> {
    return this.tx(() => {
      const r = this.stmt('SELECT * FROM tokens WHERE id = ?').get(id) as Row | undefined;
      if (r === undefined) return undefined;
      this.stmt('DELETE FROM tokens WHERE id = ?').run(id);
      return toToken(r);
    });
  }

  async deleteTokensOf(principal: string): Promise<void> {
    this.stmt('DELETE FROM tokens WHERE principal = ?').run(principal);
  }

  async close(): Promise<void> {
    this.db.close();
  }

  // ---- helpers -----------------------------------------------------------------------------

  /** Runs `fn` in an IMMEDIATE transaction; a thrown error rolls it back. */
  private tx<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  /** Replaces the grants on one object; call inside a transaction. */
  private replaceGrants(type: ObjectType, name: string, grants: Grant[]): void {
    this.stmt('DELETE FROM permissions WHERE object_type = ? AND object_name = ?').run(type, name);
    const insert = this.stmt('INSERT INTO permissions (object_type, object_name, grantee, level) VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET level = excluded.level');
    for (const g of grants) insert.run(type, name, g.grantee, g.level);
  }

  private modelRow(name: string): Row | undefined {
    return this.stmt('SELECT * FROM registered_models WHERE name = ?').get(name) as Row | undefined;
  }

  private requireModel(name: string): Row {
    const row = this.modelRow(name);
    if (!row) throw notFound(`Registered model '${name}'`);
    return row;
  }

  private touchModel(name: string, nowMs: number): void {
    this.stmt('UPDATE registered_models SET updated_ms = ? WHERE name = ?').run(nowMs, name);
  }

  private loadModel(name: string): RegisteredModelRecord {
    const row = this.requireModel(name);
    const tags = this.stmt('SELECT key, value FROM registered_model_tags WHERE name = ? ORDER BY key').all(name) as Row[];
    return toModel(row, tags, this.stmt('SELECT alias, version FROM model_aliases WHERE name = ? ORDER BY alias').all(name) as Row[]);
  }

  private loadVersion(name: string, version: number): ModelVersionRecord {
    const row = this.stmt('SELECT * FROM model_versions WHERE name = ? AND version = ?').get(name, version) as Row | undefined;
    if (!row) throw notFound(`Model version '${name}' version ${version}`);
    return this.toVersion(row);
  }

  private toVersion(row: Row): ModelVersionRecord {
    return toVersionRow(row, this.stmt('SELECT key, value FROM model_version_tags WHERE name = ? AND version = ? ORDER BY key').all(row.name, row.version) as Row[]);
  }
}
