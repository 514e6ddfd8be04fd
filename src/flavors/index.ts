/**
 * Flavors: HOW a model artifact is inspected, loaded and run. A flavor turns an artifact
 * directory into a `LoadedModel`. `inspect` reads only metadata (pure JS, run at registration in
 * the inspector process, through `inspection.ts`); `load` runs inside a replica process only.
 */
import type { OutputValue, Signature, Tensor } from '../tensor/index.js';
import { jsFlavor } from './js/index.js';
import { llmFlavor } from './llm/index.js';
import { onnxFlavor } from './onnx/index.js';
export { loadModelProto } from './onnx/index.js';
import { transformersFlavor } from './transformers/index.js';

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

const FLAVORS: Record<FlavorName, Flavor> = { onnx: onnxFlavor, transformers: transformersFlavor, js: jsFlavor, llm: llmFlavor };

export function getFlavor(name: FlavorName): Flavor {
  return FLAVORS[name];
}
