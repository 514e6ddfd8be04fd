/**
 * Flavors: HOW a model artifact is inspected, loaded and run. A flavor turns an artifact
 * directory into a `LoadedModel`. `inspect` reads only metadata (pure JS, safe inside the server
 * process at registration); `load` runs inside a replica process only.
 */
import type { OutputValue, Signature, Tensor } from '../tensor/index.js';
import { llmFlavor } from './llm/index.js';
import { onnxFlavor } from './onnx/index.js';

export const FLAVOR_NAMES = ['onnx', 'llm'] as const;
export type FlavorName = (typeof FLAVOR_NAMES)[number];

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
}

export interface Flavor {
  name: FlavorName;
  /** Reads the signature from the artifact without running it. Throws a FerryError saying what is wrong. */
  inspect(dir: string, modelFile: string): Promise<Signature>;
  load(dir: string, opts: LoadOptions): Promise<LoadedModel>;
}

const FLAVORS: Record<FlavorName, Flavor> = { onnx: onnxFlavor, llm: llmFlavor };

export function getFlavor(name: FlavorName): Flavor {
  return FLAVORS[name];
}

export function isFlavorName(value: unknown): value is FlavorName {
  return typeof value === 'string' && (FLAVOR_NAMES as readonly string[]).includes(value);
}
