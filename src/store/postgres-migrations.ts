/**
 * Versioned schema migrations for the Postgres store, the same schema as the SQLite one
 * (migrations.ts) in Postgres SQL. Entry i upgrades schema version i to i + 1 (tracked in the
 * `ferry_schema_version` table). Append only: never edit a migration that has shipped.
 *
 * Timestamps are BIGINT milliseconds; JSON is TEXT, as in SQLite (see rows.ts). Names that lists
 * are ordered by use the "C" collation: byte order, as SQLite sorts, whatever the database's locale
 * (under en_US, 'alpha' would sort before 'Alphonse').
 */
export const PG_MIGRATIONS: readonly string[] = [
  // 1: registry, tokens, serving endpoints, identities, permissions and the audit log
  `
  CREATE TABLE registered_models (
    name TEXT COLLATE "C" PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    next_version INTEGER NOT NULL DEFAULT 1
  );
  CREATE TABLE registered_model_tags (
    name TEXT COLLATE "C" NOT NULL REFERENCES registered_models (name) ON DELETE CASCADE,
    key TEXT COLLATE "C" NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, key)
  );
  CREATE TABLE model_versions (
    name TEXT COLLATE "C" NOT NULL REFERENCES registered_models (name) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
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
    size_bytes BIGINT,
    PRIMARY KEY (name, version)
  );
  CREATE INDEX model_versions_pending ON model_versions (status) WHERE status = 'PENDING_REGISTRATION';
  CREATE TABLE model_version_tags (
    name TEXT COLLATE "C" NOT NULL,
    version INTEGER NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, version, key),
    FOREIGN KEY (name, version) REFERENCES model_versions (name, version) ON DELETE CASCADE
  );
  CREATE TABLE model_aliases (
    name TEXT COLLATE "C" NOT NULL REFERENCES registered_models (name) ON DELETE CASCADE,
    alias TEXT COLLATE "C" NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, alias),
    FOREIGN KEY (name, version) REFERENCES model_versions (name, version) ON DELETE CASCADE
  );
  CREATE TABLE tokens (
    id TEXT COLLATE "C" PRIMARY KEY,
    principal TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT,
    description TEXT NOT NULL DEFAULT ''
  );
  CREATE INDEX tokens_by_principal ON tokens (principal);
  CREATE TABLE endpoints (
    name TEXT COLLATE "C" PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    creator TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '{}',
    config TEXT,
    pending_config TEXT,
    config_update TEXT NOT NULL,
    update_message TEXT NOT NULL DEFAULT '',
    ai_gateway TEXT NOT NULL DEFAULT '{}'
  );
  CREATE TABLE principals (
    name TEXT COLLATE "C" PRIMARY KEY,
    kind TEXT NOT NULL,
    admin BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL DEFAULT ''
  );
  CREATE TABLE permissions (
    object_type TEXT NOT NULL,
    object_name TEXT COLLATE "C" NOT NULL,
    grantee TEXT COLLATE "C" NOT NULL,
    level TEXT NOT NULL,
    PRIMARY KEY (object_type, object_name, grantee)
  );
  CREATE INDEX permissions_by_grantee ON permissions (grantee, object_type);
  CREATE TABLE audit_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time_ms BIGINT NOT NULL,
    principal TEXT NOT NULL,
    source_address TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    action TEXT NOT NULL,
    status INTEGER NOT NULL,
    error_code TEXT NOT NULL DEFAULT ''
  );
  `,
  // 2: inference tables (one row per logged call; see inference-table.ts), beside the metadata
  `
  CREATE TABLE inference_rows (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    client_request_id TEXT,
    timestamp_ms BIGINT NOT NULL,
    status_code INTEGER NOT NULL,
    error_code TEXT,
    execution_time_ms DOUBLE PRECISION NOT NULL,
    served_entity TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    principal TEXT NOT NULL,
    request TEXT,
    response TEXT,
    sampling_fraction DOUBLE PRECISION NOT NULL
  );
  CREATE INDEX inference_rows_endpoint_time ON inference_rows (endpoint, endpoint_id, timestamp_ms, seq);
  CREATE INDEX inference_rows_time ON inference_rows (timestamp_ms);
  `,
  // 3: each server's gateway load (see migrations.ts 5)
  `
  CREATE TABLE gateway_load (
    server TEXT COLLATE "C" PRIMARY KEY,
    reported_ms BIGINT NOT NULL,
    entities TEXT NOT NULL
  );
  `,
  // 4: aggregated audit rows and the retention index (see migrations.ts 6)
  `
  ALTER TABLE audit_log ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
  CREATE INDEX audit_log_by_time ON audit_log (time_ms);
  `,
  // 5: model version stages and MLflow tracking (see migrations.ts 7)
  `
  CREATE TABLE experiments (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY (START WITH 1) PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    lifecycle_stage TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
  );
  CREATE TABLE experiment_tags (
    experiment_id BIGINT NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    key TEXT COLLATE "C" NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (experiment_id, key)
  );
  CREATE TABLE runs (
    id TEXT COLLATE "C" PRIMARY KEY,
    experiment_id BIGINT NOT NULL REFERENCES experiments (id),
    name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT,
    lifecycle_stage TEXT NOT NULL,
    inputs TEXT NOT NULL DEFAULT '[]'
  );
  CREATE INDEX runs_by_experiment ON runs (experiment_id, start_ms);
  CREATE TABLE run_params (
    run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key TEXT COLLATE "C" NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
  );
  CREATE TABLE run_tags (
    run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key TEXT COLLATE "C" NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
  );
  CREATE TABLE run_metrics (
    run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key TEXT COLLATE "C" NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    timestamp_ms BIGINT NOT NULL,
    step BIGINT NOT NULL
  );
  CREATE INDEX run_metrics_by_key ON run_metrics (run_id, key, step, timestamp_ms);
  CREATE TABLE run_latest_metrics (
    run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key TEXT COLLATE "C" NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    timestamp_ms BIGINT NOT NULL,
    step BIGINT NOT NULL,
    PRIMARY KEY (run_id, key)
  );
  ALTER TABLE model_versions ADD COLUMN stage TEXT NOT NULL DEFAULT 'None';
  INSERT INTO experiments (id, name, lifecycle_stage, created_ms, updated_ms) VALUES (0, 'Default', 'active', 0, 0);
  INSERT INTO permissions (object_type, object_name, grantee, level) VALUES ('experiment', '0', 'group:users', 'CAN_EDIT');
  `,
  // 6: bulk registration's packs are deleted with their last version (see migrations.ts 8)
  `
  CREATE INDEX model_versions_by_artifact ON model_versions (artifact_path text_pattern_ops);
  `,
];
