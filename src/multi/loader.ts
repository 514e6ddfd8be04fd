/**
 * Loading one member of a family in a replica: an XGBoost model file (the xgboost flavor's `.ubj`,
 * `.xgb` or `.json`) gets the XGBoost compact evaluator (./xgboost.ts); an ONNX file is parsed with
 * onnx-proto (pure JS), linear and tree-ensemble graphs get a compact evaluator (./compact.ts),
 * anything else an onnxruntime session through the onnx flavor, counted and charged
 * `SESSION_BYTES_ESTIMATE`.
 *
 * Why sessions are allowed at all, and what they are charged (numbers measured on this machine
 * with 1000 generated tiny models, onnxruntime-node 1.x, glibc malloc): one live session costs
 * ~103 KB of RSS; creating 1000 and releasing them all left ~98 MB with the process (freed pages
 * stay with the allocator). That is a high-water mark, not a per-session leak: a fresh process
 * churning 5000 sessions with at most 100 alive grew RSS by 36.8 MB after 1000 creates and
 * plateaued at 40.9 MB from 3000 on, i.e. ~410 KB per session slot alive at the peak. So each
 * session is charged SESSION_BYTES_ESTIMATE (400 KiB, the churn cost, not the 103 KB steady
 * cost), which keeps the budget a bound on RSS under churn; no replica recycling is needed.
 * Linear and tree families never pay this: compact models are ~2.5–3.5 KB each.
 */
import { FerryError } from '../errors.js';
import { decodeModel, loadModelProto, type LoadedModel, type LoadOptions } from '../flavors/index.js';
import type { Loaded } from './cache.js';
import { compileCompact } from './compact.js';
import { compileXgboost, isXgboostFile } from './xgboost.js';

/** Bytes charged for one onnxruntime session (plus its file size): the measured churn cost, above. */
export const SESSION_BYTES_ESTIMATE = 400 * 1024;

/** A loaded family member and which path runs it. */
export interface FamilyModel {
  model: LoadedModel;
  /** "compact" or "session". */
  path: 'compact' | 'session';
}

/**
 * Loads a member from the bytes of its model file (`loadOptions.modelFile` names it in errors;
 * family members are single-file ONNX or XGBoost models, told apart by the file's extension, which
 * registration chose). `sessionFallback` false refuses (MODEL_ERROR naming the reason) an ONNX
 * model the compact path cannot run.
 */
export async function loadFamilyModel(bytes: Uint8Array, loadOptions: LoadOptions, sessionFallback: boolean): Promise<Loaded<FamilyModel>> {
  if (isXgboostFile(loadOptions.modelFile)) {
    const xgb = compileXgboost(bytes, loadOptions.modelFile);
    return { model: { model: xgb, path: 'compact' }, sizeBytes: xgb.sizeBytes };
  }
  const model = decodeModel(bytes, loadOptions.modelFile);
  const compact = compileCompact(model, loadOptions.modelFile);
  if (typeof compact !== 'string') return { model: { model: compact, path: 'compact' }, sizeBytes: compact.sizeBytes };
  if (!sessionFallback) {
    throw new FerryError('MODEL_ERROR', `Model '${loadOptions.modelFile}' needs an onnxruntime session (${compact}), and this family serves compact models only.`);
  }
  const session = await loadModelProto(model, undefined, loadOptions);
  return { model: { model: session, path: 'session' }, sizeBytes: SESSION_BYTES_ESTIMATE + bytes.length };
}
