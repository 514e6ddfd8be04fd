/**
 * What registration needs of each flavor: its default model file, `inspect` and `inputExample`.
 * The inspector process (src/registry/inspector.ts) imports this module, not the flavors' index:
 * the onnx flavor's `load` needs onnxruntime-node, a native addon, which the inspector neither
 * needs nor may load (it runs without --allow-addons). Everything reachable from here is pure JS.
 */
import type { Flavor } from './types.js';
import { jsFlavor } from './js/index.js';
import { llmFlavor } from './llm/index.js';
import type { FlavorName } from './names.js';
import { inspectOnnxBytes, onnxInspection } from './onnx/model-proto.js';
import { pythonInspection } from './python/inspection.js';
import { transformersFlavor } from './transformers/index.js';
import { inspectXgboostBytes, xgboostFlavor } from './xgboost/index.js';

export { FLAVOR_NAMES, isFlavorName, type FlavorName } from './names.js';
export { MANIFEST_FILE, insideArtifact, readManifest, readMetadataText } from './manifest.js';
export { mlflowXgboostFile } from './python/mlmodel.js';
export { inspectOnnxBytes, inspectXgboostBytes };

export type FlavorInspection = Pick<Flavor, 'name' | 'defaultModelFile' | 'inspect' | 'inputExample'>;

const INSPECTIONS: Record<FlavorName, FlavorInspection> = { onnx: onnxInspection, transformers: transformersFlavor, js: jsFlavor, llm: llmFlavor, python: pythonInspection, xgboost: xgboostFlavor };

export function flavorInspection(name: FlavorName): FlavorInspection {
  return INSPECTIONS[name];
}
