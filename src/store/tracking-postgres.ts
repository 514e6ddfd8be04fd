/**
 * The tracking tables in the Postgres store (the statements and mapping are tracking-rows.ts').
 * Changes to one run or experiment lock its row first (`FOR UPDATE`), so concurrent batches on
 * one run apply one after the other, as SQLite's single writer does.
 */
import type pg from 'pg';
import { notFound } from '../errors.js';
import type { Row } from './rows.js';
import {
  byExperiment, byRun, experimentExists, experimentKey, inactiveExperiment, missingExperiment, missingRun, numbered, paramConflict, runListSql, toExperiment,
  toMetric, toRun, TRACKING_SQL as SQL,
} from './tracking-rows.js';
import type { DatasetInput, ExperimentRecord, LifecycleStage, MetricPoint, RunData, RunRecord, RunStatus, TrackingStore } from './tracking.js';

type Db = pg.Pool | pg.PoolClient;

async function all(db: Db, sql: string, params: unknown[]): Promise<Row[]> {
  return (await db.query<Row>(numbered(sql), params)).rows;
}

async function one(db: Db, sql: string, params: unknown[]): Promise<Row | undefined> {
  return (await all(db, sql, params))[0];
}

/** Postgres' unique_violation: two servers creating one experiment name at once. */
const UNIQUE_VIOLATION = '23505';

export class PostgresTracking implements TrackingStore {
  /**
   * @param pool the store's pool (reads)
   * @param tx runs a function in a transaction on one pooled client
   */
  constructor(
    private readonly pool: pg.Pool,
    private readonly tx: <T>(fn: (c: pg.PoolClient) => Promise<T>) => Promise<T>,
  ) {}

  async createExperiment(e: { name: string; tags: Record<string, string>; creator?: string }, nowMs: number): Promise<ExperimentRecord> {
    try {
      return await this.tx(async (c) => {
        if (await one(c, SQL.experimentByName, [e.name])) throw experimentExists(e.name);
        const id = String((await one(c, SQL.insertExperiment, [e.name, 'active', nowMs, nowMs]))?.id);
        for (const [k, v] of Object.entries(e.tags)) await all(c, SQL.setExperimentTag, [id, k, v]);
        if (e.creator !== undefined) await all(c, SQL.insertGrant, ['experiment', id, e.creator, 'CAN_MANAGE']);
        return (await loadExperiment(c, id)) as ExperimentRecord;
      });
    } catch (err) {
      if ((err as { code?: unknown }).code === UNIQUE_VIOLATION) throw experimentExists(e.name);
      throw err;
    }
  }

  getExperiment(id: string): Promise<ExperimentRecord | undefined> {
    return loadExperiment(this.pool, id);
  }

  async getExperimentByName(name: string): Promise<ExperimentRecord | undefined> {
    const r = await one(this.pool, SQL.experimentByName, [name]);
    return r === undefined ? undefined : loadExperiment(this.pool, String(r.id));
  }

  async listExperiments(): Promise<ExperimentRecord[]> {
    const tags = byExperiment(await all(this.pool, SQL.allExperimentTags, []));
    return (await all(this.pool, SQL.experiments, [])).map((r) => toExperiment(r, tags.get(String(r.id)) ?? []));
  }

  updateExperiment(id: string, patch: { name?: string; lifecycleStage?: LifecycleStage }, nowMs: number): Promise<ExperimentRecord> {
    return this.tx(async (c) => {
      const e = await requireExperiment(c, id);
      if (patch.name !== undefined && patch.name !== e.name) {
        if (await one(c, SQL.experimentByName, [patch.name])) throw experimentExists(patch.name);
        await all(c, SQL.renameExperiment, [patch.name, nowMs, e.id]);
      }
      if (patch.lifecycleStage !== undefined) await all(c, SQL.experimentStage, [patch.lifecycleStage, nowMs, e.id]);
      return (await loadExperiment(c, id)) as ExperimentRecord;
    });
  }

  async setExperimentTag(id: string, key: string, value: string, nowMs: number): Promise<void> {
    await this.tx(async (c) => {
      const e = await requireExperiment(c, id);
      await all(c, SQL.setExperimentTag, [e.id, key, value]);
      await all(c, SQL.touchExperiment, [nowMs, e.id]);
    });
  }

  createRun(r: { id: string; experimentId: string; name: string; userId: string; startMs: number; tags: Record<string, string> }): Promise<RunRecord> {
    return this.tx(async (c) => {
      const e = await requireExperiment(c, r.experimentId);
      if (e.lifecycleStage !== 'active') throw inactiveExperiment(e);
      await all(c, SQL.insertRun, [r.id, e.id, r.name, r.userId, 'RUNNING', r.startMs, 'active']);
      for (const [k, v] of Object.entries(r.tags)) await all(c, SQL.setTag, [r.id, k, v]);
      return (await loadRun(c, r.id)) as RunRecord;
    });
  }

  getRun(id: string): Promise<RunRecord | undefined> {
    return loadRun(this.pool, id);
  }

  updateRun(id: string, patch: { status?: RunStatus; endMs?: number; name?: string; lifecycleStage?: LifecycleStage }): Promise<RunRecord> {
    return this.tx(async (c) => {
      const r = await requireRun(c, id);
      await all(c, SQL.updateRun, [patch.status ?? r.status, patch.endMs ?? r.endMs ?? null, patch.name ?? r.name, patch.lifecycleStage ?? r.lifecycleStage, id]);
      return (await loadRun(c, id)) as RunRecord;
    });
  }

  async logRunData(id: string, data: RunData): Promise<void> {
    await this.tx(async (c) => {
      await requireRun(c, id);
      for (const p of data.params) {
        const old = await one(c, SQL.param, [id, p.key]);
        if (old !== undefined && String(old.value) !== p.value) throw paramConflict(id, p.key, String(old.value), p.value);
        await all(c, SQL.insertParam, [id, p.key, p.value]);
      }
      for (const t of data.tags) await all(c, SQL.setTag, [id, t.key, t.value]);
      for (const m of data.metrics) {
        await all(c, SQL.insertMetric, [id, m.key, m.value, m.timestampMs, m.step]);
        await all(c, SQL.latestMetric, [id, m.key, m.value, m.timestampMs, m.step]);
      }
    });
  }

  async deleteRunTag(id: string, key: string): Promise<void> {
    await this.tx(async (c) => {
      await requireRun(c, id);
      if (((await c.query(numbered(SQL.deleteTag), [id, key])).rowCount ?? 0) === 0) throw notFound(`Tag '${key}' of run '${id}'`);
    });
  }

  async logRunInputs(id: string, inputs: DatasetInput[]): Promise<void> {
    await this.tx(async (c) => {
      const r = await requireRun(c, id);
      await all(c, SQL.runInputs, [JSON.stringify([...r.inputs, ...inputs]), id]);
    });
  }

  async metricHistory(id: string, key: string): Promise<MetricPoint[]> {
    if (!(await one(this.pool, SQL.run, [id]))) missingRun(id);
    return (await all(this.pool, SQL.metricHistory, [id, key])).map(toMetric);
  }

  async listRuns(experimentIds: readonly string[]): Promise<RunRecord[]> {
    const keys = experimentIds.map(experimentKey).filter((k) => k !== undefined);
    if (keys.length === 0) return [];
    const q = runListSql(keys.length);
    const params = byRun(await all(this.pool, q.params, keys));
    const tags = byRun(await all(this.pool, q.tags, keys));
    const metrics = byRun(await all(this.pool, q.metrics, keys));
    return (await all(this.pool, q.runs, keys)).map((r) => {
      const id = String(r.id);
      return toRun(r, params.get(id) ?? [], tags.get(id) ?? [], metrics.get(id) ?? []);
    });
  }
}

/** The experiment; inside a transaction (`lock`) its row stays locked until the end. */
async function loadExperiment(db: Db, id: string, lock = ''): Promise<ExperimentRecord | undefined> {
  const key = experimentKey(id);
  const r = key === undefined ? undefined : await one(db, `${SQL.experiment} ${lock}`, [key]);
  return r === undefined ? undefined : toExperiment(r, await all(db, SQL.experimentTags, [key]));
}

async function requireExperiment(c: pg.PoolClient, id: string): Promise<ExperimentRecord> {
  return (await loadExperiment(c, id, 'FOR UPDATE')) ?? missingExperiment(id);
}

async function loadRun(db: Db, id: string, lock = ''): Promise<RunRecord | undefined> {
  const r = await one(db, `${SQL.run} ${lock}`, [id]);
  if (r === undefined) return undefined;
  return toRun(r, await all(db, SQL.runParams, [id]), await all(db, SQL.runTags, [id]), await all(db, SQL.runMetrics, [id]));
}

/** The run, its row locked until the transaction ends. */
async function requireRun(c: pg.PoolClient, id: string): Promise<RunRecord> {
  return (await loadRun(c, id, 'FOR UPDATE')) ?? missingRun(id);
}
