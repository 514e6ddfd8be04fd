/** The tracking tables in the SQLite store (the statements and mapping are tracking-rows.ts'). */
import type Database from 'better-sqlite3';
import { notFound } from '../errors.js';
import type { Row } from './rows.js';
import {
  byExperiment, byRun, experimentExists, experimentKey, inactiveExperiment, missingExperiment, missingRun, paramConflict, runListSql, toExperiment, toMetric, toRun, TRACKING_SQL as SQL,
} from './tracking-rows.js';
import type { DatasetInput, ExperimentRecord, LifecycleStage, MetricPoint, RunData, RunRecord, RunStatus, TrackingStore } from './tracking.js';

export class SqliteTracking implements TrackingStore {
  /**
   * @param stmt the store's prepared-statement cache
   * @param tx runs a function in the store's IMMEDIATE transaction
   */
  constructor(
    private readonly stmt: (sql: string) => Database.Statement,
    private readonly tx: <T>(fn: () => T) => T,
  ) {}

  async createExperiment(e: { name: string; tags: Record<string, string>; creator?: string }, nowMs: number): Promise<ExperimentRecord> {
    return this.tx(() => {
      if (this.stmt(SQL.experimentByName).get(e.name)) throw experimentExists(e.name);
      const id = String((this.stmt(SQL.insertExperiment).get(e.name, 'active', nowMs, nowMs) as Row).id);
      for (const [k, v] of Object.entries(e.tags)) this.stmt(SQL.setExperimentTag).run(id, k, v);
      if (e.creator !== undefined) this.stmt(SQL.insertGrant).run('experiment', id, e.creator, 'CAN_MANAGE');
      return this.loadExperiment(id) as ExperimentRecord;
    });
  }

  async getExperiment(id: string): Promise<ExperimentRecord | undefined> {
    return this.loadExperiment(id);
  }

  async getExperimentByName(name: string): Promise<ExperimentRecord | undefined> {
    const r = this.stmt(SQL.experimentByName).get(name) as Row | undefined;
    return r === undefined ? undefined : this.loadExperiment(String(r.id));
  }

  async listExperiments(): Promise<ExperimentRecord[]> {
    const tags = byExperiment(this.stmt(SQL.allExperimentTags).all() as Row[]);
    return (this.stmt(SQL.experiments).all() as Row[]).map((r) => toExperiment(r, tags.get(String(r.id)) ?? []));
  }

  async updateExperiment(id: string, patch: { name?: string; lifecycleStage?: LifecycleStage }, nowMs: number): Promise<ExperimentRecord> {
    return this.tx(() => {
      const e = this.requireExperiment(id);
      if (patch.name !== undefined && patch.name !== e.name) {
        if (this.stmt(SQL.experimentByName).get(patch.name)) throw experimentExists(patch.name);
        this.stmt(SQL.renameExperiment).run(patch.name, nowMs, e.id);
      }
      if (patch.lifecycleStage !== undefined) this.stmt(SQL.experimentStage).run(patch.lifecycleStage, nowMs, e.id);
      return this.loadExperiment(id) as ExperimentRecord;
    });
  }

  async setExperimentTag(id: string, key: string, value: string, nowMs: number): Promise<void> {
    this.tx(() => {
      const e = this.requireExperiment(id);
      this.stmt(SQL.setExperimentTag).run(e.id, key, value);
      this.stmt(SQL.touchExperiment).run(nowMs, e.id);
    });
  }

  async createRun(r: { id: string; experimentId: string; name: string; userId: string; startMs: number; tags: Record<string, string> }): Promise<RunRecord> {
    return this.tx(() => {
      const e = this.requireExperiment(r.experimentId);
      if (e.lifecycleStage !== 'active') throw inactiveExperiment(e);
      this.stmt(SQL.insertRun).run(r.id, e.id, r.name, r.userId, 'RUNNING', r.startMs, 'active');
      for (const [k, v] of Object.entries(r.tags)) this.stmt(SQL.setTag).run(r.id, k, v);
      return this.loadRun(r.id) as RunRecord;
    });
  }

  async getRun(id: string): Promise<RunRecord | undefined> {
    return this.loadRun(id);
  }

  async updateRun(id: string, patch: { status?: RunStatus; endMs?: number; name?: string; lifecycleStage?: LifecycleStage }): Promise<RunRecord> {
    return this.tx(() => {
      const r = this.requireRun(id);
      this.stmt(SQL.updateRun).run(patch.status ?? r.status, patch.endMs ?? r.endMs ?? null, patch.name ?? r.name, patch.lifecycleStage ?? r.lifecycleStage, id);
      return this.loadRun(id) as RunRecord;
    });
  }

  async logRunData(id: string, data: RunData): Promise<void> {
    this.tx(() => {
      this.requireRun(id);
      for (const p of data.params) {
        const old = this.stmt(SQL.param).get(id, p.key) as Row | undefined;
        if (old !== undefined && String(old.value) !== p.value) throw paramConflict(id, p.key, String(old.value), p.value);
        this.stmt(SQL.insertParam).run(id, p.key, p.value);
      }
      for (const t of data.tags) this.stmt(SQL.setTag).run(id, t.key, t.value);
      for (const m of data.metrics) {
        this.stmt(SQL.insertMetric).run(id, m.key, m.value, m.timestampMs, m.step);
        this.stmt(SQL.latestMetric).run(id, m.key, m.value, m.timestampMs, m.step);
      }
    });
  }

  async deleteRunTag(id: string, key: string): Promise<void> {
    this.tx(() => {
      this.requireRun(id);
      if (this.stmt(SQL.deleteTag).run(id, key).changes === 0) throw notFound(`Tag '${key}' of run '${id}'`);
    });
  }

  async logRunInputs(id: string, inputs: DatasetInput[]): Promise<void> {
    this.tx(() => {
      const r = this.requireRun(id);
      this.stmt(SQL.runInputs).run(JSON.stringify([...r.inputs, ...inputs]), id);
    });
  }

  async metricHistory(id: string, key: string): Promise<MetricPoint[]> {
    this.requireRun(id);
    return (this.stmt(SQL.metricHistory).all(id, key) as Row[]).map(toMetric);
  }

  async listRuns(experimentIds: readonly string[]): Promise<RunRecord[]> {
    const keys = experimentIds.map(experimentKey).filter((k) => k !== undefined);
    if (keys.length === 0) return [];
    const q = runListSql(keys.length);
    const params = byRun(this.stmt(q.params).all(...keys) as Row[]);
    const tags = byRun(this.stmt(q.tags).all(...keys) as Row[]);
    const metrics = byRun(this.stmt(q.metrics).all(...keys) as Row[]);
    return (this.stmt(q.runs).all(...keys) as Row[]).map((r) => {
      const id = String(r.id);
      return toRun(r, params.get(id) ?? [], tags.get(id) ?? [], metrics.get(id) ?? []);
    });
  }

  private loadExperiment(id: string): ExperimentRecord | undefined {
    const key = experimentKey(id);
    const r = key === undefined ? undefined : this.stmt(SQL.experiment).get(key) as Row | undefined;
    return r === undefined ? undefined : toExperiment(r, this.stmt(SQL.experimentTags).all(key) as Row[]);
  }

  private requireExperiment(id: string): ExperimentRecord {
    return this.loadExperiment(id) ?? missingExperiment(id);
  }

  private loadRun(id: string): RunRecord | undefined {
    const r = this.stmt(SQL.run).get(id) as Row | undefined;
    if (r === undefined) return undefined;
    return toRun(r, this.stmt(SQL.runParams).all(id) as Row[], this.stmt(SQL.runTags).all(id) as Row[], this.stmt(SQL.runMetrics).all(id) as Row[]);
  }

  private requireRun(id: string): RunRecord {
    return this.loadRun(id) ?? missingRun(id);
  }
}
