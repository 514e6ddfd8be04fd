/**
 * Flavors: HOW a model artifact is inspected, loaded and run. A flavor turns an artifact
 * directory into a `LoadedModel`. `inspect` reads only metadata (pure JS, run at registration in
 * the inspector process, through `inspection.ts`); `load` runs inside a replica process only.
 *
 * Each flavor is imported on first use (`getFlavor`), never by this module: a js replica runs
 * without `--allow-addons`, so it must never load onnxruntime-node (a native addon, which the
 * onnx flavor imports), and a replica loads only the flavor it serves.
 */
import type { ModelProto } from './onnx/model-proto.js';
import type { Flavor, LoadedModel, LoadOptions } from './types.js';

export { FLAVOR_CAPABILITIES, type FlavorCapabilities } from './capabilities.js';
export { MANIFEST_FILE, insideArtifact, isJsonObject, readManifest } from './manifest.js';
export { TRANSFORMERS_TASKS, type TransformersTask } from './transformers/index.js';
export { decodeModel, int64ToNumber, int64ToString, readModel, signatureOf, type ModelProto } from './onnx/model-proto.js';
export { zipRows } from './onnx/zipmap.js';

import type { FlavorName } from './names.js';
export { FLAVOR_NAMES, isFlavorName, WORKLOAD_TYPES, type FlavorName, type WorkloadType } from './names.js';
export type { Flavor, LoadedModel, LoadOptions } from './types.js';

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
