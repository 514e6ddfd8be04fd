/**
 * Row ↔ record mapping and SQL pieces shared by the SQLite and Postgres stores, so both return
 * byte-identical records and page tokens. Rows come back with driver types: SQLite gives numbers,
 * Postgres gives BIGINT as strings and BOOLEAN as booleans; every mapper goes through Number() or
 * an explicit check. JSON columns are text in both (the records own them; the store never looks
 * inside), so a record reads back exactly as it was written, key order included.
 */
import { FerryError } from '../errors.js';
import type { AuditRecord, EndpointRecord, GatewayLoadReport, ModelFilter, ModelOrder, ModelVersionRecord, RegisteredModelRecord, PageResult, PrincipalRecord, TokenRecord, VersionArtifact } from './types.js';

export type Row = Record<string, unknown>;

/** The registered-model levels that allow adding a version (src/auth's OBJECT_LEVELS, CAN_EDIT and up). */
export const MODEL_EDIT_LEVELS = ['CAN_EDIT', 'CAN_MANAGE'] as const;

/** An endpoint's column values, keyed by the record field; JSON fields serialized. */
export function endpointParams(e: EndpointRecord): Record<string, unknown> {
  return {
    name: e.name, id: e.id, creator: e.creator, createdMs: e.createdMs, updatedMs: e.updatedMs, description: e.description,
    tags: JSON.stringify(e.tags), config: e.config === undefined ? null : JSON.stringify(e.config),
    pendingConfig: e.pendingConfig === undefined ? null : JSON.stringify(e.pendingConfig), configUpdate: e.configUpdate, updateMessage: e.updateMessage,
    aiGateway: JSON.stringify(e.aiGateway ?? {}),
  };
}

export function toToken(r: Row): TokenRecord {
  return {
    id: String(r.id), principal: String(r.principal), hash: String(r.hash), createdMs: Number(r.created_ms),
    expiresMs: r.expires_ms === null ? undefined : Number(r.expires_ms), description: String(r.description),
  };
}

export function toPrincipal(r: Row): PrincipalRecord {
  return {
    name: String(r.name), kind: r.kind === 'service_principal' ? 'service_principal' : 'user',
    // SQLite stores 0/1, Postgres a BOOLEAN.
    admin: r.admin === 1 || r.admin === true, createdMs: Number(r.created_ms), createdBy: String(r.created_by),
  };
}

export function toEndpoint(r: Row): EndpointRecord {
  return {
    name: String(r.name), id: String(r.id), creator: String(r.creator), createdMs: Number(r.created_ms), updatedMs: Number(r.updated_ms),
    description: String(r.description), tags: JSON.parse(r.tags as string) as Record<string, string>,
    config: r.config === null ? undefined : JSON.parse(r.config as string) as unknown,
    pendingConfig: r.pending_config === null ? undefined : JSON.parse(r.pending_config as string) as unknown,
    configUpdate: r.config_update as EndpointRecord['configUpdate'], updateMessage: String(r.update_message),
    aiGateway: JSON.parse(r.ai_gateway as string) as unknown,
  };
}

export function toGatewayLoad(r: Row): GatewayLoadReport {
  return { server: String(r.server), reportedMs: Number(r.reported_ms), entities: JSON.parse(r.entities as string) as GatewayLoadReport['entities'] };
}

/** A `registered_models` row with its tag rows (`key`, `value`) and alias rows (`alias`, `version`). */
export function toModel(row: Row, tags: Row[], aliases: Row[]): RegisteredModelRecord {
  return {
    name: String(row.name),
    description: String(row.description),
    createdMs: Number(row.created_ms),
    updatedMs: Number(row.updated_ms),
    tags: Object.fromEntries(tags.map((t) => [String(t.key), String(t.value)])),
    aliases: Object.fromEntries(aliases.map((a) => [String(a.alias), Number(a.version)])),
  };
}

/** A `model_versions` row with its tag rows (`key`, `value`). */
export function toVersion(row: Row, tags: Row[]): ModelVersionRecord {
  return {
    name: String(row.name),
    version: Number(row.version),
    createdMs: Number(row.created_ms),
    updatedMs: Number(row.updated_ms),
    description: String(row.description),
    source: String(row.source),
    runId: String(row.run_id),
    status: row.status as ModelVersionRecord['status'],
    statusMessage: String(row.status_message),
    stage: row.stage as ModelVersionRecord['stage'],
    tags: Object.fromEntries(tags.map((t) => [String(t.key), String(t.value)])),
    artifact: row.artifact_path === null ? undefined : toArtifact(row),
  };
}

export function toArtifact(row: Row): VersionArtifact {
  return {
    path: String(row.artifact_path),
    flavor: row.flavor as VersionArtifact['flavor'],
    modelFile: String(row.model_file),
    signature: JSON.parse(row.signature as string) as VersionArtifact['signature'],
    inputExample: row.input_example === null ? undefined : JSON.parse(row.input_example as string) as unknown,
    sha256: String(row.sha256),
    sizeBytes: Number(row.size_bytes),
  };
}

/** The artifact columns of a version (artifact_path ... size_bytes, in that order), NULLs without one. */
export function artifactParams(a: VersionArtifact | undefined): unknown[] {
  return [
    a?.path ?? null, a?.flavor ?? null, a?.modelFile ?? null, a ? JSON.stringify(a.signature) : null,
    a && a.inputExample !== undefined ? JSON.stringify(a.inputExample) : null, a?.sha256 ?? null, a?.sizeBytes ?? null,
  ];
}

export function toAudit(r: Row): AuditRecord {
  return {
    id: Number(r.id), timeMs: Number(r.time_ms), principal: String(r.principal), sourceAddress: String(r.source_address),
    method: String(r.method), path: String(r.path), action: String(r.action), status: Number(r.status), errorCode: String(r.error_code),
    count: Number(r.count),
  };
}

/** A page of audit rows (fetched newest first, one more than shown); the cursor is the last id shown. */
export function auditPage(rows: Row[], maxResults: number): PageResult<AuditRecord> {
  const items = rows.slice(0, maxResults).map(toAudit);
  const last = items[items.length - 1];
  // The cursor is the last id shown, in the same envelope as offsets (older entries have smaller ids).
  return { items, nextPageToken: rows.length > maxResults && last ? encodeOffset(last.id) : undefined };
}

/**
 * The SQL dialects of the two stores: placeholders (`?` or `$n`) and MLflow's case-sensitive LIKE
 * (SQLite's LIKE ignores case, so it becomes GLOB there; Postgres' LIKE is case-sensitive).
 */
export type Dialect = 'sqlite' | 'postgres';

/** Builds a WHERE clause for a structured filter; `alias` is the main table's alias ('m' or 'v'). */
export function filterSql(filter: ModelFilter, tagTable: string, alias: string, dialect: Dialect): { where: string; params: unknown[] } {
  const clauses: string[] = [];
  const params: unknown[] = [];
  const param = (v: unknown): string => {
    params.push(v);
    return dialect === 'sqlite' ? '?' : `$${params.length}`;
  };
  if (filter.name) {
    const { op, value } = filter.name;
    if (op === 'ILIKE') clauses.push(`lower(${alias}.name) LIKE lower(${param(value)}) ESCAPE '\\'`);
    else if (op === 'LIKE' && dialect === 'sqlite') clauses.push(`${alias}.name GLOB ${param(likeToGlob(value))}`);
    else if (op === 'LIKE') clauses.push(`${alias}.name LIKE ${param(value)} ESCAPE '\\'`);
    else clauses.push(`${alias}.name ${op} ${param(value)}`);
  }
  if (filter.runId !== undefined) {
    // Only model versions have a run id (the registry's API refuses run_id for registered models).
    if (alias !== 'v') throw new FerryError('INVALID_PARAMETER_VALUE', 'run_id filters model versions, not registered models.');
    clauses.push(`${alias}.run_id = ${param(filter.runId)}`);
  }
  for (const t of filter.tags ?? []) {
    const join = alias === 'v' ? 't.version = v.version AND ' : '';
    clauses.push(`EXISTS (SELECT 1 FROM ${tagTable} t WHERE t.name = ${alias}.name AND ${join}t.key = ${param(t.key)} AND t.value = ${param(t.value)})`);
  }
  return { where: clauses.length ? `WHERE ${clauses.join(' AND ')}` : '', params };
}

/** ORDER BY for a registered-model search (alias `m`); ties by name, ascending. */
export function orderSql(order: ModelOrder): string {
  const dir = order.descending ? 'DESC' : 'ASC';
  return order.by === 'name' ? `m.name ${dir}` : `m.updated_ms ${dir}, m.name ASC`;
}

/** SQL LIKE is case-insensitive in SQLite; MLflow's LIKE is case-sensitive, so use GLOB. */
function likeToGlob(pattern: string): string {
  return pattern.replace(/[[\]*?]/g, (c) => `[${c}]`).replace(/%/g, '*').replace(/_/g, '?');
}

function encodeOffset(n: number): string {
  return Buffer.from(`offset:${n}`, 'utf8').toString('base64url');
}

export function decodePageToken(token: string | undefined): number {
  if (token === undefined || token === '') return 0;
  const m = /^offset:(\d{1,15})$/.exec(Buffer.from(token, 'base64url').toString('utf8'));
  if (!m) throw new FerryError('INVALID_PARAMETER_VALUE', `Invalid page_token ${JSON.stringify(token)}: use the next_page_token of a previous response.`);
  return Number(m[1]);
}

/**
 * The orders of the registry's searches: registered models by name, or by last update (newest
 * first, then name); model versions by name, then version (newest first).
 */
export type SearchOrder = ModelOrder | 'versions';

/**
 * Keyset paging for the registry's searches: a page token names the last row shown (its sort key,
 * e.g. `after:["ads-17"]`, base64url) and the next page is the rows after it in the search's
 * order, so page 10,000 of a million models costs what page 1 costs, where an OFFSET reads and
 * skips every earlier row. Rows added or removed between pages shift nothing. Returns the WHERE
 * clause with the filter's (`where`, from `filterSql`) and the token's condition, pushing the
 * token's values onto `params`.
 */
export function afterToken(where: string, token: string | undefined, order: SearchOrder, alias: string, dialect: Dialect, params: unknown[]): string {
  if (token === undefined || token === '') return where;
  const bad = (): FerryError => new FerryError('INVALID_PARAMETER_VALUE', `Invalid page_token ${JSON.stringify(token)}: use the next_page_token of a previous response.`);
  const text = Buffer.from(token, 'base64url').toString('utf8');
  if (!text.startsWith('after:')) throw bad();
  let key: unknown;
  try {
    key = JSON.parse(text.slice('after:'.length));
  } catch {
    throw bad();
  }
  const param = (v: unknown): string => {
    params.push(v);
    return dialect === 'sqlite' ? '?' : `$${params.length}`;
  };
  let clause: string;
  if (order !== 'versions' && order.by === 'name' && Array.isArray(key) && key.length === 1 && typeof key[0] === 'string') {
    clause = `${alias}.name ${order.descending ? '<' : '>'} ${param(key[0])}`;
  } else if (order !== 'versions' && order.by === 'updated' && Array.isArray(key) && key.length === 2 && Number.isSafeInteger(key[0]) && typeof key[1] === 'string') {
    // Ties on the update time go by name, ascending, whichever way the time runs (orderSql).
    const [within, past] = order.descending ? ['<=', '<'] : ['>=', '>'];
    clause = `${alias}.updated_ms ${within} ${param(key[0])} AND (${alias}.updated_ms ${past} ${param(key[0])} OR ${alias}.name > ${param(key[1])})`;
  } else if (order === 'versions' && Array.isArray(key) && key.length === 2 && typeof key[0] === 'string' && Number.isSafeInteger(key[1])) {
    // The leading range on name lets the (name, version) key's index find the start.
    clause = `${alias}.name >= ${param(key[0])} AND (${alias}.name > ${param(key[0])} OR ${alias}.version < ${param(key[1])})`;
  } else {
    throw bad();
  }
  return where === '' ? `WHERE ${clause}` : `${where} AND ${clause}`;
}

/**
 * A page of `rows` (fetched with LIMIT maxResults + 1, in `order`); the next token names the last
 * row shown, whose columns must include the order's key (name; updated_ms; version).
 */
export function keysetPage<T>(rows: Row[], maxResults: number, order: SearchOrder, map: (r: Row) => T): PageResult<T> {
  const shown = rows.slice(0, maxResults);
  const last = shown[shown.length - 1];
  const key = last === undefined ? undefined
    : order === 'versions' ? [String(last.name), Number(last.version)] : order.by === 'name' ? [String(last.name)] : [Number(last.updated_ms), String(last.name)];
  return {
    items: shown.map(map),
    nextPageToken: rows.length > maxResults && key !== undefined ? Buffer.from(`after:${JSON.stringify(key)}`, 'utf8').toString('base64url') : undefined,
  };
}

const VERSION_COLUMNS = 'version, created_ms, updated_ms, description, source, run_id, status, status_message, stage, artifact_path, flavor, model_file, signature, input_example, sha256, size_bytes';

/**
 * A registered model's rename as plain statements with their parameters (`?` placeholders), run
 * in one transaction after checking that the old name exists and the new one does not. Rows are
 * copied under the new name and the old ones deleted, so no foreign key ever points nowhere
 * (neither store's keys cascade on update).
 */
export function renameModelSql(name: string, newName: string, nowMs: number): Array<[string, unknown[]]> {
  return [
    ['INSERT INTO registered_models (name, description, created_ms, updated_ms, next_version) SELECT ?, description, created_ms, ?, next_version FROM registered_models WHERE name = ?', [newName, nowMs, name]],
    [`INSERT INTO model_versions (name, ${VERSION_COLUMNS}) SELECT ?, ${VERSION_COLUMNS} FROM model_versions WHERE name = ?`, [newName, name]],
    ['UPDATE registered_model_tags SET name = ? WHERE name = ?', [newName, name]],
    ['UPDATE model_version_tags SET name = ? WHERE name = ?', [newName, name]],
    ['UPDATE model_aliases SET name = ? WHERE name = ?', [newName, name]],
    ["UPDATE permissions SET object_name = ? WHERE object_type = 'registered-model' AND object_name = ?", [newName, name]],
    ['DELETE FROM model_versions WHERE name = ?', [name]],
    ['DELETE FROM registered_models WHERE name = ?', [name]],
  ];
}
