/**
 * The tracking tables' SQL and row mapping, shared by the SQLite and Postgres stores so both run
 * the same statements and return identical records. Statements use `?` placeholders; Postgres
 * numbers them (`numbered`).
 */
import { FerryError, notFound } from '../errors.js';
import type { Row } from './rows.js';
import type { DatasetInput, ExperimentRecord, MetricPoint, RunRecord } from './tracking.js';

export const TRACKING_SQL = {
  experiment: 'SELECT * FROM experiments WHERE id = ?',
  experimentByName: 'SELECT * FROM experiments WHERE name = ?',
  experiments: 'SELECT * FROM experiments ORDER BY id',
  experimentTags: 'SELECT key, value FROM experiment_tags WHERE experiment_id = ? ORDER BY key',
  allExperimentTags: 'SELECT experiment_id, key, value FROM experiment_tags ORDER BY key',
  insertExperiment: 'INSERT INTO experiments (name, lifecycle_stage, created_ms, updated_ms) VALUES (?, ?, ?, ?) RETURNING id',
  renameExperiment: 'UPDATE experiments SET name = ?, updated_ms = ? WHERE id = ?',
  experimentStage: 'UPDATE experiments SET lifecycle_stage = ?, updated_ms = ? WHERE id = ?',
  touchExperiment: 'UPDATE experiments SET updated_ms = ? WHERE id = ?',
  setExperimentTag: 'INSERT INTO experiment_tags (experiment_id, key, value) VALUES (?, ?, ?) ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value',
  insertGrant: 'INSERT INTO permissions (object_type, object_name, grantee, level) VALUES (?, ?, ?, ?)',
  run: 'SELECT * FROM runs WHERE id = ?',
  insertRun: 'INSERT INTO runs (id, experiment_id, name, user_id, status, start_ms, end_ms, lifecycle_stage) VALUES (?, ?, ?, ?, ?, ?, NULL, ?)',
  updateRun: 'UPDATE runs SET status = ?, end_ms = ?, name = ?, lifecycle_stage = ? WHERE id = ?',
  runInputs: 'UPDATE runs SET inputs = ? WHERE id = ?',
  param: 'SELECT value FROM run_params WHERE run_id = ? AND key = ?',
  insertParam: 'INSERT INTO run_params (run_id, key, value) VALUES (?, ?, ?) ON CONFLICT (run_id, key) DO NOTHING',
  setTag: 'INSERT INTO run_tags (run_id, key, value) VALUES (?, ?, ?) ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value',
  deleteTag: 'DELETE FROM run_tags WHERE run_id = ? AND key = ?',
  insertMetric: 'INSERT INTO run_metrics (run_id, key, value, timestamp_ms, step) VALUES (?, ?, ?, ?, ?)',
  // MLflow's latest value: the highest step, then the latest timestamp, then the largest value.
  latestMetric: `INSERT INTO run_latest_metrics (run_id, key, value, timestamp_ms, step) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, timestamp_ms = excluded.timestamp_ms, step = excluded.step
    WHERE (excluded.step, excluded.timestamp_ms, excluded.value) > (run_latest_metrics.step, run_latest_metrics.timestamp_ms, run_latest_metrics.value)`,
  metricHistory: 'SELECT key, value, timestamp_ms, step FROM run_metrics WHERE run_id = ? AND key = ? ORDER BY step, timestamp_ms, value',
  runParams: 'SELECT run_id, key, value FROM run_params WHERE run_id = ? ORDER BY key',
  runTags: 'SELECT run_id, key, value FROM run_tags WHERE run_id = ? ORDER BY key',
  runMetrics: 'SELECT run_id, key, value, timestamp_ms, step FROM run_latest_metrics WHERE run_id = ? ORDER BY key',
} as const;

/** The runs of `n` experiments and their params, tags and latest metrics (ids as `?` × n). */
export function runListSql(n: number): { runs: string; params: string; tags: string; metrics: string } {
  const ids = `(${Array.from({ length: n }, () => '?').join(', ')})`;
  const of = (table: string, cols: string): string => `SELECT ${cols} FROM ${table} x JOIN runs r ON r.id = x.run_id WHERE r.experiment_id IN ${ids} ORDER BY x.key`;
  return {
    runs: `SELECT * FROM runs WHERE experiment_id IN ${ids} ORDER BY start_ms DESC, id`,
    params: of('run_params', 'x.run_id, x.key, x.value'),
    tags: of('run_tags', 'x.run_id, x.key, x.value'),
    metrics: of('run_latest_metrics', 'x.run_id, x.key, x.value, x.timestamp_ms, x.step'),
  };
}

/** `?` placeholders as Postgres' `$1, $2, ...` (the statements above hold no `?` in literals). */
export function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

export function toExperiment(r: Row, tags: Row[]): ExperimentRecord {
  return {
    id: String(r.id), name: String(r.name), lifecycleStage: r.lifecycle_stage === 'deleted' ? 'deleted' : 'active',
    createdMs: Number(r.created_ms), updatedMs: Number(r.updated_ms),
    tags: Object.fromEntries(tags.map((t) => [String(t.key), String(t.value)])),
  };
}

export function toMetric(r: Row): MetricPoint {
  return { key: String(r.key), value: Number(r.value), timestampMs: Number(r.timestamp_ms), step: Number(r.step) };
}

/** A `runs` row with its param, tag and latest-metric rows. */
export function toRun(r: Row, params: Row[], tags: Row[], metrics: Row[]): RunRecord {
  return {
    id: String(r.id), experimentId: String(r.experiment_id), name: String(r.name), userId: String(r.user_id),
    status: r.status as RunRecord['status'], startMs: Number(r.start_ms), endMs: r.end_ms === null ? undefined : Number(r.end_ms),
    lifecycleStage: r.lifecycle_stage === 'deleted' ? 'deleted' : 'active',
    params: Object.fromEntries(params.map((p) => [String(p.key), String(p.value)])),
    tags: Object.fromEntries(tags.map((t) => [String(t.key), String(t.value)])),
    metrics: metrics.map(toMetric),
    inputs: JSON.parse(String(r.inputs)) as DatasetInput[],
  };
}

/** Rows grouped by their `run_id`, for building many runs from three queries. */
export function byRun(rows: Row[]): Map<string, Row[]> {
  const out = new Map<string, Row[]>();
  for (const r of rows) {
    const id = String(r.run_id);
    const list = out.get(id);
    if (list) list.push(r);
    else out.set(id, [r]);
  }
  return out;
}

/** The experiment id as the integer key the tables use; a non-number is simply absent. */
export function experimentKey(id: string): number | undefined {
  return /^\d{1,15}$/.test(id) ? Number(id) : undefined;
}

/** Params must keep their first value (MLflow): a different one refuses the whole batch. */
export function paramConflict(runId: string, key: string, old: string, value: string): FerryError {
  return new FerryError('INVALID_PARAMETER_VALUE',
    `Changing param values is not allowed. Param with key='${key}' was already logged with value='${old}' for run ID='${runId}'. Attempted logging new value '${value}'.`);
}


/** Tag rows grouped by experiment id. */
export function byExperiment(rows: Row[]): Map<string, Row[]> {
  const out = new Map<string, Row[]>();
  for (const r of rows) {
    const id = String(r.experiment_id);
    out.set(id, [...(out.get(id) ?? []), r]);
  }
  return out;
}

export function experimentExists(name: string): FerryError {
  return new FerryError('RESOURCE_ALREADY_EXISTS', `Experiment '${name}' already exists.`);
}

export function inactiveExperiment(e: ExperimentRecord): FerryError {
  return new FerryError('INVALID_PARAMETER_VALUE', `The experiment ${e.id} must be in the 'active' state. Current state is ${e.lifecycleStage}.`);
}

export function missingExperiment(id: string): never {
  throw notFound(`Experiment with id '${id}'`);
}

export function missingRun(id: string): never {
  throw notFound(`Run with id=${id}`);
}
