/**
 * Versioned schema migrations for the SQLite store. Entry i upgrades schema version i to i + 1
 * (tracked in PRAGMA user_version). Append only: never edit a migration that has shipped.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: registry and tokens
  `
  CREATE TABLE registered_models (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    next_version INTEGER NOT NULL DEFAULT 1
  );
  CREATE TABLE registered_model_tags (
    name TEXT NOT NULL REFERENCES registered_models (name) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, key)
  );
  CREATE TABLE model_versions (
    name TEXT NOT NULL REFERENCES registered_models (name) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,
    run_id TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    status_message TEXT NOT NULL DEFAULT '',
    artifact_path TEXT,
    flavor TEXT,
    model_file TEXT,
    signature TEXT,
    input_example TEXT,
    sha256 TEXT,
    size_bytes INTEGER,
    PRIMARY KEY (name, version)
  );
  CREATE TABLE model_version_tags (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, version, key),
    FOREIGN KEY (name, version) REFERENCES model_versions (name, version) ON DELETE CASCADE
  );
  CREATE TABLE model_aliases (
    name TEXT NOT NULL REFERENCES registered_models (name) ON DELETE CASCADE,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, alias),
    FOREIGN KEY (name, version) REFERENCES model_versions (name, version) ON DELETE CASCADE
  );
  CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    description TEXT NOT NULL DEFAULT ''
  );
  `,
  // 2: serving endpoints (desired state; what runs is reconciled from it)
  `
  CREATE TABLE endpoints (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    creator TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '{}',
    config TEXT,
    pending_config TEXT,
    config_update TEXT NOT NULL,
    update_message TEXT NOT NULL DEFAULT ''
  );
  `,
  // 3: per-endpoint AI gateway settings (fallback), as JSON
  `
  ALTER TABLE endpoints ADD COLUMN ai_gateway TEXT NOT NULL DEFAULT '{}';
  `,
  // 4: identities, per-object permissions and the audit log
  `
  CREATE TABLE principals (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL DEFAULT ''
  );
  CREATE TABLE permissions (
    object_type TEXT NOT NULL,
    object_name TEXT NOT NULL,
    grantee TEXT NOT NULL,
    level TEXT NOT NULL,
    PRIMARY KEY (object_type, object_name, grantee)
  );
  CREATE INDEX permissions_by_grantee ON permissions (grantee, object_type);
  CREATE INDEX tokens_by_principal ON tokens (principal);
  CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    principal TEXT NOT NULL,
    source_address TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    action TEXT NOT NULL,
    status INTEGER NOT NULL,
    error_code TEXT NOT NULL DEFAULT ''
  );
  `,
  // 5: each server's gateway load (several servers on one store; the leader's autoscaler reads it)
  `
  CREATE TABLE gateway_load (
    server TEXT PRIMARY KEY,
    reported_ms INTEGER NOT NULL,
    entities TEXT NOT NULL
  );
  `,
  // 6: audit rows that stand for several calls (anonymous calls over the per-minute cap), and
  // the index that retention deletes by
  `
  ALTER TABLE audit_log ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
  CREATE INDEX audit_log_by_time ON audit_log (time_ms);
  `,
  // 7: model version stages (MLflow's deprecated but still used None/Staging/Production/Archived);
  // MLflow tracking: experiments (with "Default", id 0, open to every user as in MLflow) and
  // runs with their params, tags, metric history and latest metrics
  `
  CREATE TABLE experiments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    lifecycle_stage TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
  );
  CREATE TABLE experiment_tags (
    experiment_id INTEGER NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (experiment_id, key)
  );
  CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    experiment_id INTEGER NOT NULL REFERENCES experiments (id),
    name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER,
    lifecycle_stage TEXT NOT NULL,
    inputs TEXT NOT NULL DEFAULT '[]'
  );
  CREATE INDEX runs_by_experiment ON runs (experiment_id, start_ms);
  CREATE TABLE run_params (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
  );
  CREATE TABLE run_tags (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
  );
  CREATE TABLE run_metrics (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value REAL NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    step INTEGER NOT NULL
  );
  CREATE INDEX run_metrics_by_key ON run_metrics (run_id, key, step, timestamp_ms);
  CREATE TABLE run_latest_metrics (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value REAL NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    step INTEGER NOT NULL,
    PRIMARY KEY (run_id, key)
  );
  ALTER TABLE model_versions ADD COLUMN stage TEXT NOT NULL DEFAULT 'None';
  INSERT INTO experiments (id, name, lifecycle_stage, created_ms, updated_ms) VALUES (0, 'Default', 'active', 0, 0);
  INSERT INTO permissions (object_type, object_name, grantee, level) VALUES ('experiment', '0', 'group:users', 'CAN_EDIT');
  `,
  // 8: bulk registration's packs are deleted with their last version (artifactPathInUse)
  `
  CREATE INDEX model_versions_by_artifact ON model_versions (artifact_path);
  `,
];
