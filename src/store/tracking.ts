/**
 * MLflow tracking records and the `TrackingStore` interface (experiments, runs, their params,
 * metrics, tags and dataset inputs), implemented next to the registry tables by both metadata
 * stores (`tracking-sqlite.ts`, `tracking-postgres.ts`). Artifact locations are not stored: they
 * follow from the ids (src/tracking/), so a record never points outside Ferry's artifact store.
 */

export type LifecycleStage = 'active' | 'deleted';
export type RunStatus = 'RUNNING' | 'SCHEDULED' | 'FINISHED' | 'FAILED' | 'KILLED';

/** The experiment every store starts with (MLflow's "Default", id "0"). */
export const DEFAULT_EXPERIMENT_ID = '0';

export interface ExperimentRecord {
  /** Decimal string, as MLflow's REST API has it ("0", "1", ...). */
  id: string;
  name: string;
  lifecycleStage: LifecycleStage;
  createdMs: number;
  updatedMs: number;
  tags: Record<string, string>;
}

export interface MetricPoint {
  key: string;
  value: number;
  timestampMs: number;
  step: number;
}

/** One `log-inputs` dataset, as MLflow sends it (stored as given, JSON). */
export interface DatasetInput {
  dataset: Record<string, unknown>;
  tags: Array<{ key: string; value: string }>;
}

export interface RunRecord {
  /** 32 hex characters. */
  id: string;
  experimentId: string;
  name: string;
  userId: string;
  status: RunStatus;
  startMs: number;
  endMs: number | undefined;
  lifecycleStage: LifecycleStage;
  params: Record<string, string>;
  tags: Record<string, string>;
  /** The latest point of each metric (highest step, then timestamp, then value, as MLflow). */
  metrics: MetricPoint[];
  inputs: DatasetInput[];
}

/** What one `log-batch` (or log-metric, log-parameter, set-tag) writes, in one transaction. */
export interface RunData {
  metrics: MetricPoint[];
  params: Array<{ key: string; value: string }>;
  tags: Array<{ key: string; value: string }>;
}

export interface TrackingStore {
  /**
   * Creates an active experiment and returns it (the next id). RESOURCE_ALREADY_EXISTS when the
   * name is taken, also by a deleted experiment (as MLflow). `creator` gets CAN_MANAGE on it.
   */
  createExperiment(e: { name: string; tags: Record<string, string>; creator?: string }, nowMs: number): Promise<ExperimentRecord>;
  getExperiment(id: string): Promise<ExperimentRecord | undefined>;
  getExperimentByName(name: string): Promise<ExperimentRecord | undefined>;
  /** Every experiment, in id order (searches filter them; there are few). */
  listExperiments(): Promise<ExperimentRecord[]>;
  /** Renames and/or moves between lifecycle stages; RESOURCE_DOES_NOT_EXIST, RESOURCE_ALREADY_EXISTS. */
  updateExperiment(id: string, patch: { name?: string; lifecycleStage?: LifecycleStage }, nowMs: number): Promise<ExperimentRecord>;
  setExperimentTag(id: string, key: string, value: string, nowMs: number): Promise<void>;

  /** RESOURCE_DOES_NOT_EXIST when the experiment is missing; INVALID_PARAMETER_VALUE when it is deleted. */
  createRun(r: { id: string; experimentId: string; name: string; userId: string; startMs: number; tags: Record<string, string> }): Promise<RunRecord>;
  getRun(id: string): Promise<RunRecord | undefined>;
  updateRun(id: string, patch: { status?: RunStatus; endMs?: number; name?: string; lifecycleStage?: LifecycleStage }): Promise<RunRecord>;
  /**
   * Writes metrics (appended to their history), params and tags at once. A param logged again
   * with another value is INVALID_PARAMETER_VALUE (params are immutable in MLflow) and nothing of
   * the batch is written.
   */
  logRunData(id: string, data: RunData): Promise<void>;
  /** RESOURCE_DOES_NOT_EXIST when the run or the tag is missing. */
  deleteRunTag(id: string, key: string): Promise<void>;
  logRunInputs(id: string, inputs: DatasetInput[]): Promise<void>;
  /** Every point of one metric, in step then timestamp order. */
  metricHistory(id: string, key: string): Promise<MetricPoint[]>;
  /** The runs of these experiments, newest first (searches filter and order them). */
  listRuns(experimentIds: readonly string[]): Promise<RunRecord[]>;
}
