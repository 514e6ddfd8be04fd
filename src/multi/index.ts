/**
 * Many tiny models behind one endpoint (docs/multi-model.md): the replica-side model cache
 * (byte budget, LRU, one load per miss), compact evaluators for linear and tree-ensemble ONNX-ML
 * models, and loading a family member with a session fallback.
 */
export { ModelCache, tooLarge, type Loaded, type ModelCacheOptions, type ModelCacheStats } from './cache.js';
export { COMPACT_OVERHEAD_BYTES, compileCompact, type CompactModel } from './compact.js';
export { compileXgboost, isXgboostFile, parseXgboost, xgboostSignature, type XgbModel } from './xgboost.js';
export { loadFamilyModel, SESSION_BYTES_ESTIMATE, type FamilyModel } from './loader.js';
export { FamilyResolver, MODEL_HEADER, MODEL_NAME_PATTERN, VERSION_PATTERN, parseModelRef, RESOLVE_TTL_MS, type FamilyConfig, type FamilyMember, type ModelRef } from './family.js';
export { decodeMemberArtifact, encodeMemberArtifact, type MemberArtifact } from './member.js';
