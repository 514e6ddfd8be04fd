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

/** One dataset a run used (`runs/log-inputs`), as the client sent it. */
export interface DatasetInput {
  /** MLflow's dataset fields (`name`, `digest`, `source_type`, `source`, `schema`, `profile`), kept as sent. */
  dataset: Record<string, unknown>;
  tags: Tag[];
}

export interface Run {
  info: RunInfo;
  data: RunData;
  inputs: { dataset_inputs: DatasetInput[] };
}

/** A page of a search; `next_page_token` is absent on the last page. */
export interface SearchExperimentsResponse {
  experiments: Experiment[];
  next_page_token?: string;
}

export interface SearchRunsResponse {
  runs: Run[];
  next_page_token?: string;
}

/** `POST .../experiments/create`. */
export interface CreateExperimentResponse {
  experiment_id: string;
}

/** `GET .../experiments/get` and `.../experiments/get-by-name`. */
export interface ExperimentResponse {
  experiment: Experiment;
}

/** `POST .../runs/create` and `GET .../runs/get`. */
export interface RunResponse {
  run: Run;
}

/** `POST .../runs/update`. */
export interface UpdateRunResponse {
  run_info: RunInfo;
}

/** `GET .../metrics/get-history`: every logged value of one metric of a run. */
export interface MetricHistoryResponse {
  metrics: Metric[];
}

/** protobuf's JSON writes an int64 as a string; either form is taken. */
export type Int64Input = string | number;

/** The body of `POST .../experiments/create` (`artifact_location` must be absent or empty: Ferry chooses it). */
export interface CreateExperimentRequest {
  name: string;
  artifact_location?: string | undefined;
  tags?: Tag[] | undefined;
}

/** The body of `POST .../runs/create` (`experiment_id` default "0", the Default experiment). */
export interface CreateRunRequest {
  experiment_id?: string | undefined;
  run_name?: string | undefined;
  start_time?: Int64Input | undefined;
  tags?: Tag[] | undefined;
}

/** The body of `POST .../runs/update`. */
export interface UpdateRunRequest {
  run_id: string;
  status?: RunStatusName | undefined;
  end_time?: Int64Input | undefined;
  run_name?: string | undefined;
}

/** One metric value as `runs/log-batch` and `runs/log-metric` take it (`step` default 0; value a number or its decimal string). */
export interface MetricInput {
  key: string;
  value: number | string;
  timestamp: Int64Input;
  step?: Int64Input | undefined;
}

/** The body of `POST .../runs/log-batch`. */
export interface LogBatchRequest {
  run_id: string;
  metrics?: MetricInput[] | undefined;
  params?: Tag[] | undefined;
  tags?: Tag[] | undefined;
}

/** The body of `POST .../runs/log-inputs` (a dataset's `tags` default to none). */
export interface LogInputsRequest {
  run_id: string;
  datasets?: Array<{ dataset: Record<string, unknown>; tags?: Tag[] | undefined }> | undefined;
}
