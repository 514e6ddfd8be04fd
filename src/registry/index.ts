/**
 * The model registry (registered models, versions, aliases, tags, artifacts) and its
 * MLflow-compatible REST API. See registry.ts.
 */
export { Registry, parseSource, checkName, MAX_BULK_MODELS, UPLOADS_PREFIX, type BulkModel, type BulkResult, type RegistryOptions } from './registry.js';
export { registryRoutes, type RegistryApiOptions } from './api.js';
export { parseFilter } from './filter.js';
export { Inspector, type InspectorOptions } from './inspector.js';
export type { Inspection } from './inspect.js';
