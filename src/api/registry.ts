/**
 * The registry API's shapes (MLflow's, under `/api/2.0/mlflow/`), with Ferry's additions to a
 * model version: `flavor`, `signature`, `input_example`, `artifact_sha256`, `artifact_size_bytes`.
 */
import type { Tag } from './serving-endpoints.js';

export type ModelVersionStatus = 'PENDING_REGISTRATION' | 'FAILED_REGISTRATION' | 'READY';

/** One tensor of a signature: `shape` -1 for a dimension of any size; absent for a scalar or unknown shape. */
export interface TensorSpecJson {
  name: string;
  dtype: string;
  shape?: number[];
}

export interface SignatureJson {
  inputs: TensorSpecJson[];
  outputs: TensorSpecJson[];
}

export interface ModelVersion {
  name: string;
  version: string;
  creation_timestamp: number;
  last_updated_timestamp: number;
  current_stage?: string;
  description: string;
  source: string;
  run_id: string;
  status: ModelVersionStatus;
  status_message: string;
  tags: Tag[];
  /** The aliases that point to this version. */
  aliases: string[];
  /** Present once the version is READY. */
  flavor?: string;
  signature?: SignatureJson;
  input_example?: unknown;
  artifact_sha256?: string;
  artifact_size_bytes?: number;
}

export interface RegisteredModel {
  name: string;
  creation_timestamp: number;
  last_updated_timestamp: number;
  description: string;
  latest_versions: ModelVersion[];
  tags: Tag[];
  aliases: Array<{ alias: string; version: string }>;
}

/** A page of a search; `next_page_token` is absent on the last page. */
export interface SearchRegisteredModelsResponse {
  registered_models?: RegisteredModel[];
  next_page_token?: string;
}

export interface SearchModelVersionsResponse {
  model_versions?: ModelVersion[];
  next_page_token?: string;
}

/** The answer of a bulk registration (`POST .../model-versions/bulk-create`): per model, in request order. */
export interface BulkCreateResponse {
  registered: number;
  failed: number;
  results: Array<{ name: string; status: 'READY' | 'FAILED_REGISTRATION'; version?: string; error_code?: string; message?: string }>;
}

/**
 * A version's Python environment as its artifact declares it (`GET /api/2.0/mlflow/model-versions/get-environment`,
 * Ferry's): the text of `python_env.yaml` and `requirements.txt`, and whether a `conda.yaml` is there (Ferry
 * does not use conda environments).
 */
export interface VersionEnvironment {
  python_env?: string;
  requirements?: string;
  conda: boolean;
}
