/**
 * Flavors: HOW a model artifact is inspected, loaded and run. A flavor turns an artifact
 * directory into a `LoadedModel`. `inspect` reads only metadata (pure JS, run at registration in
 * the inspector process, through `inspection.ts`); `load` runs inside a replica process only.
 *
 * Each flavor is imported on first use (`getFlavor`), never by this module: a js replica runs
 * without `--allow-addons`, so it must never load onnxruntime-node (a native addon, which the
 * onnx flavor imports), and a replica loads only the flavor it serves.
 */
import type { OutputValue, Signature, Tensor } from '../tensor/index.js';
import type { FlavorCapabilities } from './capabilities.js';
import type { ModelProto } from './onnx/model-proto.js';

export { FLAVOR_CAPABILITIES, type FlavorCapabilities } from './capabilities.js';
export { MANIFEST_FILE, insideArtifact, isJsonObject, readManifest } from './manifest.js';
export { TRANSFORMERS_TASKS, type TransformersTask } from './transformers/index.js';
export { decodeModel, int64ToNumber, int64ToString, readModel, signatureOf, type ModelProto } from './onnx/model-proto.js';
export { zipRows } from './onnx/zipmap.js';

import type { FlavorName } from './names.js';
export { FLAVOR_NAMES, isFlavorName, type FlavorName } from './names.js';

/** Databricks workload types; any GPU_* type asks the flavor for its GPU execution path. */
export const WORKLOAD_TYPES = ['CPU', 'GPU_SMALL', 'GPU_MEDIUM', 'GPU_LARGE'] as const;
export type WorkloadType = (typeof WORKLOAD_TYPES)[number];

export interface LoadOptions {
  /** The model file inside the artifact directory, relative to it (e.g. "model.onnx"). */
  modelFile: string;
  workloadType: WorkloadType;
  /** Threads for one model call; 1 suits one replica per core (the local default). */
  intraOpThreads: number;
  /**
   * The replica's memory limit (bytes). A flavor that runs the model in a process of its own bounds
   * that process by it (the Python worker's address space: RLIMIT_AS), so that one oversized call
   * fails alone instead of the runtime's watchdog killing the whole replica (it sums the replica's
   * process tree). Example: 2 GiB → a Python allocation past 2 GiB raises MemoryError (a
   * MODEL_ERROR), the replica keeps serving. Not for GPU_* workload types: CUDA reserves far more
   * address space than it uses, so only the watchdog bounds a GPU worker.
   */
  memoryLimitBytes?: number;
  /** The Python interpreter a python-flavor model runs in (the server's `python` setting); default `python3` on PATH. */
  pythonExecutable?: string;
  /**
   * The user a flavor that starts processes for the model's code (the Python worker) starts them
   * as, from their first instruction; the replica's own `user` when it drops privileges.
   */
  processUser?: { uid: number; gid: number };
}

export interface LoadedModel {
  signature: Signature;
  /**
   * Runs the model on validated inputs (every signature input present with a matching dtype and
   * shape). Rejects with a FerryError (MODEL_ERROR) when the runtime fails.
   */
  predict(inputs: Record<string, Tensor>, params?: Record<string, unknown>): Promise<Record<string, OutputValue>>;
  close(): Promise<void>;
  /**
   * True when `predict` never holds the calling thread (the flavor runs the model on a thread of
   * its own), so the replica calls it from its main thread and does not time a synthetic batch.
   */
  readonly ownThread?: boolean;
}

export interface Flavor {
  name: FlavorName;
  /** What the replica process needs to run this flavor (./capabilities.ts). */
  capabilities: FlavorCapabilities;
  /** The model file, relative to the artifact directory, when the artifact names none (ferry.json `main`). */
  defaultModelFile: string;
  /** Reads the signature from the artifact without running it. Throws a FerryError saying what is wrong. */
  inspect(dir: string, modelFile: string): Promise<Signature>;
  /**
   * A scoring request (MLflow JSON) that fits `signature`, for an artifact that brings no input
   * example; absent when the flavor cannot derive one.
   */
  inputExample?(dir: string, modelFile: string, signature: Signature): Promise<unknown>;
  load(dir: string, opts: LoadOptions): Promise<LoadedModel>;
}

const FLAVORS: Record<FlavorName, () => Promise<Flavor>> = {
  onnx: async () => (await import('./onnx/index.js')).onnxFlavor,
  transformers: async () => (await import('./transformers/index.js')).transformersFlavor,
  js: async () => (await import('./js/index.js')).jsFlavor,
  llm: async () => (await import('./llm/index.js')).llmFlavor,
  python: async () => (await import('./python/index.js')).pythonFlavor,
  xgboost: async () => (await import('./xgboost/index.js')).xgboostFlavor,
};

/** The flavor `name`, its module imported on first use (see the file comment). */
export function getFlavor(name: FlavorName): Promise<Flavor> {
  return FLAVORS[name]();
}

/** An onnxruntime session for a decoded ONNX model (the onnx flavor, imported on first use). */
export async function loadModelProto(model: ModelProto, dir: string | undefined, opts: LoadOptions): Promise<LoadedModel> {
  return (await import('./onnx/index.js')).loadModelProto(model, dir, opts);
}
