/** The flavor names (a leaf module: importing a name loads no flavor). */
export const FLAVOR_NAMES = ['onnx', 'transformers', 'js', 'llm', 'python', 'xgboost'] as const;
export type FlavorName = (typeof FLAVOR_NAMES)[number];

export function isFlavorName(value: unknown): value is FlavorName {
  return typeof value === 'string' && (FLAVOR_NAMES as readonly string[]).includes(value);
}
