/**
 * The model registry (registered models, versions, aliases, tags, artifacts) and its
 * MLflow-compatible REST API. See registry.ts.
 */
export {
  Registry, parseSource, checkName, experimentArtifactUri, runArtifactUri, versionDownloadUri, MAX_BULK_MODELS, PROXY_EXPERIMENTS, PROXY_MODELS, UPLOADS_PREFIX, type BulkModel, type BulkResult, type RegistryOptions,
} from './registry.js';
export { registryRoutes, requestInput, requestParams, type RegistryApiOptions } from './api.js';
export { parseFilter, splitAnd } from './filter.js';
export { ALIAS_SET_CHANNEL, type AliasSetEvent } from './events.js';
export { Inspector, type InspectorOptions } from './inspector.js';
export type { Inspection } from './inspect.js';
