/**
 * The replica side of model families, a second public entry of this folder: what a family replica
 * loads (the model cache, member loading with its compact evaluators, the name rules) and nothing
 * of the control side (./family.ts resolves members from the metadata store). A replica imports
 * this, never ./index.ts, so it loads no store code.
 */
export { ModelCache, tooLarge, type Loaded, type ModelCacheOptions, type ModelCacheStats } from './cache.js';
export { loadFamilyModel, type FamilyModel } from './loader.js';
export { MODEL_NAME_PATTERN, VERSION_PATTERN } from './names.js';
export { decodeMemberArtifact, type MemberArtifact } from './member.js';
