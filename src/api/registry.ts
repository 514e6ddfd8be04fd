/**
 * The registry API's shapes (MLflow's, under `/api/2.0/mlflow/`), with Ferry's additions to a
 * model version: `flavor`, `signature`, `input_example`, `artifact_sha256`, `artifact_size_bytes`.
 */
import type { Tag } from './serving-endpoints.js';

export type ModelVersionStatus = 'PENDING_REGISTRATION' | 'FAILED_REGISTRATION' | 'READY';

/** One tensor of a signature: `shape` -1 for a dimension of any size; absent (or undefined) for a scalar or unknown shape. */
export interface TensorSpecJson {
  name: string;
  dtype: string;
  shape?: number[] | undefined;
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

/** The body of `POST .../registered-models/create` (an undefined field counts as absent). */
export interface CreateRegisteredModelRequest {
  name: string;
  description?: string | undefined;
  tags?: Tag[] | undefined;
}

/**
 * The body of `POST .../model-versions/create`. `source`: `mlflow-artifacts:/<path>` (an upload of
 * the caller's), `runs:/<run_id>/<path>`, or (admins) a path on the server.
 */
export interface CreateModelVersionRequest {
  name: string;
  source: string;
  run_id?: string | undefined;
  description?: string | undefined;
  tags?: Tag[] | undefined;
}

/** The body of `POST .../registered-models/alias`: the version as a number or its decimal string. */
export interface SetAliasRequest {
  name: string;
  alias: string;
  version: string | number;
}

/** The answer of the calls about one registered model (create, get, update, rename). */
export interface RegisteredModelResponse {
  registered_model: RegisteredModel;
}

/** The answer of the calls about one model version (create, get, update, alias, transition-stage). */
export interface ModelVersionResponse {
  model_version: ModelVersion;
}

/** `POST .../registered-models/get-latest-versions`: the latest version in each stage asked for, by version. */
export interface LatestVersionsResponse {
  model_versions: ModelVersion[];
}

/** `GET .../model-versions/get-download-uri`: where the version's files are read through the artifact proxy. */
export interface DownloadUriResponse {
  artifact_uri: string;
}

/** One entry of `GET /api/2.0/mlflow-artifacts/artifacts?path=`: its path relative to the listed directory. */
export interface ArtifactFileInfo {
  path: string;
  is_dir: boolean;
  /** Absent for a directory. */
  file_size?: number;
}

export interface ListArtifactsResponse {
  files: ArtifactFileInfo[];
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

/**
 * The body of a bulk registration (`POST .../model-versions/bulk-create`, Ferry's): single-file
 * models, each stored as `file` (default `model.onnx`) with the base64 content.
 */
export interface BulkCreateRequest {
  models: Array<{ name: string; file?: string | undefined; content_base64: string }>;
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
