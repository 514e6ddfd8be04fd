/**
 * The MLflow tracking API's shapes (`/api/2.0/mlflow/experiments/*`, `/api/2.0/mlflow/runs/*`), as
 * MLflow's REST API 2.0 declares them.
 */
import type { Tag } from './serving-endpoints.js';

export type LifecycleStageName = 'active' | 'deleted';
export type RunStatusName = 'RUNNING' | 'SCHEDULED' | 'FINISHED' | 'FAILED' | 'KILLED';

export interface Experiment {
  experiment_id: string;
  name: string;
  /** Where the experiment's runs keep their artifacts (`mlflow-artifacts:/_experiments/<id>`). */
  artifact_location: string;
  lifecycle_stage: LifecycleStageName;
  creation_time: number;
  last_update_time: number;
  tags: Tag[];
}

export interface Metric {
  key: string;
  value: number;
  timestamp: number;
  step: number;
}

export interface RunInfo {
  run_id: string;
  /** The same as `run_id` (MLflow's older name). */
  run_uuid: string;
  run_name: string;
  experiment_id: string;
  user_id: string;
  status: RunStatusName;
  start_time: number;
  end_time?: number;
  /** `mlflow-artifacts:/_experiments/<id>/<run>/artifacts`, resolved by the client against the tracking URI. */
  artifact_uri: string;
  lifecycle_stage: LifecycleStageName;
}

export interface RunData {
  /** The latest value of each metric. */
  metrics: Metric[];
  params: Tag[];
  tags: Tag[];
}

export interface Run {
  info: RunInfo;
  data: RunData;
  inputs: { dataset_inputs: unknown[] };
}
