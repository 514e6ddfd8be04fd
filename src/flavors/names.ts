/** The flavor and workload type names (a leaf module: importing a name loads no flavor). */
export const FLAVOR_NAMES = ['onnx', 'transformers', 'js', 'llm', 'python', 'xgboost'] as const;
export type FlavorName = (typeof FLAVOR_NAMES)[number];

/** Databricks workload types; any GPU_* type asks the flavor for its GPU execution path. */
export const WORKLOAD_TYPES = ['CPU', 'GPU_SMALL', 'GPU_MEDIUM', 'GPU_LARGE'] as const;
export type WorkloadType = (typeof WORKLOAD_TYPES)[number];

export function isFlavorName(value: unknown): value is FlavorName {
  return typeof value === 'string' && (FLAVOR_NAMES as readonly string[]).includes(value);
}
